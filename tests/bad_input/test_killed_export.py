"""A killed or stopped `ctd export` leaves nothing half-done: no temporary survives the next run,
export_config.json lists what was written (not what was planned), and the rerun, without
--force, makes only the variants that are missing. Its progress shows in a pipe as it goes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.bad_input._corpus import ctd, snapshot, temporaries

REPO = Path(__file__).resolve().parents[2]
FAST = ["--max-images", "4", "--calib-images", "3"]


# scenario -> (where the child stops, the signal, its --precision)
SCENARIOS = {
    "sigkill at int8": ("int8", signal.SIGKILL, "fp32,fp16,int8"),
    "sigkill at parity": ("parity", signal.SIGKILL, "fp32"),
}


@pytest.fixture(scope="module")
def stopped(trained_run, tmp_path_factory) -> dict[str, tuple[int, str, Path]]:
    """Every scenario's (exit code, piped stdout, output folder): a real process each (torch and
    all, ~5 s), killed at its stop point; the children run side by side."""
    root = tmp_path_factory.mktemp("stopped-exports")
    children = {}
    for i, (name, (point, sig, precision)) in enumerate(SCENARIOS.items()):
        out, marker = root / f"export{i}", root / f"at-{i}"
        env = dict(os.environ, CTD_TEST_STOP_AT=point, CTD_TEST_MARKER=str(marker))
        proc = subprocess.Popen([sys.executable, "-m", "tests.bad_input._killable_export", "export", str(trained_run),
                                 "--out", str(out), *FAST, "--precision", precision], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        children[name] = (proc, marker, sig, out)
    deadline = time.monotonic() + 120
    waiting = dict(children)
    while waiting:
        for name, (proc, marker, sig, _) in list(waiting.items()):
            if marker.exists():
                proc.send_signal(sig)
                del waiting[name]
            elif proc.poll() is not None or time.monotonic() > deadline:
                for p, *_ in children.values():
                    p.kill()
                pytest.fail(f"{name}: the export never reached its stop: {proc.communicate()[0]}")
        time.sleep(0.05)
    return {name: (proc.wait(timeout=60), proc.communicate()[0], out)
            for name, (proc, _, _, out) in children.items()}


def _config(out: Path) -> dict:
    return json.loads((out / "export_config.json").read_text())


def _rerun_completes(run: Path, out: Path, capsys, precision: str, kept: list[str]) -> str:
    """The rerun without --force: exit 0, the kept files untouched, every variant there, no temporary."""
    before = {name: (out / name).stat().st_mtime_ns for name in kept}
    code, said, err = ctd(["export", run, "--out", out, *FAST, "--precision", precision], capsys)
    assert code == 0, err
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == before, "kept files are not redone"
    files = ["model.onnx"] + [f"model.{p}.onnx" for p in precision.split(",") if p != "fp32"]
    assert sorted(p.name for p in out.iterdir()) == sorted(files + ["export_config.json"])
    assert not temporaries(out)
    config = _config(out)
    assert config["complete"] and set(config["steps"].values()) <= {"done"} and set(config["files"]) == set(files)
    return said


def test_killed_during_int8_calibration(stopped, capsys, tiny, trained_run):
    code, piped, out = stopped["sigkill at int8"]
    assert code == -signal.SIGKILL
    # progress reached the pipe as it went, step by step
    for line in ("fp32: done in", "parity: done in", "fp16: done in", "int8: INT8 variant", "int8 calibration: 0/3"):
        assert line in piped, piped
    stale = temporaries(out)
    assert [p.name.split(".")[1:4] for p in stale] == [["model", "int8", "onnx"]] and stale[0].is_dir()
    config = _config(out)  # what is on disk, not what was planned
    assert config["artifacts"] == {"onnx": "model.onnx", "fp16": "model.fp16.onnx"}
    assert config["steps"] == {"fp16": "done", "int8": "pending"} and not config["complete"]
    assert not (out / "model.int8.onnx").exists()
    said = _rerun_completes(trained_run, out, capsys, "fp32,fp16,int8", kept=["model.onnx", "model.fp16.onnx"])
    assert "fp16: already written by the previous export (model.fp16.onnx), kept" in said
    assert "int8 calibration: 3/3" in said  # capsys is no terminal: plain progress lines


def test_killed_during_the_parity_gate(stopped, capsys, tiny, trained_run):
    code, _, out = stopped["sigkill at parity"]
    assert code == -signal.SIGKILL
    assert [p.name.split(".")[1:3] for p in temporaries(out)] == [["model", "onnx"]]  # the 38 MB of the issue
    assert not (out / "model.onnx").exists() and not (out / "export_config.json").exists()
    _rerun_completes(trained_run, out, capsys, "fp32", kept=[])


def test_stopped_with_sigterm_cleans_up_itself(tmp_path, capsys, tiny, trained_run, monkeypatch):
    """SIGTERM (what a service manager or `kill` sends) to this very process during the INT8
    calibration: `ctd` turns it into an exit through every `finally` (exit 143)."""
    from ctd_export.calibration import FusedCalibrationReader

    real = FusedCalibrationReader.get_next

    def get_next(self):
        if self._given == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self)

    handler = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "export"
    with monkeypatch.context() as m:
        m.setattr(FusedCalibrationReader, "get_next", get_next)
        code, said, _ = ctd(["export", trained_run, "--out", out, *FAST, "--precision", "fp32,int8"], capsys)
    assert code == 128 + signal.SIGTERM and "int8: failed after" in said
    assert signal.getsignal(signal.SIGTERM) == handler, "ctd's handler holds only while the command runs"
    assert not temporaries(out), "SIGTERM goes through every finally"
    assert _config(out)["steps"] == {"int8": "failed"}
    _rerun_completes(trained_run, out, capsys, "fp32,int8", kept=["model.onnx"])


@pytest.fixture
def exported(tmp_path, capsys, tiny, trained_run) -> Path:
    out = tmp_path / "export"
    assert ctd(["export", trained_run, "--out", out, *FAST, "--precision", "fp32"], capsys)[0] == 0
    return out


def test_a_rerun_with_other_options_is_refused(exported, capsys, tiny, trained_run):
    before = snapshot(exported)
    code, _, err = ctd(["export", trained_run, "--out", exported, "--decode", "dark"], capsys)
    assert code == 2 and "holds a model.onnx of another export: decode argmax (this export: dark)" in err
    assert "--force" in err and snapshot(exported) == before


def test_a_model_of_another_run_is_refused(exported, tmp_path, capsys, tiny, run_copy):
    ckpt = torch.load(run_copy / "checkpoint_best.pt", weights_only=True)
    ckpt["run_id"] = "another-run"
    torch.save(ckpt, run_copy / "checkpoint_best.pt")
    before = snapshot(exported)
    code, _, err = ctd(["export", run_copy, "--out", exported, *FAST, "--precision", "fp32"], capsys)
    assert code == 2 and "another export: run " in err and "(this export: another-run)" in err
    assert snapshot(exported) == before


def test_a_model_without_its_export_config_is_refused(exported, capsys, tiny, trained_run):
    (exported / "export_config.json").unlink()
    before = snapshot(exported)
    code, _, err = ctd(["export", trained_run, "--out", exported, *FAST, "--precision", "fp32"], capsys)
    assert code == 2 and "already holds a model.onnx without the export_config.json of its export" in err
    assert snapshot(exported) == before
    assert ctd(["export", trained_run, "--out", exported, *FAST, "--precision", "fp32", "--force"], capsys)[0] == 0


def test_a_model_of_another_checkpoint_is_refused(exported, capsys, tiny, run_copy):
    """Same run id, other weights (the last checkpoint, or training resumed since): other bytes."""
    _perturbed(run_copy / "checkpoint_best.pt")
    before = snapshot(exported)
    code, _, err = ctd(["export", run_copy, "--out", exported, *FAST, "--precision", "fp32"], capsys)
    assert code == 2 and "differs from the graph this export builds" in err
    assert snapshot(exported) == before


def _perturbed(path: Path) -> None:
    ckpt = torch.load(path, weights_only=True)
    name = next(k for k, v in ckpt["predictor"].items() if v.is_floating_point())
    ckpt["predictor"][name] = ckpt["predictor"][name] + 0.01
    torch.save(ckpt, path)
