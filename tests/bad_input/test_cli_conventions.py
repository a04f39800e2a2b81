"""CLI conventions a user meets before any input is read: help lists only commands that exist,
boolean options are flags (no `--force <bool>`), one name for one choice across commands, and
argument checks come before optional heavy imports (TensorRT, torch)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bad_input._corpus import ctd
from tests.runtime.test_no_torch import _block

COMMAND_LIKE = ("train", "evaluate", "export", "infer", "bench", "build-engine", "data", "teacher")


def _help(args: list[str], capsys) -> str:
    code, out, err = ctd([*args, "--help"], capsys)
    assert code == 0, err
    return out


def _listed(help_text: str) -> list[str]:
    rows = re.findall(r"^│ (\S+)\s{2,}", help_text, flags=re.M)
    return [r for r in rows if not r.startswith("-")]


def _every_command(capsys) -> list[list[str]]:
    commands = [[name] for name in _listed(_help([], capsys))]
    for group in (["data"], ["teacher"]):
        commands += [group + [sub] for sub in _listed(_help(group, capsys))]
    return commands


def test_help_names_only_commands_that_exist(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    root = _help([], capsys)
    listed = set(_listed(root))
    assert {"train", "evaluate", "export", "build-engine", "data", "teacher"} <= listed
    description = root.split("╭")[0]
    for name in COMMAND_LIKE:
        if re.search(rf"\b{re.escape(name)}\b", description):
            assert name in listed, f"the help text names {name!r}, which is no command"
    for command in _every_command(capsys):  # and each listed command answers --help
        assert "Usage: ctd " + " ".join(command) in " ".join(_help(command, capsys).split())


def test_boolean_options_are_flags_without_a_type(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    offenders = []
    for command in [[]] + _every_command(capsys):
        text = _help(command, capsys)
        offenders += [f"ctd {' '.join(command)}: {line.strip()}" for line in text.splitlines() if "<bool>" in line]
    assert not offenders, offenders
    # and a flag takes no value
    code, _, err = ctd(["export", "run", "--out", "o", "--force", "true"], capsys)
    assert code == 2 and "Got unexpected extra argument(s) (true)" in err


def test_one_name_for_the_checkpoint_choice(capsys, monkeypatch, tiny, trained_run, tmp_path):
    monkeypatch.setenv("COLUMNS", "200")
    for command in ("evaluate", "export"):
        text = _help([command], capsys)
        assert "--checkpoint" in text and "--which" not in text, command
    # the old name of evaluate's choice still works, hidden
    code, said, err = ctd(["evaluate", trained_run, "--which", "last", "--out", tmp_path / "e"], capsys)
    assert code == 0 and "(epoch 1)" in said, err


BUILD_ENGINE_FAULTS = {
    "a missing file": (["gone.onnx"], "ONNX file not found"),
    "precision fp8": (["{model}", "--precision", "fp8"], "fp8"),
    "a profile min > max": (["{model}", "--min-batch", "5", "--max-batch", "2"], "need 1 <= min <= opt <= max"),
    "workspace 0": (["{model}", "--workspace-mb", "0"], "Invalid value for '--workspace-mb'"),
    "an ONNX file without ctd metadata": (["{plain}"], "no ctd metadata"),
}


@pytest.mark.parametrize("fault", list(BUILD_ENGINE_FAULTS))
def test_build_engine_checks_its_arguments_before_tensorrt(fault, tmp_path, capsys, tiny_model):
    from ctd_runtime.engine.environment import TENSORRT_MISSING
    from tests.bad_input.test_station_inputs import _plain_onnx

    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here: the hint cannot show")
    except ImportError:
        pass
    args, says = BUILD_ENGINE_FAULTS[fault]
    plain = _plain_onnx(tmp_path / "plain.onnx")
    argv = [a.format(model=tiny_model, plain=plain) if "{" in a else str(tmp_path / a) if a.endswith(".onnx") else a
            for a in args]
    code, _, err = ctd(["build-engine", *argv], capsys)
    assert code == 2 and says in err and TENSORRT_MISSING not in err, err
    assert not list(Path(tiny_model).parent.glob("*.plan*"))
    code, _, err = ctd(["build-engine", tiny_model], capsys)  # right arguments: only now the install hint
    assert code == 2 and TENSORRT_MISSING in err


def test_option_checks_come_before_torch(tmp_path):
    """With torch impossible to import, a wrong option is still named (not the install hint)."""
    calls = [["evaluate", "run", "--threshold", "nan"], ["data", "show", "d", "--out", "o", "--margin", "nan"],
             ["export", "run", "--out", "o", "--tolerance", "inf"]]
    code = ("from ctd_runtime.cli import main\n"
            f"for argv in {calls!r}:\n"
            "    try:\n        main(argv)\n    except SystemExit as e:\n        print('exit', e.code)\n")
    proc = subprocess.run([sys.executable, "-c", _block(("torch", "onnx")) + code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    err = " ".join(proc.stderr.split())
    assert proc.stdout.split() == ["exit", "2"] * 3, proc.stdout + proc.stderr
    for says in ("--threshold must be a finite number > 0, not nan", "--margin must be a finite number >= 0, not nan",
                 "tolerance must be a finite number > 0 px, not inf"):
        assert says in err, err
    assert "training stack" not in err and not list(tmp_path.iterdir())
