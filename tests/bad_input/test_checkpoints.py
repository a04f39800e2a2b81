"""A checkpoint that cannot be read: `ctd evaluate` and `ctd export` print one line naming the file
("truncated, or not a ctd checkpoint"), never PyTorch's text or its advice to load with
weights_only=False (which would run whatever the file holds), and write nothing."""

from __future__ import annotations

import pickle

import pytest

from tests.bad_input._corpus import ctd, snapshot, temporaries

CHECKPOINT_FAULTS = {
    "truncated to a third": lambda b: b[: len(b) // 3],
    "empty": lambda b: b"",
    "garbage": lambda b: b"\x00garbage" * 40,
    "a foreign pickle": lambda b: pickle.dumps({"weights": {1, 2, 3}}, protocol=4),
}


@pytest.mark.parametrize("fault", list(CHECKPOINT_FAULTS))
@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_an_unreadable_checkpoint(fault, command, tmp_path, capsys, tiny, run_copy):
    ckpt = run_copy / "checkpoint_best.pt"
    ckpt.write_bytes(CHECKPOINT_FAULTS[fault](ckpt.read_bytes()))
    before = snapshot(run_copy)
    out = tmp_path / "out"
    code, stdout, err = ctd([command, run_copy, "--out", out], capsys)
    assert code == 2
    assert err == (f"error: {ckpt}: cannot read the checkpoint ({ckpt.stat().st_size} bytes): truncated, or not a "
                   "ctd checkpoint"), err
    assert "weights_only" not in err + stdout and "Traceback" not in err
    assert not out.exists() and snapshot(run_copy) == before and not temporaries(tmp_path)


def test_a_missing_checkpoint_and_run(tmp_path, capsys, tiny, run_copy):
    (run_copy / "checkpoint_best.pt").unlink()
    code, _, err = ctd(["export", run_copy, "--out", tmp_path / "o"], capsys)
    assert code == 2 and f"{run_copy / 'checkpoint_best.pt'}: checkpoint not found" in err
    code, _, err = ctd(["evaluate", tmp_path / "no-run"], capsys)
    assert code == 2 and f"{tmp_path / 'no-run'}: run folder not found" in err
    assert not (tmp_path / "o").exists()
