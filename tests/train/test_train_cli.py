"""`ctd train` and `ctd evaluate` through the root CLI (tiny fake teacher, synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctd_runtime.cli import build_app, main
from tests.train._tiny_training import TINY, TINY_NOCLS, tiny_data, tiny_teachers

def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--out", str(out), "--teacher", TINY, "--method", "ctd-com",
            "--input-size", "64", "--head-channels", "16", "--epochs", "1", "--val-subjects", "1",
            "--test-subjects", "1", "--threads", "1", "--decode", "argmax", "--no-progress", *extra]


@pytest.fixture()
def data(tmp_path, monkeypatch):
    tiny_teachers(monkeypatch)
    return tiny_data(tmp_path / "data")


def test_train_then_evaluate(data, tmp_path):
    runner = CliRunner()
    app = build_app()
    run = tmp_path / "run"
    res = runner.invoke(app, _train_args(data, run, "--seed", "3", "--lambda", "0.01", "--mu", "3",
                                         "--train-images", "3"))
    assert res.exit_code == 0, res.output + repr(res.exception)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["seed"] == 3 and cfg["method"]["lambda_"] == 0.01 and cfg["method"]["mu"] == 3.0
    assert cfg["train_images"] == 3 and cfg["epochs"] == 1 and cfg["batch_size"] == 2
    assert (run / "eval_test.json").is_file() and (run / "ced.png").is_file()

    res = runner.invoke(app, ["evaluate", str(run), "--decode", "quarter", "--threshold", "0.2"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    out = " ".join(res.output.split())
    for text in ("ME +- SD", "FR", "AUC", "threshold 0.2 pfl", "per-landmark", "r_endocanthion", "PFL error",
                 "eval_test_quarter_pfl0.2.csv", "ced_quarter_pfl0.2.png"):
        assert text in out, text
    assert (run / "eval_test_quarter_pfl0.2.csv").is_file()

    res = runner.invoke(app, ["evaluate", str(run), "--unit", "mm", "--pixel-spacing", "0.25", "--split", "val",
                              "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "threshold 0.1 mm" in " ".join(res.output.split())
    assert (tmp_path / "ev" / "eval_val_mm0.1.json").is_file()

    run2 = tmp_path / "run2"
    assert runner.invoke(app, _train_args(data, run2, "--method", "ft")).exit_code == 0
    res = runner.invoke(app, ["evaluate", "--compare", str(run), str(run2)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    out = " ".join(res.output.split())
    assert "CTD-Com" in out and "FT" in out and "threshold 0.1 pfl" in out
    md = (tmp_path / "compare.md").read_text()
    assert "| Method | ME +- SD | FR | AUC |" in md
    assert (tmp_path / "compare_ced.png").is_file()


def _main_error(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    return " ".join(capsys.readouterr().err.split())


def test_errors_exit_2_with_a_message(data, tmp_path, capsys):
    err = _main_error(_train_args(data, tmp_path / "r", "--method", "ctd-cd", "--teacher", TINY_NOCLS), capsys)
    assert "error:" in err and "has none" in err
    assert not (tmp_path / "r").exists()
    err = _main_error(["evaluate", str(tmp_path / "missing-run")], capsys)
    assert "run folder not found" in err
    err = _main_error(["evaluate", str(tmp_path), "--unit", "inch"], capsys)
    assert "unknown unit" in err
    err = _main_error(["evaluate", str(tmp_path), str(tmp_path)], capsys)
    assert "--compare" in err
    (tmp_path / "f").write_text("x")
    err = _main_error(_train_args(data, tmp_path / "f"), capsys)
    assert "not a folder" in err


def test_train_options_reach_the_saved_config(data, tmp_path):
    """Every recipe option given on the command line is in config.json; those left out take the
    dataclass defaults (one place for the recipe)."""
    run = tmp_path / "run"
    res = CliRunner().invoke(build_app(), _train_args(
        data, run, "--loss-reduction", "simplebaseline", "--ed-features", "pooled", "--head-lr-scale", "2",
        "--ema-decay", "0.99", "--crop", "schema", "--margin", "0.6", "--scale", "0.1", "--scale-max", "2.5", "--rotation", "5",
        "--shift", "0.02", "--decode", "dark"))
    assert res.exit_code == 0, res.output + repr(res.exception)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"]["loss_reduction"] == "simplebaseline" and cfg["method"]["ed_features"] == "pooled"
    assert cfg["head_lr_scale"] == 2.0 and cfg["crop"] == "schema" and cfg["margin"] == 0.6
    assert cfg["ema_decay"] == 0.99
    assert cfg["augment"]["scale"] == 0.1 and cfg["augment"]["scale_max"] == 2.5
    assert cfg["augment"]["rotation_deg"] == 5.0 and cfg["augment"]["shift"] == 0.02 and cfg["decode"] == "dark"
    from ctd_train.config import TrainConfig

    defaults = TrainConfig(data="", out="")
    assert cfg["lr"] == defaults.lr and cfg["crop_scale"] == defaults.crop_scale
    res = CliRunner().invoke(build_app(), _train_args(data, tmp_path / "bad", "--loss-reduction", "max"))
    assert res.exit_code != 0 and not (tmp_path / "bad").exists()


def test_evaluate_by_image_type_with_test_retest(data, tmp_path):
    """`--by` reads the per-image column from a metadata CSV; `--repeat 1,5` pairs each subject's
    two images and reports the model's and the annotation's PFL differences."""
    import csv as _csv

    runner, app = CliRunner(), build_app()
    run = tmp_path / "run"
    assert runner.invoke(app, _train_args(data, run, "--method", "ft")).exit_code == 0
    names = [r["image"] for r in _csv.DictReader((data / "annotations.csv").open())]
    subjects = [r["subject"] for r in _csv.DictReader((data / "annotations.csv").open())]
    meta = tmp_path / "meta.csv"
    seen: dict[str, int] = {}
    with meta.open("w", newline="") as f:
        w = _csv.writer(f)
        w.writerow(["image", "image_type"])
        for n, s in zip(names, subjects):
            seen[s] = seen.get(s, 0) + 1
            w.writerow([n, "1" if seen[s] == 1 else "5"])
    res = runner.invoke(app, ["evaluate", str(run), "--split", "all", "--by", "image_type", "--repeat", "1,5",
                              "--metadata", str(meta)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    text = " ".join(res.output.split())
    assert "errors by image_type" in text and "test-retest (image_type 1 vs 5, 4 subjects)" in text
    res = runner.invoke(app, ["evaluate", str(run), "--repeat", "1,5"])
    assert res.exit_code != 0 and "give --by too" in str(res.exception)
