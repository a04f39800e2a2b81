"""`export_run` does every step a `ctd export` does (fp32 + parity, FP16, INT8, the engine) from its
options, and writes export_config.json last, listing exactly what was written: on a real (tiny,
one-epoch) training run dir, with a stand-in TensorRT (builder and backend) for the engine."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ctd_export.onnx_export import ExportOptions, export_run
from ctd_runtime.backends import BACKENDS
from ctd_runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from ctd_runtime.errors import CtdError
from ctd_runtime.model_meta import read_model_metadata
from tests.export.test_export_cli import trained  # noqa: F401 - the module-scoped run-dir fixture

FAST = dict(max_images=4, calibration_images=3)  # the tiny data has 4 training images


def _config(out: Path) -> dict:
    return json.loads((out / "export_config.json").read_text())


def test_every_precision_by_default_listed_in_the_config(trained, tmp_path):  # noqa: F811
    run_dir, _ = trained
    out = tmp_path / "all"
    result = export_run(run_dir, out, ExportOptions(**FAST))
    assert sorted(p.name for p in out.iterdir()) == [
        "export_config.json", "model.fp16.onnx", "model.int8.onnx", "model.onnx"]
    config = _config(out)
    assert config["artifacts"] == {"onnx": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
    assert set(config["reports"]) == {"fp16", "int8"} and config["options"]["precisions"] == ["fp32", "fp16", "int8"]
    assert config["reports"]["int8"]["quantization"]["num_calibration_images"] == 3
    assert result.parity.passed and result.parity.model == "model.onnx"
    assert read_model_metadata(out / "model.int8.onnx").precision == "int8"


def test_a_subset_and_the_options_checks(trained, tmp_path):  # noqa: F811
    run_dir, _ = trained
    out = tmp_path / "fp16"
    export_run(run_dir, out, ExportOptions(precisions=("fp16",), **FAST))
    assert sorted(p.name for p in out.iterdir()) == ["export_config.json", "model.fp16.onnx", "model.onnx"]
    raw = tmp_path / "raw"
    export_run(run_dir, raw, ExportOptions(raw=True, **FAST))  # a raw graph has no variants
    assert _config(raw)["artifacts"] == {"onnx": "model.onnx"}
    with pytest.raises(CtdError, match="unknown precision 'fp8'"):
        ExportOptions(precisions=("fp32", "fp8")).check()
    with pytest.raises(CtdError, match="--raw"):
        ExportOptions(raw=True, engine=True).check()
    with pytest.raises(CtdError, match="calibration method"):
        ExportOptions(calibration="kl").check()
    assert ExportOptions(precisions=("fp32",), engine=True).written_precisions() == ("fp32", "fp16")


def test_the_config_is_written_last_also_when_a_step_fails(trained, tmp_path):  # noqa: F811
    run_dir, _ = trained
    out = tmp_path / "broken"

    def broken_step(context):
        raise CtdError("this step fails")

    with pytest.raises(CtdError, match="this step fails"):
        export_run(run_dir, out, ExportOptions(precisions=("fp32", "fp16"), post_steps=[broken_step], **FAST))
    config = _config(out)
    assert config["artifacts"] == {"onnx": "model.onnx", "fp16": "model.fp16.onnx"}
    assert config["options"]["post_steps"] == ["broken_step"]


# ---------------------------------------------------------------------------- the engine, TensorRT stood in


class StandInEngine(OnnxRuntimeBackend):
    """Runs the ONNX file a stand-in plan names (what a TensorRT FP16 engine of it computes, up
    to its kernels), shifted by `SHIFT_PX` source pixels to play a broken engine."""

    name = "tensorrt"
    SHIFT_PX = 0.0

    def __init__(self, path) -> None:
        super().__init__(Path(path).with_name(Path(path).read_text()))

    def _run(self, image, crop):
        out = super()._run(image, crop)
        out["landmarks"] = out["landmarks"] + np.float32(self.SHIFT_PX)
        return out


@pytest.fixture
def stand_in_tensorrt(monkeypatch):
    import ctd_runtime.engine.build as build
    import ctd_runtime.engine.environment as environment

    built = []

    def build_engine(onnx_path, plan_path, profile=None, workspace_mb=2048, timing_cache_path=None, log=None):
        built.append((Path(onnx_path).name, Path(plan_path).name, workspace_mb, Path(timing_cache_path).name))
        Path(plan_path).write_text(Path(onnx_path).name)
        Path(str(plan_path) + ".json").write_text("{}")
        Path(timing_cache_path).write_bytes(b"cache")
        if log is not None:
            log("built")
        return SimpleNamespace(precision="fp16", build_mode="strongly-typed", plan_file=Path(plan_path).name)

    monkeypatch.setattr(environment, "import_tensorrt", lambda: None)
    monkeypatch.setattr(build, "build_engine", build_engine)
    monkeypatch.setitem(BACKENDS, "tensorrt", f"{__name__}:StandInEngine")
    monkeypatch.setattr(StandInEngine, "SHIFT_PX", 0.0)
    return built


def test_the_engine_is_built_gated_and_listed(trained, tmp_path, stand_in_tensorrt):  # noqa: F811
    run_dir, _ = trained
    out = tmp_path / "engine"
    logs = []
    export_run(run_dir, out, ExportOptions(precisions=("fp32",), engine=True, workspace_mb=512, **FAST), log=logs.append)
    assert stand_in_tensorrt == [("model.fp16.onnx", "model.plan", 512, "timing.cache")]
    # the builder's lines come between the engine step's start and end lines
    at = logs.index("built")
    assert logs[at - 1].startswith("engine: TensorRT engine") and logs[at + 1].startswith("engine: done in ")
    config = _config(out)
    assert config["artifacts"] == {"onnx": "model.onnx", "fp16": "model.fp16.onnx", "engine": "model.plan",
                                   "engine_manifest": "model.plan.json", "timing_cache": "timing.cache"}
    parity = config["reports"]["engine"]["parity"]
    assert parity["candidate"] == "tensorrt" and parity["model"] == "model.plan" and parity["statistic"] == "mean"
    assert parity["passed"] and parity["num_images"] == 4


def test_an_engine_failing_the_gate_is_deleted(trained, tmp_path, stand_in_tensorrt, monkeypatch):  # noqa: F811
    run_dir, _ = trained
    monkeypatch.setattr(StandInEngine, "SHIFT_PX", 3.0)
    out = tmp_path / "bad-engine"
    with pytest.raises(CtdError, match="engine parity gate failed"):
        export_run(run_dir, out, ExportOptions(precisions=("fp32",), engine=True, **FAST))
    assert not (out / "model.plan").exists() and not (out / "model.plan.json").exists()
    config = _config(out)
    assert "engine" not in config["artifacts"] and config["reports"]["engine"]["parity"]["passed"] is False
    assert config["reports"]["engine"]["parity"]["mean_px"] == pytest.approx(3.0 * np.sqrt(2), abs=0.2)
