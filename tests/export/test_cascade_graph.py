"""The two-stage fused graph: its in-graph fissure crop is the training crop rule, it composes the
two one-stage graphs exactly, and it exports to ONNX with the same answer under ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctd_export.cascade_graph import CascadeFusedModel, PairAlignedCrop
from ctd_runtime import geometry
from ctd_train.data.dataset import crop_box
from tests.export._tiny_fused import INPUT_SIZE, fused_model, sample_set, trained_predictor


def test_pair_aligned_crop_is_the_training_crop_rule():
    rng = np.random.default_rng(0)
    rule = PairAlignedCrop((1, 0), crop_scale=2.5, input_size=INPUT_SIZE)
    for _ in range(20):
        pts = rng.uniform(0, 500, size=(4, 2))
        center, side, rotation = crop_box("pfl", pts, 0.25, 2.5, pfl_pair=(1, 0))
        expected = geometry.crop_affine(center, side, INPUT_SIZE, rotation)
        got = rule(torch.tensor(pts[None], dtype=torch.float64))[0].numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def _cascade() -> CascadeFusedModel:
    face = fused_model(trained_predictor(0), "dark")
    eye = fused_model(trained_predictor(1), "dark")
    return CascadeFusedModel(face, eye, pairs=[(0, 0), (1, 1)], pfl_pair=(0, 1), crop_scale=2.0).eval()


def test_cascade_is_the_composition_of_its_stages():
    model = _cascade()
    image, crop = sample_set(1, seed=3)[0][0]
    image, crop = torch.from_numpy(image), torch.from_numpy(crop)
    with torch.no_grad():
        lm, sc = model(image, crop)
        lm1, sc1 = model.face(image, crop)
        lm2, sc2 = model.eye(image, model.crop_rule(lm1))
    assert torch.equal(lm[:, 2], lm1[:, 2]) and torch.equal(sc[:, 2], sc1[:, 2])
    assert torch.equal(lm[:, :2], lm2[:, :2]) and torch.equal(sc[:, :2], sc2[:, :2])
    with pytest.raises(ValueError, match="outside the schemas"):
        CascadeFusedModel(model.face, model.eye, [(5, 0)], (0, 1), 2.0)


def test_cascade_exports_and_runs_under_onnx_runtime(tmp_path):
    from ctd_runtime.backends.ort_session import open_session

    model = _cascade()
    samples, _ = sample_set(4, seed=5)
    image, crop = (torch.from_numpy(a) for a in samples[0])
    path = tmp_path / "cascade.onnx"
    torch.onnx.export(model, (image, crop), str(path), dynamo=False, opset_version=17,
                      input_names=["image", "crop"], output_names=["landmarks", "scores"],
                      dynamic_axes={"image": {0: "N", 1: "H", 2: "W"}, "crop": {0: "N"}})
    session = open_session(path, threads=1)
    for img, a in samples:
        got = session.run(None, {"image": img, "crop": a})
        with torch.no_grad():
            ref = model(torch.from_numpy(img), torch.from_numpy(a))
        assert np.abs(got[0] - ref[0].numpy()).max() < 1e-2   # px; float32 graph vs eager
        np.testing.assert_allclose(got[1], ref[1].numpy(), rtol=1e-4)   # heatmap maxima, float32
