"""The ONNX Runtime backend: the protocol (open / run / close / metadata, context manager), input
checks, rejection of raw graphs and foreign files (no torch in ctd_runtime: test_no_torch.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from ctd_export.metadata import metadata_for_run, set_metadata
from ctd_runtime.backends import BaseBackend, create_backend
from ctd_runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from ctd_runtime.errors import CtdError
from tests.export.test_fused import K, export_fused, fake_run, fused, random_affine, random_image, reference


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(run, path) of a fused quarter-decode model with metadata, and of a raw one."""
    from ctd_export.onnx_export import export_onnx_model

    tmp = tmp_path_factory.mktemp("ort")
    run = fake_run("quarter")
    path = export_fused(fused(run, "quarter"), tmp / "fused.onnx")
    model = set_metadata(onnx.load(str(path)), metadata_for_run(run, "quarter"))
    onnx.save(model, str(path))
    raw = export_onnx_model(run.predictor, "raw", K, 64, 16)
    raw_path = tmp / "raw.onnx"
    onnx.save(set_metadata(raw, metadata_for_run(run, "quarter", graph="raw")), str(raw_path))
    plain = tmp / "plain.onnx"  # the same graph without ctd metadata
    del model.metadata_props[:]
    onnx.save(model, str(plain))
    return run, path, raw_path, plain


def test_protocol_and_results(exported):
    run, path, _, _ = exported
    rng = np.random.default_rng(0)
    images = np.stack([random_image(rng, 110, 150) for _ in range(3)])
    crops = np.stack([random_affine(rng, 110, 150) for _ in range(3)])
    ref, ref_scores, _ = reference(run, list(images), crops, "quarter")
    backend = OnnxRuntimeBackend(path, threads=1)
    assert isinstance(backend, BaseBackend)
    with backend as b:
        assert b.is_open and b.metadata.decode == "quarter" and b.metadata.num_landmarks == K
        landmarks, scores = b.run(images, crops)
        assert landmarks.shape == (3, K, 2) and scores.shape == (3, K)
        assert landmarks.dtype == np.float32 and scores.dtype == np.float32
        np.testing.assert_allclose(landmarks, ref, atol=1e-3)
        single_lm, single_scores = b.run(images[1], crops[1])  # one image, one affine
        assert single_lm.shape == (K, 2) and single_scores.shape == (K,)
        np.testing.assert_allclose(single_lm, landmarks[1], atol=1e-4)
        assert b.output_names == ["landmarks", "scores"]
    assert not backend.is_open
    with pytest.raises(RuntimeError, match="open"):
        backend.run(images, crops)


def test_input_checks(exported):
    _, path, _, _ = exported
    img = np.zeros((50, 60, 3), np.uint8)
    crop = np.eye(2, 3)
    with OnnxRuntimeBackend(path) as b:
        with pytest.raises(CtdError, match="uint8"):
            b.run(img.astype(np.float32), crop)
        with pytest.raises(CtdError, match=r"\[H, W, 3\]"):
            b.run(np.zeros((50, 60), np.uint8), crop)
        with pytest.raises(CtdError, match="2x3"):
            b.run(img, np.eye(3))
        with pytest.raises(CtdError, match="2 images but 1"):
            b.run(np.stack([img, img]), crop[None])
        with pytest.raises(CtdError, match="non-finite"):
            b.run(img, np.full((2, 3), np.nan))


def test_raw_graphs_and_foreign_files_are_refused(exported, tmp_path):
    _, _, raw, plain = exported
    with pytest.raises(CtdError, match="raw graph"):
        OnnxRuntimeBackend(raw).open()
    with pytest.raises(CtdError, match="ctd.version"):
        OnnxRuntimeBackend(plain).open()
    with pytest.raises(CtdError, match="not found"):
        OnnxRuntimeBackend(tmp_path / "nope.onnx").open()
    with pytest.raises(RuntimeError):
        OnnxRuntimeBackend(plain).metadata


def test_create_backend_by_suffix(exported, tmp_path):
    _, path, _, _ = exported
    backend = create_backend(path, threads=1)
    assert isinstance(backend, OnnxRuntimeBackend) and backend.threads == 1
    with pytest.raises(CtdError, match="which backend"):
        create_backend(tmp_path / "model.bin")
    with pytest.raises(CtdError, match="unknown backend"):
        create_backend(path, backend="tvm")
