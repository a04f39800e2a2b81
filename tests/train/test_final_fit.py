"""The final fit (`--val-subjects 0`): every non-test subject trains, nothing validates, the last
epoch is the checkpoint kept, the test subjects are those of the runs that chose the recipe, and
what reads a validation split (evaluate, the export's parity images) says so or falls back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ctd_runtime.errors import CtdError
from ctd_train.checkpoint import BEST, LAST
from ctd_train.config import TrainConfig
from ctd_train.trainer import train
from tests.train._tiny_training import tiny_config, tiny_data, tiny_teachers


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(final fit, the same seed with one validation subject, data), one tiny training each."""
    mp = pytest.MonkeyPatch()
    tiny_teachers(mp)
    try:
        root = tmp_path_factory.mktemp("final-fit")
        data = tiny_data(root / "data")
        final = train(tiny_config(data, root / "final", method="ft", epochs=2, val_subjects=0), progress=False)
        usual = train(tiny_config(data, root / "usual", method="ft", epochs=1, val_subjects=1), progress=False,
                      evaluate_test=False)
        yield final, usual, data
    finally:
        mp.undo()


def _split(run: Path) -> dict[str, list[str]]:
    return json.loads((run / "split.json").read_text())


def test_the_final_fit_trains_on_every_non_test_subject_and_tests_on_the_same_ones(runs):
    final, usual, _ = runs
    a, b = _split(final), _split(usual)
    assert a["val"] == [] and a["test"] == b["test"]
    assert sorted(a["train"]) == sorted(b["train"] + b["val"])
    assert json.loads((final / "config.json").read_text())["val_subjects"] == 0


def test_the_final_fit_keeps_its_last_epoch_and_logs_no_validation(runs):
    final, _, _ = runs
    rows = [json.loads(line) for line in (final / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert not any(k.startswith("val_") for r in rows for k in r), "a final fit has nothing to validate on"
    best = torch.load(final / BEST, map_location="cpu", weights_only=False)
    last = torch.load(final / LAST, map_location="cpu", weights_only=False)
    assert best["epoch"] == last["epoch"] == 2
    assert all(torch.equal(best["predictor"][k], last["predictor"][k]) for k in best["predictor"])
    ev = json.loads((final / "eval_test.json").read_text())
    assert ev["split"] == "test" and ev["n_images"] == 2


def test_evaluating_a_final_fit_on_validation_says_why_there_is_none(runs):
    from ctd_train.evaluate import evaluate_run

    final, _, _ = runs
    with pytest.raises(CtdError, match="final fit"):
        evaluate_run(final, split="val", write=False)


def test_the_export_parity_gate_of_a_final_fit_uses_its_training_images(runs):
    from ctd_export.validation_images import validation_set
    from ctd_train.checkpoint import load_run

    final, usual, _ = runs
    images, crops, source = validation_set(load_run(final), None, 4)
    assert source.startswith("training split") and "(6 images)" in source
    assert len(images) == 4 and crops.shape == (4, 2, 3)
    assert validation_set(load_run(usual), None, 4)[2].startswith("validation split")


@pytest.mark.parametrize("bad", [-1, float("nan")])
def test_a_negative_validation_count_is_refused(bad):
    with pytest.raises(CtdError, match="val_subjects"):
        TrainConfig(data="d", out="o", val_subjects=bad).check()


def test_zero_validation_subjects_is_the_final_fit():
    assert TrainConfig(data="d", out="o", val_subjects=0).final_fit
    assert not TrainConfig(data="d", out="o").final_fit and not TrainConfig(data="d", out="o", val_subjects=2).final_fit


@pytest.mark.parametrize("script,argv", [
    ("lambda_sweep", ["--variants", "ft:method=ft", "--val-subjects", "0"]),
    ("paper_table", ["--val-subjects", "0"]),
])
def test_the_benchmarks_that_choose_on_validation_refuse_a_final_fit(script, argv, capsys):
    import importlib
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as e:
        module.parse_args(argv)
    assert e.value.code == 2 and "validation" in capsys.readouterr().err
