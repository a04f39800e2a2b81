"""Method kd, landmark distillation from a trained run: its loss terms are what they claim (zero
when the student is the teacher run, the teacher run at its own input size and normalisation, no
gradient into it), a tiny kd training with a smaller head and input than its teacher run, its
export through ONNX Runtime without the teacher run, the config round trip, and the teacher runs
refused (tiny fake teacher, synthetic data)."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ctd_runtime.errors import CtdError
from ctd_runtime.normalization import Normalization
from ctd_train.checkpoint import load_run
from ctd_train.config import TrainConfig
from ctd_train.kd import RunTeacher
from ctd_train.losses import heatmap_loss
from ctd_train.methods import METHODS, LandmarkMethod, MethodConfig
from ctd_train.trainer import train
from tests._cli import run_ctd
from tests.train._tiny_training import TINY_NORMALIZATION, tiny_config, tiny_data, tiny_teachers

K = 14


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic data and a one-epoch ft run of the tiny teacher on it (input 64, head 16): the
    teacher run of every test here."""
    mp = pytest.MonkeyPatch()
    tiny_teachers(mp)
    root = tmp_path_factory.mktemp("kd")
    data = tiny_data(root / "data")
    run = train(tiny_config(data, root / "teacher-run", method="ft", epochs=1), progress=False, evaluate_test=False)
    yield data, run
    mp.undo()


def kd_config(data: Path, out: Path, teacher_run: Path, **method: object) -> TrainConfig:
    """A kd run of a smaller student: head 8 (the teacher run's is 16), input 32 (its is 64)."""
    m = dict(name="kd", head_channels=8, ed_features="pooled", lambda_=0.5, lambda_kd=2.0) | method
    config = tiny_config(data, out, method="kd", epochs=1, input_size=32, teacher_run=str(teacher_run))
    return dataclasses.replace(config, method=MethodConfig(**m))


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _kd_method(run, student: torch.nn.Module, normalization: Normalization, **method: object) -> LandmarkMethod:
    config = MethodConfig(**(dict(name="kd", ed_features="pooled") | method))
    m = LandmarkMethod(config, student, normalization=normalization)
    m.teacher_run = RunTeacher(run.predictor, run.input_size, run.normalization, normalization)
    return m


# ------------------------------------------------------------------------------ the loss terms


def test_the_kd_terms_vanish_when_the_student_is_the_teacher_run(world):
    _, run_dir = world
    run = load_run(run_dir)
    student = copy.deepcopy(run.predictor).requires_grad_(True)
    method = _kd_method(run, student, run.normalization, ed_features="map", lambda_=0.5, lambda_kd=2.0).eval()
    x = torch.randn(2, 3, 64, 64)
    target = torch.rand(2, K, 16, 16)
    out = method(x, target, torch.ones(2, K))
    assert set(out) == {"loss", "pred", "l_r", "l_kd", "l_ed"} and method.loss_terms == ("l_r", "l_kd", "l_ed")
    assert out["l_kd"].item() < 1e-10 and abs(out["l_ed"].item()) < 1e-6
    assert out["l_r"].item() == pytest.approx(heatmap_loss(run.predictor(x), target).item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(out["l_r"].item() + 2.0 * out["l_kd"].item() + 0.5 * out["l_ed"].item())
    with torch.no_grad():                 # a changed student: the kd term is its distance to the run
        student.head.final.bias += 0.1
    out = method(x, target, torch.ones(2, K))
    assert out["l_kd"].item() == pytest.approx(0.01 * K * 16 * 16, rel=1e-4)


def test_the_teacher_run_sees_the_crop_at_its_own_size_and_normalisation(world):
    """Student input 32, BGR in [-1, 1]; the run takes 64, here RGB 0..1: it gets the same crop
    normalised its way and resized bilinearly, and its heatmaps come back at the student's size."""
    _, run_dir = world
    run = load_run(run_dir)
    run.normalization = Normalization("RGB", (0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))
    small = copy.deepcopy(run.predictor)      # at input 32: a 1x1 feature map, 8x8 heatmaps
    method = _kd_method(run, small, TINY_NORMALIZATION).eval()
    image = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(TINY_NORMALIZATION.apply(image))
    seen = method.teacher_run.run_input(x)
    expected_in = F.interpolate(torch.from_numpy(run.normalization.apply(image)), size=(64, 64), mode="bilinear",
                                align_corners=False)
    torch.testing.assert_close(seen, expected_in, rtol=1e-5, atol=1e-5)
    expected_hm = F.interpolate(run.predictor(expected_in), size=(8, 8), mode="bilinear", align_corners=False)
    target, w = torch.rand(2, K, 8, 8), torch.tensor([[1.0] * (K - 1) + [0.0]] * 2)
    out = method(x, target, w)
    expected = heatmap_loss(small(x), expected_hm, w)
    assert out["l_kd"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert out["l_kd"].item() > 0


def test_no_gradient_reaches_the_teacher_run_and_it_stays_in_eval_mode(world):
    _, run_dir = world
    run = load_run(run_dir)
    method = _kd_method(run, copy.deepcopy(run.predictor).requires_grad_(True), run.normalization).train()
    assert not method.teacher_run.training and not any(m.training for m in method.teacher_run.modules())
    out = method(torch.randn(2, 3, 64, 64), torch.rand(2, K, 16, 16), torch.ones(2, K))
    out["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in method.teacher_run.parameters())
    assert all(p.grad is not None for p in method.predictor.parameters())
    teacher_ids = {id(p) for p in method.teacher_run.parameters()}
    assert not teacher_ids.intersection(id(p) for p in method.trainable_parameters())


# ------------------------------------------------------------------------------ training and export


def test_a_tiny_kd_training_with_a_smaller_head_and_input_exports_without_its_teacher(world, tmp_path, capsys):
    data, run_dir = world
    teacher_copy = tmp_path / "teacher-copy"
    shutil.copytree(run_dir, teacher_copy)
    kd_run = train(kd_config(data, tmp_path / "kd", teacher_copy), progress=False)
    rows = _metrics(kd_run)
    assert len(rows) == 1
    r = rows[0]
    assert r["l_kd"] > 0 and 0 <= r["l_ed"] <= 2
    saved = json.loads((kd_run / "config.json").read_text())
    w_pfl = saved["pfl_length_weight"]       # the recipe's PFL-length term rides on every method
    assert r["loss"] == pytest.approx(r["l_r"] + 2.0 * r["l_kd"] + 0.5 * r["l_ed"] + w_pfl * r["l_pfl"], rel=1e-4)
    assert r["ld_ratio"] == pytest.approx((2.0 * r["l_kd"] + 0.5 * r["l_ed"]) / r["l_r"], rel=1e-6)
    assert saved["teacher_run"] == str(teacher_copy.resolve()) and saved["method"]["lambda_kd"] == 2.0
    assert (kd_run / "eval_test.json").exists()

    shutil.rmtree(teacher_copy)           # the predictor is the student alone
    loaded = load_run(kd_run)
    assert loaded.method_name == "kd" and loaded.input_size == 32
    assert loaded.predictor.head.final.in_channels == 8
    out = tmp_path / "export"
    code, printed, err = run_ctd(["export", kd_run, "--out", out, "--precision", "fp32,int8", "--max-images", 2,
                                  "--calib-images", 2], capsys)
    assert code == 0, err
    assert "parity passed" in printed
    from ctd_runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from ctd_runtime.model_meta import read_model_metadata

    for name in ("model.onnx", "model.int8.onnx"):
        assert read_model_metadata(out / name).input_size == 32
    image = np.random.default_rng(1).integers(0, 256, size=(1, 160, 200, 3), dtype=np.uint8)
    crop = np.array([[[2.0, 0.0, 40.0], [0.0, 2.0, 20.0]]], np.float32)
    with OnnxRuntimeBackend(out / "model.onnx", threads=1) as backend:
        landmarks, scores = backend.run(image, crop)
    assert landmarks.shape == (1, K, 2) and np.isfinite(landmarks).all() and scores.shape == (1, K)


# ------------------------------------------------------------------------------ config


def test_the_kd_config_round_trips_and_is_checked(tmp_path):
    assert "kd" in METHODS
    config = kd_config(tmp_path / "data", tmp_path / "kd", Path("runs/teacher"))
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.method.lambda_kd == 2.0
    assert config.resolved().teacher_run == str(Path("runs/teacher").resolve())
    assert MethodConfig("kd", lambda_=0.1, lambda_kd=3.0).distillation_weights() == {"l_kd": 3.0, "l_ed": 0.1}
    assert MethodConfig("ctd-com", lambda_=0.1).distillation_weights() == {"l_cd": 0.1, "l_ed": 0.1}
    with pytest.raises(CtdError, match="needs teacher_run"):
        dataclasses.replace(config, teacher_run=None).check()
    with pytest.raises(CtdError, match="not method 'ft'"):
        dataclasses.replace(config, method=MethodConfig("ft")).check()
    with pytest.raises(CtdError, match="lambda_kd"):
        MethodConfig("kd", lambda_kd=-1.0).validate()


def test_the_cli_takes_teacher_run_and_lambda_kd(tmp_path, capsys):
    code, _, err = run_ctd(["train", "--data", tmp_path, "--out", tmp_path / "kd", "--method", "kd"], capsys,
                           fold_stderr=True)
    assert code != 0 and "--teacher-run" in err
    code, _, err = run_ctd(["train", "--data", tmp_path, "--out", tmp_path / "kd", "--method", "kd", "--teacher-run",
                            tmp_path / "nowhere", "--lambda-kd", "0.5"], capsys, fold_stderr=True)
    assert code != 0 and "teacher run folder not found" in err and "nowhere" in err
    assert not (tmp_path / "kd").exists()


# ------------------------------------------------------------------------------ refused teacher runs


def test_bad_teacher_runs_are_refused_before_anything_is_written(world, tmp_path):
    data, run_dir = world
    out = tmp_path / "kd"
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    other_schema = train(tiny_config(data, tmp_path / "imm58", method="ft", epochs=1, schema="imm58"),
                         progress=False, evaluate_test=False)
    other_seed = train(tiny_config(data, tmp_path / "seed3", method="ft", epochs=1, seed=3),
                       progress=False, evaluate_test=False)
    cases = [
        (kd_config(data, out, tmp_path / "missing"), "missing: teacher run folder not found"),
        (kd_config(data, out, not_a_run), "empty: the teacher run does not load.*checkpoint not found"),
        (kd_config(data, out, other_schema), "teacher run is for schema 'imm58' \\(58 landmarks"),
        (kd_config(data, out, other_seed), "trained on .* of this run's validation/test images"),
        (kd_config(data, out, run_dir, ed_features="map"), "use --ed-features pooled"),
    ]
    for config, message in cases:
        with pytest.raises(CtdError, match=message) as e:
            train(config, progress=False)
        assert e.value.path is not None
        assert not out.exists()


def test_a_teacher_run_of_the_same_landmarks_under_older_flip_rules_is_taken(world, tmp_path):
    """Runs trained before imm14 gained flip_sources hold a schema that differs only there and in
    its description: its heatmaps are the same landmarks, so it may teach."""
    from ctd_runtime.schema import get_schema
    from ctd_train.kd import load_teacher_run

    data, run_dir = world
    older = tmp_path / "older"
    shutil.copytree(run_dir, older)
    ckpt = torch.load(older / "checkpoint_best.pt", weights_only=True)
    ckpt["schema"] = {k: v for k, v in ckpt["schema"].items() if k != "flip_sources"} | {"description": "older"}
    torch.save(ckpt, older / "checkpoint_best.pt")
    config = kd_config(data, tmp_path / "kd", older)
    assert load_teacher_run(config, get_schema("imm14")).run_id == load_run(run_dir).run_id
    ckpt["schema"] = ckpt["schema"] | {"pfl_pair": [0, 1]}
    torch.save(ckpt, older / "checkpoint_best.pt")
    with pytest.raises(CtdError, match="differ in pfl_pair"):
        load_teacher_run(config, get_schema("imm14"))
