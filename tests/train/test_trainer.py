"""The trainer: run dir contents, LR schedule, reproducibility, resumption after an interruption,
and every bad input refused before training starts (tiny fake teacher, synthetic data)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ctd_runtime.errors import CtdError
from ctd_train.checkpoint import BEST, LAST
from ctd_train.config import TrainConfig
from ctd_train.trainer import poly_lr, train
from tests.train._tiny_training import TINY_NOCLS, tiny_config, tiny_data, tiny_teachers

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def data(tmp_path, monkeypatch):
    tiny_teachers(monkeypatch)
    return tiny_data(tmp_path / "data")


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["predictor"]


def test_poly_lr():
    assert poly_lr(1e-3, 0, 10, 0.9) == pytest.approx(1e-3)
    assert poly_lr(1e-3, 5, 10, 0.9) == pytest.approx(1e-3 * 0.5**0.9)
    assert poly_lr(1e-3, 10, 10, 0.9) == 0.0
    assert poly_lr(1e-3, 3, 10, 0.0) == pytest.approx(1e-3)


def test_train_writes_the_run_dir(data, tmp_path):
    run = train(tiny_config(data, tmp_path / "run", epochs=2), progress=False)
    for name in ("config.json", "split.json", BEST, LAST, "metrics.jsonl", "eval_test.json", "eval_test.csv", "ced.png"):
        assert (run / name).is_file(), name
    rows = _metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("lr", "loss", "l_r", "l_cd", "l_ed", "val_me_px", "val_me_pfl", "train_time_s", "images_per_s"):
            assert key in r, key
    assert rows[0]["lr"] > rows[1]["lr"] > 0  # polynomial decay, per iteration
    config = json.loads((run / "config.json").read_text())
    assert config["val_subjects"] == 1 and config["test_subjects"] == 1 and config["run_id"]
    assert Path(config["data"]).is_absolute()
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) == 4 and len(split["val"]) == 2 and len(split["test"]) == 2
    subjects = {k: {n.split("-")[0] for n in v} for k, v in split.items()}
    assert not (subjects["train"] & subjects["test"]) and not (subjects["val"] & subjects["test"])
    ev = json.loads((run / "eval_test.json").read_text())
    assert ev["split"] == "test" and ev["n_images"] == 2 and ev["unit"] == "pfl"
    best = torch.load(run / BEST, map_location="cpu", weights_only=True)
    assert best["epoch"] == min(rows, key=lambda r: r["val_me_pfl"])["epoch"]


def test_two_runs_with_the_same_seed_are_identical(data, tmp_path):
    a = train(tiny_config(data, tmp_path / "a", epochs=1, method="ctd-com"), progress=False, evaluate_test=False)
    b = train(tiny_config(data, tmp_path / "b", epochs=1, method="ctd-com"), progress=False, evaluate_test=False)
    ra, rb = _metrics(a)[0], _metrics(b)[0]
    for key in ("loss", "l_r", "l_cd", "l_ed", "val_me_px"):
        assert ra[key] == rb[key], key
    wa, wb = _weights(a / LAST), _weights(b / LAST)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = train(tiny_config(data, tmp_path / "c", epochs=1, method="ctd-com", seed=1), progress=False,
              evaluate_test=False)
    assert _metrics(c)[0]["loss"] != ra["loss"]


class _Interrupt(Exception):
    pass


def test_resume_after_an_interruption_matches_an_uninterrupted_run(data, tmp_path):
    full = train(tiny_config(data, tmp_path / "full", epochs=3), progress=False, evaluate_test=False)

    def stop_after_first(epoch, record):
        if epoch == 1:
            raise _Interrupt()

    cut = tmp_path / "cut"
    with pytest.raises(_Interrupt):
        train(tiny_config(data, cut, epochs=3), progress=False, on_epoch_end=stop_after_first)
    assert [r["epoch"] for r in _metrics(cut)] == [1]
    assert torch.load(cut / LAST, map_location="cpu", weights_only=True)["epoch"] == 1
    assert not (cut / "eval_test.json").exists()

    seen = []
    train(tiny_config(data, cut, epochs=3), progress=False, on_epoch_end=lambda e, r: seen.append(e))
    assert seen == [2, 3]  # continued, did not start over
    assert [r["epoch"] for r in _metrics(cut)] == [1, 2, 3]
    wf, wc = _weights(full / LAST), _weights(cut / LAST)
    assert all(torch.equal(wf[k], wc[k]) for k in wf)
    assert [r["loss"] for r in _metrics(cut)] == [r["loss"] for r in _metrics(full)]
    assert (cut / "eval_test.json").is_file()

    # a finished run: running again trains nothing
    again = []
    train(tiny_config(data, cut, epochs=3), progress=False, on_epoch_end=lambda e, r: again.append(e))
    assert again == []


# ------------------------------------------------------------------------ refused before training


def _refused(config, match: str) -> CtdError:
    out = Path(config.out)
    existed = out.exists()
    with pytest.raises(CtdError, match=match) as e:
        train(config, progress=False)
    if not existed:
        assert not out.exists(), "nothing may be written when the inputs are bad"
    return e.value


def test_data_without_the_schema_points(tmp_path, monkeypatch):
    tiny_teachers(monkeypatch)
    from tests.train._data_synth import face58, make_folder
    import numpy as np

    rng = np.random.default_rng(0)
    pts = np.stack([face58(200, 160, rng)[:40] for _ in range(8)])  # imm14 needs points up to 54
    make_folder(tmp_path / "data", n_images=8, n_subjects=4, points=pts)
    err = _refused(tiny_config(tmp_path / "data", tmp_path / "run"),
                   "only 40 points, but schema 'imm14' is for annotations of 58")
    assert "annotations.csv" in str(err)


def test_missing_data_folder(data, tmp_path):
    _refused(tiny_config(tmp_path / "nope", tmp_path / "run"), "data folder not found")


def test_output_is_a_file(data, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    _refused(tiny_config(data, f), "not a folder")
    _refused(tiny_config(data, f / "run"), "is a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_output_not_writable(data, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        _refused(tiny_config(data, ro / "run"), "not writable")
    finally:
        ro.chmod(0o700)


def test_output_folder_that_is_not_a_run(data, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _refused(tiny_config(data, out), "not a ctd run")


def test_classifier_distillation_needs_a_classifier(data, tmp_path):
    _refused(tiny_config(data, tmp_path / "run", method="ctd-cd", teacher=TINY_NOCLS), "has none")
    _refused(tiny_config(data, tmp_path / "run", method="ctd-com", teacher=TINY_NOCLS), "has none")


def test_teacher_that_does_not_load(data, tmp_path):
    _refused(tiny_config(data, tmp_path / "run", teacher_weights=str(tmp_path / "missing.bin")), "weights not found")
    _refused(tiny_config(data, tmp_path / "run", teacher="no-such-teacher"), "unknown teacher")


def test_bad_values(data, tmp_path):
    _refused(tiny_config(data, tmp_path / "run", epochs=0), "epochs")
    _refused(tiny_config(data, tmp_path / "run", method="nope"), "unknown method")
    _refused(tiny_config(data, tmp_path / "run", train_subjects=1, train_images=2), "not both")
    _refused(tiny_config(data, tmp_path / "run", train_subjects=5), "only 2")
    _refused(tiny_config(data, tmp_path / "run", val_subjects=2, test_subjects=2), "too few")
    _refused(tiny_config(data, tmp_path / "run", decode="best"), "unknown decode")


def test_flip_on_a_one_eye_schema_trains_on_the_other_eye(data, tmp_path):
    """imm14 has no flip pairs; flip augmentation takes the mirrored left eye (flip sources)."""
    from ctd_train.data.augment import AugmentConfig

    run = train(tiny_config(data, tmp_path / "run", epochs=1, augment=AugmentConfig(flip=True, flip_prob=1.0)),
                progress=False, evaluate_test=False)
    saved = json.loads((run / "config.json").read_text())
    assert saved["augment"]["flip"] is True and saved["schema"] == "imm14"


def test_existing_run_with_another_config(data, tmp_path):
    run = train(tiny_config(data, tmp_path / "run", epochs=1), progress=False, evaluate_test=False)
    before = (run / LAST).stat().st_mtime_ns
    err = _refused(tiny_config(data, run, epochs=1, lr=5e-4), "different config")
    assert "lr" in str(err)
    assert (run / LAST).stat().st_mtime_ns == before


def test_limited_labels(data, tmp_path):
    run = train(tiny_config(data, tmp_path / "a", epochs=1, train_images=3), progress=False, evaluate_test=False)
    assert len(json.loads((run / "split.json").read_text())["train"]) == 3
    run = train(tiny_config(data, tmp_path / "b", epochs=1, train_subjects=1), progress=False, evaluate_test=False)
    assert len(json.loads((run / "split.json").read_text())["train"]) == 2


def test_hg_needs_no_teacher(data, tmp_path):
    run = train(tiny_config(data, tmp_path / "hg", method="hg", teacher="no-such-teacher", epochs=1),
                progress=False)
    assert (run / "eval_test.json").is_file()


@pytest.mark.slow
def test_killed_process_resumes(tmp_path):
    """A real `ctd train` process killed after its first checkpoint resumes where it stopped and
    ends with the weights of an uninterrupted run (hg: needs no teacher inside the subprocess)."""
    data = tiny_data(tmp_path / "data")

    def cmd(out):
        return [sys.executable, "-c", "from ctd_runtime.cli import main; main()", "train", "--data", str(data), "--out", str(out),
                "--method", "hg", "--hg-stacks", "1", "--input-size", "64", "--epochs", "4",
                "--val-subjects", "1", "--test-subjects", "1", "--threads", "1", "--no-progress"]

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(cmd(tmp_path / "full"), check=True, env=env, capture_output=True, timeout=600)

    cut = tmp_path / "cut"
    proc = subprocess.Popen(cmd(cut), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (cut / LAST).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # checkpoint_last.pt is what a resume reads; metrics.jsonl is written after it and may be
    # missing its epoch (or absent) when the kill lands between the two, so ask the checkpoint
    assert (cut / LAST).exists(), "the process ended before its first checkpoint"
    done = int(torch.load(cut / LAST, map_location="cpu", weights_only=False)["epoch"])
    assert 1 <= done < 4, "the process should have been killed before the end"
    res = subprocess.run(cmd(cut), env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert f"resuming {cut} after epoch {done}/4" in " ".join(res.stderr.split())
    assert [r["epoch"] for r in _metrics(cut)] == [1, 2, 3, 4]
    wf, wc = _weights(tmp_path / "full" / LAST), _weights(cut / LAST)
    assert all(torch.equal(wf[k], wc[k]) for k in wf)


def test_device_choice_is_checked():
    from ctd_train.trainer import resolve_device

    with pytest.raises(CtdError, match="device must be"):
        TrainConfig(data="d", out="o", device="tpu").check()
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(CtdError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.gpu
def test_one_epoch_on_the_gpu(tmp_path, monkeypatch):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from ctd_train.checkpoint import load_run

    tiny_teachers(monkeypatch)
    config = tiny_config(tiny_data(tmp_path / "data"), tmp_path / "run", epochs=1)
    config.device = "cuda"
    run_dir = train(config, progress=False, evaluate_test=False)
    assert next(load_run(run_dir).predictor.parameters()).device.type == "cpu"


def test_head_learning_rate_and_distillation_ratio_are_logged(data, tmp_path):
    """The head trains at lr x head_lr_scale (the encoder at lr), both decaying; each epoch logs
    lambda (L_CD + L_ED) / L_R, the number that says whether distillation weighs anything."""
    from ctd_train.methods import MethodConfig
    from ctd_train.trainer import build_optimizer, head_parameter_ids, prepare

    method = MethodConfig(name="ctd-com", lambda_=0.5, head_channels=16, hg_stacks=1, loss_reduction="mean",
                          ed_features="pooled")
    config = dataclasses.replace(tiny_config(data, tmp_path / "run", epochs=2, head_lr_scale=10.0), method=method)
    setup = prepare(config)
    optimizer = build_optimizer(setup)
    rates = sorted(g["base_lr"] for g in optimizer.param_groups)
    assert rates == pytest.approx([1e-3, 1e-2])
    head = head_parameter_ids(setup.method)
    assert head and all(id(p) in head for p in setup.method.predictor.head.parameters())
    assert not any(id(p) in head for p in setup.method.predictor.encoder.parameters())

    run = train(config, progress=False)
    rows = _metrics(run)
    for r in rows:
        assert r["ld_ratio"] == pytest.approx(0.5 * (r["l_cd"] + r["l_ed"]) / r["l_r"], rel=1e-6)
    saved = json.loads((run / "config.json").read_text())
    assert saved["head_lr_scale"] == 10.0
    assert saved["method"]["loss_reduction"] == "mean" and saved["method"]["ed_features"] == "pooled"


def test_plain_fine_tuning_logs_no_distillation_ratio(data, tmp_path):
    run = train(tiny_config(data, tmp_path / "run", method="ft", epochs=1), progress=False)
    assert "ld_ratio" not in _metrics(run)[0]


@pytest.mark.parametrize("field,value", [("lr", float("nan")), ("margin", float("nan")),
                                         ("head_lr_scale", 0.0), ("lr", float("inf")), ("pfl_weight", 0.0),
                                         ("pfl_length_weight", -1.0), ("select", "auc")])
def test_non_finite_options_are_refused_before_anything_is_written(data, tmp_path, field, value):
    out = tmp_path / "run"
    with pytest.raises(CtdError, match=field):
        train(tiny_config(data, out, epochs=1, **{field: value}), progress=False)
    assert not out.exists()


def test_pfl_weight_is_saved_and_changes_what_is_learned(data, tmp_path):
    """The PFL pair's loss weight reaches the heatmap loss: the same seed with weight 5 ends with
    other weights and another L_R, and the saved config names it."""
    a = train(tiny_config(data, tmp_path / "a", epochs=1, method="ft"), progress=False, evaluate_test=False)
    b = train(tiny_config(data, tmp_path / "b", epochs=1, method="ft", pfl_weight=5.0), progress=False,
              evaluate_test=False)
    assert json.loads((a / "config.json").read_text())["pfl_weight"] == 1.0
    assert json.loads((b / "config.json").read_text())["pfl_weight"] == 5.0
    assert _metrics(b)[0]["l_r"] > _metrics(a)[0]["l_r"]   # the two corners count five times
    wa, wb = _weights(a / LAST), _weights(b / LAST)
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


def test_pfl_length_term_is_logged_saved_and_trained(data, tmp_path):
    """--pfl-length-weight adds l_pfl to the loss and to metrics.jsonl, the config names it, and it
    changes what is learned; off (0), no l_pfl is logged."""
    a = train(tiny_config(data, tmp_path / "a", epochs=1, method="ft", pfl_length_weight=0.0), progress=False,
              evaluate_test=False)
    b = train(tiny_config(data, tmp_path / "b", epochs=1, method="ft", pfl_length_weight=50.0), progress=False,
              evaluate_test=False)
    assert json.loads((b / "config.json").read_text())["pfl_length_weight"] == 50.0
    ma, mb = _metrics(a)[0], _metrics(b)[0]
    assert "l_pfl" not in ma and 0.0 < mb["l_pfl"] < 5.0
    assert mb["loss"] == pytest.approx(mb["l_r"] + 50.0 * mb["l_pfl"], rel=1e-4)
    wa, wb = _weights(a / LAST), _weights(b / LAST)
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("select,best", [("me", 3), ("pfl", 2)])
def test_select_keeps_the_epoch_best_on_its_validation_number(data, tmp_path, monkeypatch, select, best):
    """checkpoint_best.pt is the epoch with the lowest validation ME (the default) or mean |PFL
    error| (--select pfl). The validation numbers are scripted so that the two disagree."""
    import ctd_train.trainer as trainer_module

    real = trainer_module._validate
    scripted = iter([(0.10, 0.30), (0.20, 0.10), (0.05, 0.20)])   # (ME, |PFL error|) of epochs 1, 2, 3

    def validate(setup, predictor):
        me, pfl = next(scripted)
        return {**real(setup, predictor), "val_me_pfl": me, "val_pfl_abs": pfl}

    monkeypatch.setattr(trainer_module, "_validate", validate)
    run = train(tiny_config(data, tmp_path / "run", epochs=3, method="ft", select=select), progress=False,
                evaluate_test=False)
    assert [r["val_pfl_abs"] for r in _metrics(run)] == [0.30, 0.10, 0.20]
    assert torch.load(run / "checkpoint_best.pt", map_location="cpu", weights_only=False)["epoch"] == best
    assert json.loads((run / "config.json").read_text())["select"] == select


def test_validation_logs_the_mean_abs_pfl_error(data, tmp_path):
    run = train(tiny_config(data, tmp_path / "run", epochs=1, method="ft"), progress=False, evaluate_test=False)
    rec = _metrics(run)[0]
    assert 0.0 <= rec["val_pfl_abs"] < 10.0 and rec["val_pfl_abs"] != rec["val_me_pfl"]


def test_the_recipe_has_the_pfl_length_term_and_older_saved_configs_do_not():
    """The default is the recipe's weight; a config.json written before the term existed lacks the
    field and trained without it, so it reads back as 0 (resuming it must not add the term)."""
    from ctd_train.config import TrainConfig

    assert TrainConfig(data="d", out="o").pfl_length_weight == 20.0
    saved = TrainConfig(data="d", out="o").to_dict()
    assert TrainConfig.from_dict(saved).pfl_length_weight == 20.0
    del saved["pfl_length_weight"]
    assert TrainConfig.from_dict(saved).pfl_length_weight == 0.0
