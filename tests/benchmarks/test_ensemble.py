"""benchmarks/ensemble.py on two tiny runs of one split: every subset is scored, a pair's score is
that of the mean of its members' landmarks, and members trained on another split are refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import ensemble  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs trained once for the module (the tiny teachers stay registered while it runs)."""
    from tests.train._tiny_training import tiny_teachers

    mp = pytest.MonkeyPatch()
    tiny_teachers(mp)
    try:
        yield _train_runs(tmp_path_factory.mktemp("ensemble"))
    finally:
        mp.undo()


def _train_runs(tmp: Path) -> Path:
    from ctd_train.trainer import train
    from tests.train._tiny_training import tiny_config, tiny_data

    data = tiny_data(tmp / "data")
    root = tmp / "runs"
    for name, method, epochs in (("ft", "ft", 1), ("ft2", "ft", 2)):
        train(tiny_config(data, root / f"{name}-s0", method=method, epochs=epochs), progress=False, evaluate_test=False)
    train(tiny_config(data, root / "other-s0", method="ft", epochs=1, seed=1), progress=False, evaluate_test=False)
    train(tiny_config(data, root / "all58-s0", method="ft", epochs=1, schema="imm58"), progress=False,
          evaluate_test=False)
    train(tiny_config(data, root / "final-s0", method="ft", epochs=1, val_subjects=0), progress=False,
          evaluate_test=False)
    return root


def test_a_final_fit_is_scored_on_test_only(runs, tmp_path):
    """A member trained without validation (--val-subjects 0) shares the test split, not the val
    one: every subset of the seed is scored on test alike, and the val cells are empty."""
    out = tmp_path / "res" / "final"
    assert ensemble.main(["--root", str(runs), "--members", "ft", "final", "--seeds", "0", "--threads", "1",
                          "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["seeds"]["0"]
    assert all(rows[s]["val"] is None for s in ("ft", "final", "ft+final"))
    assert rows["final"]["test"]["pfl_abs"] != rows["ft"]["test"]["pfl_abs"]
    assert ensemble.main(["--root", str(runs), "--members", "ft", "--seeds", "0", "--threads", "1",
                          "--out", str(tmp_path / "res" / "alone")]) == 0
    alone = json.loads((tmp_path / "res" / "alone.json").read_text())["seeds"]["0"]["ft"]
    assert alone["val"] is not None and alone["test"]["pfl_abs"] == pytest.approx(rows["ft"]["test"]["pfl_abs"])
    table = out.with_suffix(".md").read_text().splitlines()
    final_row = next(line for line in table if line.startswith("| final |"))
    assert final_row.split("|")[2].strip() == "—" and final_row.split("|")[5].strip().endswith("%")


def test_every_subset_is_scored_from_the_mean_of_its_members(runs, tmp_path, capsys):
    out = tmp_path / "res" / "ens"
    assert ensemble.main(["--root", str(runs), "--members", "ft", "ft2", "--seeds", "0", "--threads", "1",
                          "--out", str(out)]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    rows = doc["seeds"]["0"]
    assert set(rows) == {"ft", "ft2", "ft+ft2"}
    a, b = (ensemble.member_predictions(runs / f"{n}-s0") for n in ("ft", "ft2"))
    ref = a["test"]
    pair_pred = (a["test"]["pred"] + b["test"]["pred"]) / 2
    expected, _ = ensemble.stage_result(pair_pred, ref["gt"], ref["subjects"], ref["types"], ref["pair"])
    assert rows["ft+ft2"]["test"]["pfl_abs"] == pytest.approx(expected["pfl_abs"])
    assert rows["ft"]["val"]["pfl_abs"] != rows["ft2"]["val"]["pfl_abs"]
    err = np.linalg.norm(pair_pred - ref["gt"], axis=-1).mean(1)
    pfl = np.linalg.norm(ref["gt"][:, ref["pair"][0]] - ref["gt"][:, ref["pair"][1]], axis=-1)
    assert rows["ft+ft2"]["test"]["me"] == pytest.approx(float(np.mean(err / pfl)))
    table = out.with_suffix(".md").read_text()
    assert "| ft+ft2 |" in table and table in capsys.readouterr().out


def test_members_of_another_split_are_refused(runs, tmp_path):
    with pytest.raises(SystemExit, match="share its split"):
        ensemble.main(["--root", str(runs), "--members", "ft", "other", "--seeds", "0", "--threads", "1",
                       "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="no finished run"):
        ensemble.main(["--root", str(runs), "--members", "ft", "absent", "--seeds", "0", "--out", str(tmp_path / "y")])


def test_a_run_of_a_larger_schema_is_scored_on_the_common_points(runs, tmp_path):
    """An imm58 member beside imm14 ones: refused without --schema, and with --schema imm14 its
    landmarks are its own prediction at imm14's source points (so ME and PFL are comparable)."""
    with pytest.raises(SystemExit, match="--schema"):
        ensemble.main(["--root", str(runs), "--members", "ft", "all58", "--seeds", "0", "--threads", "1",
                       "--out", str(tmp_path / "x")])
    from ctd_runtime.schema import get_schema

    full = ensemble.member_predictions(runs / "all58-s0")
    common = ensemble.member_predictions(runs / "all58-s0", "imm14")
    columns = list(get_schema("imm14").source_indices)
    assert np.array_equal(common["test"]["pred"], full["test"]["pred"][:, columns])
    assert np.array_equal(common["test"]["gt"], ensemble.member_predictions(runs / "ft-s0")["test"]["gt"])
    assert common["test"]["pair"] == (4, 0) and full["test"]["pair"] == (25, 21)
    out = tmp_path / "res" / "mixed"
    assert ensemble.main(["--root", str(runs), "--members", "ft", "all58", "--seeds", "0", "--threads", "1",
                          "--schema", "imm14", "--out", str(out)]) == 0
    assert "ft+all58" in json.loads(out.with_suffix(".json").read_text())["seeds"]["0"]
    with pytest.raises(SystemExit, match="lacks source points"):
        ensemble.member_predictions(runs / "ft-s0", "imm58")


def test_members_can_be_scored_at_their_last_epoch(runs, tmp_path):
    """--checkpoint last scores each member's last checkpoint (not its validation choice)."""
    import torch

    from cascade import stage_result

    out = tmp_path / "res" / "last"
    assert ensemble.main(["--root", str(runs), "--members", "ft2", "--seeds", "0", "--threads", "1",
                          "--checkpoint", "last", "--out", str(out)]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["checkpoint"] == "last" and "last epoch" in out.with_suffix(".md").read_text()
    last = ensemble.member_predictions(runs / "ft2-s0", checkpoint="last")["test"]
    expected, _ = stage_result(last["pred"], last["gt"], last["subjects"], last["types"], last["pair"])
    assert doc["seeds"]["0"]["ft2"]["test"]["me"] == pytest.approx(expected["me"], rel=1e-9)
    best_epoch = torch.load(runs / "ft2-s0" / "checkpoint_best.pt", map_location="cpu", weights_only=False)["epoch"]
    if best_epoch != 2:     # the two checkpoints hold other weights: the scores must differ
        best = ensemble.member_predictions(runs / "ft2-s0")["test"]
        assert not np.allclose(best["pred"], last["pred"])
