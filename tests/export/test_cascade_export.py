"""`export_cascade`: the two-stage graph of a face run and an eye run as one gated model.onnx
that the ONNX Runtime backend runs like any fused model (tiny fake teacher, synthetic data)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from ctd_export.cascade_export import cascade_reference, export_cascade
from ctd_export.onnx_export import ExportOptions
from ctd_runtime.backends import create_backend
from ctd_runtime.errors import CtdError
from ctd_train.checkpoint import load_run
from ctd_train.trainer import train
from tests.train._tiny_training import tiny_config, tiny_data, tiny_teachers


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cascade-export")
    with pytest.MonkeyPatch.context() as mp:
        tiny_teachers(mp)
        data = tiny_data(root / "data")
        face = train(tiny_config(data, root / "face", method="ft", epochs=1), progress=False, evaluate_test=False)
        eye_cfg = dataclasses.replace(tiny_config(data, root / "eye", method="ft", epochs=1), schema="imm-eye",
                                      crop="pfl", crop_scale=2.5)
        eye = train(eye_cfg, progress=False, evaluate_test=False)
        yield root, face, eye


def test_two_stage_model_is_gated_and_runs_like_a_fused_model(runs):
    root, face, eye = runs
    out = root / "export"
    config = export_cascade(face, eye, out, ExportOptions(max_images=4, threads=1))
    assert config["parity"]["passed"] and config["graph"] == "fused-cascade"
    assert json.loads((out / "export_config.json").read_text())["eye_run"] == str(eye)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    f, e = load_run(face), load_run(eye)
    images = [np.random.default_rng(0).integers(0, 255, (200, 160, 3), dtype=np.uint8)]
    crops = np.array([[[0.8, 0.0, 10.0], [0.0, 0.8, 20.0]]])
    first, landmarks, _ = cascade_reference(f, e, images, crops, "argmax", "argmax", 2.5)
    with create_backend(out / "model.onnx", threads=1) as backend:
        assert backend.metadata.schema.name == "imm14"
        got, _ = backend.run(images[0][None], crops.astype(np.float32))
    assert got.shape == (1, 14, 2)
    assert np.abs(got[0] - landmarks[0]).mean() < 0.1


def test_a_face_run_is_refused_as_the_refinement(runs):
    root, face, _ = runs
    with pytest.raises(CtdError, match="fissure crops"):
        export_cascade(face, face, root / "bad", ExportOptions(max_images=2, threads=1))
    assert not (root / "bad" / "model.onnx").exists()


def test_ctd_export_refine(runs):
    from typer.testing import CliRunner

    from ctd_runtime.cli import build_app

    root, face, eye = runs
    res = CliRunner().invoke(build_app(), ["export", str(face), "--refine", str(eye), "--out", str(root / "cli"),
                                           "--max-images", "2", "--threads", "1"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "two-stage" in res.output and (root / "cli" / "model.onnx").is_file()
    res = CliRunner().invoke(build_app(), ["export", str(face), "--refine", str(eye), "--out", str(root / "cli2"),
                                           "--precision", "fp32,int8"])
    assert res.exit_code != 0 and not (root / "cli2").exists()
