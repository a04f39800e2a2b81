"""`ctd export` end to end on a real (tiny, one-epoch) training run dir, and its refusals: a file
as output folder, an unreadable checkpoint, another ctd version or schema, an existing model."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from ctd_runtime import geometry
from ctd_runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from ctd_runtime.cli import main
from ctd_runtime.model_meta import read_model_metadata


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run dir from a one-epoch training of the tiny test teacher on synthetic faces."""
    from ctd_train.trainer import train
    from tests.train._tiny_training import tiny_config, tiny_data, tiny_teachers

    mp = pytest.MonkeyPatch()
    tiny_teachers(mp)  # load_run rebuilds the student from the teacher's skeleton
    root = tmp_path_factory.mktemp("export-run")
    data = tiny_data(root / "data")
    run_dir = train(tiny_config(data, root / "run", epochs=1), progress=False, evaluate_test=False)
    yield run_dir, data
    mp.undo()


def _fails(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_export_writes_model_config_and_prints_parity(trained, tmp_path, capsys):
    run_dir, data = trained
    out = tmp_path / "export"
    main(["export", str(run_dir), "--out", str(out), "--decode", "quarter", "--heatmaps"])
    printed = capsys.readouterr().out
    assert "parity passed" in printed and "max" in printed and "mean" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "export_config.json", "model.fp16.onnx", "model.int8.onnx", "model.onnx"]
    assert read_model_metadata(out / "model.fp16.onnx").precision == "fp16"
    assert read_model_metadata(out / "model.int8.onnx").precision == "int8"
    meta = read_model_metadata(out / "model.onnx")
    ckpt = torch.load(run_dir / "checkpoint_best.pt", weights_only=True)
    assert meta.run_id == ckpt["run_id"] and meta.schema.name == "imm14" and meta.input_size == 64
    assert meta.decode == "quarter" and meta.graph == "fused" and meta.precision == "fp32"
    assert meta.outputs == ("landmarks", "scores", "heatmaps")
    config = json.loads((out / "export_config.json").read_text())
    assert config["options"]["decode"] == "quarter" and config["options"]["heatmaps"] is True
    assert config["parity"]["passed"] and config["parity"]["max_px"] <= 0.1
    assert "validation split" in config["parity"]["source"]
    assert set(config["reports"]) >= {"fp16", "int8"}

    # the station side: the backend runs it on a source image with a crop affine
    from ctd_train.data.annotations import read_annotations

    images = read_annotations(data)
    center, side = geometry.square_box(images.points[0], 0.25)
    affine = geometry.crop_affine(center, side, meta.input_size)
    with OnnxRuntimeBackend(out / "model.onnx") as backend:
        landmarks, scores = backend.run(images.load_image(0), affine)
    assert landmarks.shape == (14, 2) and np.all(np.isfinite(landmarks)) and scores.shape == (14,)


def test_dark_export_of_an_untrained_model_passes_on_its_stable_landmarks(trained, tmp_path, capsys):
    """One epoch leaves nearly flat heatmaps: most DARK decodes are then decided by float noise;
    the gate reports them and judges the rest."""
    run_dir, _ = trained
    out = tmp_path / "dark"
    main(["export", str(run_dir), "--out", str(out), "--decode", "dark"])
    config = json.loads((out / "export_config.json").read_text())
    assert config["parity"]["passed"] and config["parity"]["max_px"] <= 0.1
    if config["parity"]["unstable"]:
        assert "numerical noise" in capsys.readouterr().out


def test_raw_export_and_folder_images(trained, tmp_path, capsys):
    run_dir, data = trained
    out = tmp_path / "raw"
    main(["export", str(run_dir), "--out", str(out), "--raw", "--images", str(data / "images"), "--max-images", "4"])
    assert read_model_metadata(out / "model.onnx").graph == "raw"
    config = json.loads((out / "export_config.json").read_text())
    assert config["parity"]["num_images"] == 4 and config["parity"]["source"].startswith("folder")


def test_output_folder_that_is_a_file(trained, tmp_path, capsys):
    run_dir, _ = trained
    target = tmp_path / "model-dir"
    target.write_text("not a folder")
    err = _fails(["export", str(run_dir), "--out", str(target)], capsys)
    assert "not a folder" in err
    assert target.read_text() == "not a folder"


def test_an_existing_model_is_kept_refused_or_forced(trained, tmp_path, capsys):
    """The same export again keeps every file (nothing to complete); another export's model.onnx
    (here: another decode) needs --force."""
    run_dir, _ = trained
    out = tmp_path / "again"
    main(["export", str(run_dir), "--out", str(out), "--max-images", "2", "--calib-images", "2"])
    first = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "export_config.json"}
    capsys.readouterr()
    main(["export", str(run_dir), "--out", str(out), "--max-images", "2", "--calib-images", "2"])
    said = capsys.readouterr().out
    assert "model.onnx is already this export's" in said and "fp16: already written" in said
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "export_config.json"} == first
    err = _fails(["export", str(run_dir), "--out", str(out), "--decode", "dark"], capsys)
    assert "another export: decode argmax (this export: dark)" in " ".join(err.split()) and "--force" in err
    assert (out / "model.onnx").stat().st_mtime_ns == first["model.onnx"]
    main(["export", str(run_dir), "--out", str(out), "--force", "--max-images", "2", "--precision", "fp32"])
    assert sorted(p.name for p in out.iterdir()) == ["export_config.json", "model.onnx"]  # old variants gone


def _copy_run(run_dir: Path, dest: Path) -> Path:
    shutil.copytree(run_dir, dest)
    return dest


def test_unreadable_checkpoint(trained, tmp_path, capsys):
    run_dir, _ = trained
    broken = _copy_run(run_dir, tmp_path / "broken")
    (broken / "checkpoint_best.pt").write_bytes(b"\x00garbage" * 20)
    out = tmp_path / "o"
    err = _fails(["export", str(broken), "--out", str(out)], capsys)
    assert "checkpoint_best.pt" in err and "truncated, or not a ctd checkpoint" in err
    assert not out.exists()
    err = _fails(["export", str(tmp_path / "no-run"), "--out", str(out)], capsys)
    assert "not found" in err and not out.exists()


def test_run_from_another_version_or_schema(trained, tmp_path, capsys):
    run_dir, _ = trained
    other = _copy_run(run_dir, tmp_path / "other")
    ckpt = torch.load(other / "checkpoint_best.pt", weights_only=True)
    ckpt["ctd_version"] = "9.0.0"
    torch.save(ckpt, other / "checkpoint_best.pt")
    out = tmp_path / "o"
    err = _fails(["export", str(other), "--out", str(out)], capsys)
    assert "9.0.0" in err and not out.exists()
    err = _fails(["export", str(run_dir), "--out", str(out), "--schema", "imm58"], capsys)
    assert "imm58" in err and "imm14" in err and not out.exists()


def test_missing_validation_data_asks_for_images(trained, tmp_path):
    from ctd_export.onnx_export import ExportOptions, export_loaded_run
    from ctd_runtime.errors import CtdError
    from ctd_train.checkpoint import load_run

    run_dir, _ = trained
    run = load_run(run_dir)
    gone = replace(run, config={**run.config, "data": str(tmp_path / "moved-away")})
    with pytest.raises(CtdError, match="--images"):
        export_loaded_run(gone, tmp_path / "o", ExportOptions())
    assert not (tmp_path / "o").exists()


def test_bad_options(trained, tmp_path, capsys):
    run_dir, _ = trained
    assert "unknown decode" in _fails(["export", str(run_dir), "--out", str(tmp_path / "o"), "--decode", "soft"], capsys)
    assert "--raw" in _fails(["export", str(run_dir), "--out", str(tmp_path / "o"), "--raw", "--heatmaps"], capsys)
    assert "tolerance" in _fails(["export", str(run_dir), "--out", str(tmp_path / "o"), "--tolerance", "0"], capsys)
    assert not (tmp_path / "o").exists()


def test_precision_subset_and_bad_precision(trained, tmp_path, capsys):
    run_dir, _ = trained
    out = tmp_path / "fp32only"
    main(["export", str(run_dir), "--out", str(out), "--precision", "fp32"])
    assert sorted(p.name for p in out.iterdir()) == ["export_config.json", "model.onnx"]
    err = _fails(["export", str(run_dir), "--out", str(tmp_path / "x"), "--precision", "fp8"], capsys)
    assert "unknown precision 'fp8'" in err
    assert not (tmp_path / "x").exists()


def test_engine_without_tensorrt_fails_before_writing(trained, tmp_path, capsys):
    pytest.importorskip("torch")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    run_dir, _ = trained
    err = _fails(["export", str(run_dir), "--out", str(tmp_path / "e"), "--engine"], capsys)
    assert "TensorRT is not installed" in err
    assert not (tmp_path / "e").exists()
