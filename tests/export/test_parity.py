"""The parity gate: PyTorch + OpenCV + numpy codec vs ONNX Runtime on the exported file. It passes
for a faithful export and fails, leaving no file, for a sabotaged one."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ctd_export.onnx_export as onnx_export
from ctd_export.onnx_export import ExportOptions, export_loaded_run
from ctd_export.parity import check_parity, compare_landmarks, unstable_decodes
from ctd_runtime.errors import CtdError
from ctd_runtime.normalization import Normalization
from tests.export.test_fused import fake_run, random_affine, random_image


def _validation(n: int = 6, seed: int = 7):
    """Images of two sizes (so the candidate runs two batches) with random affines."""
    rng = np.random.default_rng(seed)
    images, crops = [], []
    for i in range(n):
        h, w = (120, 160) if i % 2 else (200, 150)
        images.append(random_image(rng, h, w))
        crops.append(random_affine(rng, h, w))
    return images, np.stack(crops), "random test images"


@pytest.mark.parametrize("decode", ["argmax", "quarter", "dark"])
def test_parity_passes_for_fp32_fused_exports(tmp_path, decode):
    run = fake_run(decode)
    result = export_loaded_run(run, tmp_path / "out", ExportOptions(precisions=("fp32",)), validation=_validation())
    report = result.parity
    assert report.passed and report.max_px < 0.01, report.summary()
    assert report.num_images == 6 and len(report.per_landmark_max) == 3
    assert report.heatmap_max_rel is not None and report.heatmap_max_rel < 1e-2
    assert result.model_path.is_file() and result.metadata.decode == decode
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["export_config.json", "model.onnx"]
    config = json.loads(result.config_path.read_text())
    assert config["options"]["tolerance_px"] == 0.1 and config["parity"]["passed"] is True
    # check_parity on its own agrees
    images, crops, _ = _validation(4, seed=8)
    again = check_parity(run, result.model_path, images, crops)
    assert again.passed and again.decode == decode and again.graph == "fused"


def test_parity_passes_for_raw_and_heatmap_exports(tmp_path):
    run = fake_run("quarter")
    raw = export_loaded_run(run, tmp_path / "raw", ExportOptions(raw=True), validation=_validation(4))
    assert raw.metadata.graph == "raw" and raw.metadata.outputs == ("heatmaps",)
    assert raw.parity.passed and raw.parity.max_px < 1e-3
    hm = export_loaded_run(run, tmp_path / "hm", ExportOptions(heatmaps=True, precisions=("fp32",)),
                           validation=_validation(4))
    assert hm.metadata.outputs == ("landmarks", "scores", "heatmaps") and hm.parity.passed


def test_sabotaged_graph_fails_and_leaves_no_file(tmp_path, monkeypatch):
    run = fake_run("argmax")
    real_build = onnx_export.build_fused_model

    def wrong_mean(run, decode, with_heatmaps=False, **kw):
        model = real_build(run, decode, with_heatmaps, **kw)
        model.mean.add_(30.0)  # the graph normalises with another mean than training did
        return model

    monkeypatch.setattr(onnx_export, "build_fused_model", wrong_mean)
    out = tmp_path / "out"
    with pytest.raises(CtdError, match="parity gate failed") as e:
        export_loaded_run(run, out, ExportOptions(), validation=_validation())
    assert "max" in str(e.value) and "mean" in str(e.value)
    assert not out.exists()  # the folder this export created is gone again
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    with pytest.raises(CtdError, match="parity gate failed"):
        export_loaded_run(run, existing, ExportOptions(), validation=_validation())
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]


def test_swapped_channels_are_caught_by_a_tight_gate(tmp_path, monkeypatch):
    """A graph built for BGR while the predictor was trained on RGB input cannot pass."""
    run = fake_run("dark", normalization=Normalization("RGB", (120.0, 110.0, 100.0), (0.02, 0.02, 0.02)))
    real_build = onnx_export.build_fused_model

    def swapped(run_, decode, with_heatmaps=False, **kw):
        model = real_build(run_, decode, with_heatmaps, **kw)
        model.swap_channels = False
        return model

    monkeypatch.setattr(onnx_export, "build_fused_model", swapped)
    with pytest.raises(CtdError, match="parity gate failed"):
        export_loaded_run(run, tmp_path / "o", ExportOptions(tolerance_px=0.05), validation=_validation())
    assert not (tmp_path / "o").exists()


def test_compare_landmarks_numbers_and_non_finite():
    ref = np.zeros((2, 3, 2))
    cand = ref.copy()
    cand[1, 2] = [0.3, 0.4]
    report = compare_landmarks(ref, cand, 0.1, ("a", "b", "c"))
    assert report.max_px == pytest.approx(0.5) and report.mean_px == pytest.approx(0.5 / 6)
    assert report.per_landmark_max == [0.0, 0.0, pytest.approx(0.5)]
    assert not report.passed and report.worst_landmark == "c"
    cand[0, 0, 0] = np.nan
    assert not compare_landmarks(ref, cand, 10.0).passed
    assert compare_landmarks(ref, ref, 0.1).passed


def test_unstable_decodes_are_near_ties_not_real_moves():
    """A tie between two peaks flips under float noise (unstable); a moved Gaussian is a real
    difference (judged); identical heatmaps are stable."""
    run = fake_run("quarter")
    codec = run.codec
    crops = np.stack([np.array([[2.0, 0, 10], [0, 2.0, 20]])] * 2)
    gauss = codec.encode(codec.heatmap_to_crop(np.array([[6.3, 7.6], [9.2, 8.7], [4.4, 11.2]])))[0]
    ref = np.stack([gauss, gauss]).astype(np.float32)
    ref[1, 1] = 0.0
    ref[1, 1, 4, 4] = ref[1, 1, 11, 11] = 1.0  # two equal peaks, far apart
    expected = np.array([[False, False, False], [False, True, False]])
    np.testing.assert_array_equal(unstable_decodes(run, ref, ref, crops, "quarter", 0.1), expected)
    np.testing.assert_array_equal(unstable_decodes(run, ref, None, crops, "quarter", 0.1), expected)
    moved = ref.copy()
    moved[0, 0] = codec.encode(codec.heatmap_to_crop(np.array([[7.3, 7.6]])))[0][0]  # one pixel on
    assert not unstable_decodes(run, ref, moved, crops, "quarter", 0.1)[0, 0]


def test_unstable_landmarks_are_reported_not_judged():
    ref = np.zeros((1, 2, 2))
    cand = ref.copy()
    cand[0, 1] = [4.0, 0.0]
    report = compare_landmarks(ref, cand, 0.1, ("a", "b"), unstable=np.array([[False, True]]))
    assert report.passed and report.unstable == 1 and report.max_px == 0 and report.max_px_all == 4.0
    cand[0, 1] = [np.nan, 0.0]  # a non-finite landmark fails even when unstable
    assert not compare_landmarks(ref, cand, 0.1, unstable=np.array([[False, True]])).passed


def test_post_steps_get_the_context_and_add_artifacts(tmp_path):
    """How FP16/INT8/engine steps plug in: they see the run, the parity set and the gate graph."""
    seen = {}

    def fp16_like(ctx):
        seen["images"] = len(ctx.images)
        seen["outputs"] = [o.name for o in ctx.gate_model.graph.output]
        extra = ctx.result.out_dir / "model.extra.onnx"
        extra.write_bytes(ctx.result.model_path.read_bytes())
        ctx.result.artifacts["extra"] = extra
        ctx.result.reports["extra"] = {"passed": True}

    result = export_loaded_run(fake_run(), tmp_path / "out", ExportOptions(post_steps=[fp16_like], precisions=("fp32",)),
                               validation=_validation(3))
    assert seen == {"images": 3, "outputs": ["landmarks", "scores", "heatmaps"]}
    config = json.loads(result.config_path.read_text())
    assert config["artifacts"] == {"onnx": "model.onnx", "extra": "model.extra.onnx"}
    assert config["reports"] == {"extra": {"passed": True}} and config["options"]["post_steps"] == ["fp16_like"]
