"""Every numeric option is checked (finite, in range) before anything is written, and a start that
fails leaves nothing that blocks the corrected rerun."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_input._corpus import ctd, snapshot, temporaries
from tests.bad_input.conftest import TRAIN_ARGS
from tests.train._data_synth import make_folder

# option, value, what the error says
TRAIN_OPTIONS = [
    ("--lr", "nan", "lr must be a positive number, not nan"),
    ("--lr", "inf", "lr must be a positive number, not inf"),
    ("--lr", "-0.001", "lr must be a positive number"),
    ("--lr", "0", "lr must be a positive number"),
    ("--margin", "nan", "margin must be a number >= 0, not nan"),
    ("--margin", "-0.1", "margin must be a number >= 0"),
    ("--head-lr-scale", "nan", "head_lr_scale must be a positive number"),
    ("--ema-decay", "1", "ema_decay must be in [0, 1)"),
    ("--crop-scale", "inf", "crop_scale must be a positive number"),
    ("--lr-power", "nan", "lr_power must be a number >= 0"),
    ("--lambda", "nan", "lambda must be >= 0, not nan"),
    ("--lambda", "-1", "lambda must be >= 0"),
    ("--lambda", "inf", "lambda must be finite"),
    ("--mu", "0", "temperature mu must be > 0"),
    ("--mu", "nan", "temperature mu must be > 0"),
    ("--scale", "nan", "augment scale must be in [0, 1), not nan"),
    ("--scale", "1.5", "augment scale must be in [0, 1)"),
    ("--scale-max", "nan", "augment scale_max must be 0 (off) or in (1 - scale, 10]"),
    ("--rotation", "nan", "augment rotation_deg must be in [0, 180]"),
    ("--rotation", "270", "augment rotation_deg must be in [0, 180]"),
    ("--shift", "nan", "augment shift must be in [0, 0.5]"),
    ("--shift", "0.9", "augment shift must be in [0, 0.5]"),
    ("--epochs", "0", "epochs must be a positive number"),
    ("--batch-size", "0", "batch_size must be a positive number"),
    ("--input-size", "62", "not a multiple of the heatmap stride 4"),
    ("--threads", "0", "threads must be a positive number"),
    ("--threads", "-1", "threads must be a positive number"),
    ("--workers", "-1", "workers must be >= 0"),
    ("--val-subjects", "-1", "val_subjects must be 0 (the final fit: no validation) or a positive number"),
    ("--train-images", "0", "train_images must be a positive number"),
    ("--seed", "-1", "seed must be >= 0"),
    ("--head-channels", "0", "head_channels must be >= 1"),
    ("--hg-stacks", "0", "hg_stacks must be >= 1"),
    ("--decode", "soft", "unknown decode 'soft'"),
    ("--device", "gpu0", "device must be auto, cpu, cuda or cuda:N"),
]


def _replace(args: list[str], option: str, value: str) -> list[str]:
    args = list(args)
    if option in args:
        args[args.index(option) + 1] = value
        return args
    return args + [option, value]


@pytest.fixture
def data(tmp_path) -> Path:
    return make_folder(tmp_path / "data", n_images=8, n_subjects=4)[0]


@pytest.mark.parametrize("option, value, says", TRAIN_OPTIONS, ids=[f"{o} {v}" for o, v, _ in TRAIN_OPTIONS])
def test_train_option(option, value, says, data, tmp_path, capsys, tiny):
    out = tmp_path / "run"
    code, _, err = ctd(["train", "--data", data, "--out", out, *_replace(TRAIN_ARGS, option, value)], capsys)
    assert code == 2 and says in err, err
    assert "Traceback" not in err and not out.exists() and not temporaries(tmp_path)


def test_a_missing_gpu_leaves_no_run_files(data, tmp_path, capsys, tiny):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    out = tmp_path / "run"
    code, _, err = ctd(["train", "--data", data, "--out", out, *TRAIN_ARGS, "--device", "cuda"], capsys)
    assert code == 2 and "torch sees no CUDA device" in err
    assert not out.exists()


def test_a_first_epoch_that_fails_leaves_no_run(data, tmp_path, capsys, tiny, monkeypatch):
    """`the loss became nan ... try a lower learning rate`: the rerun with a lower one must start."""
    from ctd_runtime.errors import CtdError
    from ctd_train import trainer

    def nan_loss(*args, **kwargs):
        raise CtdError("the loss became nan at epoch 1, iteration 1; try a lower learning rate than 1000")

    monkeypatch.setattr(trainer, "_train_epoch", nan_loss)
    out = tmp_path / "run"
    code, _, err = ctd(["train", "--data", data, "--out", out, *TRAIN_ARGS, "--lr", "1000"], capsys)
    assert code == 2 and "the loss became nan" in err
    assert not out.exists(), "config.json and split.json of a run that never trained are removed"
    out.mkdir()  # a folder the user made: kept, and empty again
    code, _, _ = ctd(["train", "--data", data, "--out", out, *TRAIN_ARGS, "--lr", "1000"], capsys)
    assert code == 2 and list(out.iterdir()) == []


def test_a_killed_start_does_not_block_a_corrected_rerun(data, tmp_path, tiny):
    """config.json + split.json without a checkpoint (killed in its first epoch): another config may start."""
    from ctd_train.trainer import _write_run_files, prepare
    from tests.train._tiny_training import tiny_config

    out = tmp_path / "run"
    _write_run_files(prepare(tiny_config(data, out, lr=1000.0)))  # what the killed start had written
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "split.json"]
    setup = prepare(tiny_config(data, out, lr=1e-3))
    assert setup.config.lr == 1e-3 and not setup.resume


DATA_SHOW_OPTIONS = [("--margin", "nan", "--margin must be a finite number >= 0, not nan"),
                     ("--margin", "-1", "--margin must be a finite number >= 0"),
                     ("--margin", "inf", "--margin must be a finite number >= 0, not inf"),
                     ("--n", "0", "Invalid value for '--n'"),
                     ("--seed", "-1", "Invalid value for '--seed'")]


@pytest.mark.parametrize("option, value, says", DATA_SHOW_OPTIONS, ids=[f"{o} {v}" for o, v, _ in DATA_SHOW_OPTIONS])
def test_data_show_option(option, value, says, data, tmp_path, capsys):
    out = tmp_path / "crops"
    code, _, err = ctd(["data", "show", data, "--out", out, option, value], capsys)
    assert code == 2 and says in err, err
    assert not out.exists()


EVALUATE_OPTIONS = [
    (["--threshold", "nan"], "--threshold must be a finite number > 0, not nan"),
    (["--threshold", "inf"], "--threshold must be a finite number > 0, not inf"),
    (["--threshold", "0"], "--threshold must be a finite number > 0"),
    (["--pixel-spacing", "0", "--unit", "mm"], "--pixel-spacing must be a finite number > 0"),
    (["--pixel-spacing", "nan", "--unit", "mm"], "--pixel-spacing must be a finite number > 0, not nan"),
    (["--unit", "mm"], "errors in mm need --pixel-spacing"),
    (["--unit", "furlong"], "unknown unit 'furlong'"),
    (["--decode", "soft"], "unknown decode 'soft'"),
    (["--checkpoint", "middle"], "unknown checkpoint 'middle'"),
    (["--split", "holdout"], "unknown split 'holdout'"),
]


@pytest.mark.parametrize("args, says", EVALUATE_OPTIONS, ids=[" ".join(a) for a, _ in EVALUATE_OPTIONS])
def test_evaluate_option(args, says, tmp_path, capsys, tiny, trained_run):
    before = snapshot(trained_run)
    code, _, err = ctd(["evaluate", trained_run, "--out", tmp_path / "o", *args], capsys)
    assert code == 2 and says in err, err
    assert not (tmp_path / "o").exists() and snapshot(trained_run) == before


EXPORT_OPTIONS = [
    (["--tolerance", "nan"], "tolerance must be a finite number > 0 px, not nan"),
    (["--tolerance", "inf"], "tolerance must be a finite number > 0 px, not inf"),
    (["--tolerance", "0"], "tolerance must be a finite number > 0 px"),
    (["--max-images", "0"], "Invalid value for '--max-images'"),
    (["--calib-images", "0"], "Invalid value for '--calib-images'"),
    (["--threads", "0"], "Invalid value for '--threads'"),
    (["--precision", "fp8"], "unknown precision 'fp8'"),
    (["--calibration", "kl"], "unknown calibration method 'kl'"),
    (["--decode", "soft"], "unknown decode 'soft'"),
    (["--checkpoint", "middle"], "which checkpoint: best or last, not 'middle'"),
    (["--raw", "--heatmaps"], "--raw exports heatmaps only"),
    (["--raw", "--engine"], "--engine does not go with --raw"),
    (["--raw", "--precision", "int8"], "--raw exports the plain FP32 network only"),
]


@pytest.mark.parametrize("args, says", EXPORT_OPTIONS, ids=[" ".join(a) for a, _ in EXPORT_OPTIONS])
def test_export_option(args, says, tmp_path, capsys, tiny, trained_run):
    code, _, err = ctd(["export", trained_run, "--out", tmp_path / "o", *args], capsys)
    assert code == 2 and says in err, err
    assert not (tmp_path / "o").exists()


def test_teacher_check_size(capsys):
    code, _, err = ctd(["teacher", "check", "tiny-test", "--size", "0"], capsys)
    assert code == 2 and "Invalid value for '--size'" in err


INFER_OPTIONS = [
    (["--spacing", "0"], "--spacing", "spacing must be a finite number > 0"),
    (["--spacing", "-0.2"], "--spacing", "spacing must be a finite number > 0"),
    (["--spacing", "nan"], "--spacing", "spacing must be a finite number > 0"),
    (["--box", "1,2,nan,4"], "", "a box is four finite numbers x, y, w, h with w, h > 0"),
    (["--box", "0,0,-5,5"], "", "a box is four finite numbers x, y, w, h with w, h > 0"),
    (["--max-passes", "0"], "", "Invalid value for '--max-passes'"),
    (["--threads", "0"], "", "Invalid value for '--threads'"),
]


@pytest.mark.parametrize("args, where, says", INFER_OPTIONS, ids=[" ".join(a) for a, _, _ in INFER_OPTIONS])
def test_infer_option(args, where, says, tmp_path, capsys, tiny_model):
    from tests.runtime._station_data import blob_png

    blob_png(tmp_path / "a.png", 1)
    code, _, err = ctd(["infer", tiny_model, tmp_path / "a.png", "--out", tmp_path / "o", *args], capsys)
    assert code == 2 and says in err and where in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args", [["--poll", "nan"], ["--poll", "inf"], ["--poll", "0"], ["--settle", "-1"]],
                         ids=lambda a: " ".join(a))
def test_watch_option_refused_before_the_model_loads(args, tmp_path, capsys, monkeypatch):
    from ctd_runtime.cli import infer as infer_cli

    def never(*a, **k):
        raise AssertionError("the model was opened before the options were checked")

    monkeypatch.setattr(infer_cli, "Landmarker", never)
    (tmp_path / "watched").mkdir()
    code, _, err = ctd(["infer", tmp_path / "model.onnx", "--watch", tmp_path / "watched", *args], capsys)
    assert code == 2 and "watch: poll_s must be a finite number > 0" in err, err
    assert list((tmp_path / "watched").iterdir()) == []
