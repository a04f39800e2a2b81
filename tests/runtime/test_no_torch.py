"""A station installs the runtime without torch: every ctd_runtime module and `ctd --help` must
work with torch and onnx impossible to import, and ctd_runtime names no upper package.

The one place this is checked. Two stations are simulated: one where the training packages are
present but torch is not (a base install: their commands load, then say what is missing when
run), and one where the training packages cannot be imported at all (their commands are
stand-ins made from the installed entry points alone).
"""

import subprocess
import sys
from pathlib import Path

import pytest

import ctd_runtime

TORCH = ("torch", "onnx")
TRAINING = TORCH + ("ctd_train", "ctd_export")
COMMANDS = ("train", "evaluate", "export", "teacher", "data", "build-engine", "infer", "bench")


def _block(names: tuple[str, ...]) -> str:
    return (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {names!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )


def _run(code: str, blocked: tuple[str, ...] = TRAINING, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _block(blocked) + code], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def _ctd(args: list[str], blocked: tuple[str, ...], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return _run(f"from ctd_runtime.cli import main\nmain({args!r})\n", blocked, cwd)


def test_every_runtime_module_imports_without_torch():
    code = (
        "import pkgutil, ctd_runtime\n"
        "names = [m.name for m in pkgutil.walk_packages(ctd_runtime.__path__, 'ctd_runtime.')]\n"
        "assert len(names) > 10, names\n"
        "for n in names:\n"
        "    __import__(n)\n"
        "heavy = [m for m in ('torch', 'onnx', 'tensorrt', 'ctd_train', 'ctd_export') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print(len(names))\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) > 10


def test_runtime_names_no_upper_package():
    root = Path(ctd_runtime.__file__).parent
    offenders = [
        f"{path.relative_to(root.parent)}: {word}"
        for path in sorted(root.rglob("*.py"))
        for word in ("ctd_train", "ctd_export")
        if word in path.read_text()
    ]
    assert not offenders, offenders


def test_runtime_imports_neither_torch_nor_onnx_anywhere():
    """Not even lazily inside a function: a station has neither (onnxruntime is not onnx)."""
    import ast

    root = Path(ctd_runtime.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(root.parent)}:{node.lineno} {n}" for n in names
                          if n.split(".")[0] in ("torch", "onnx", "onnxscript", "onnxconverter_common")]
    assert not offenders, offenders


@pytest.mark.parametrize("blocked", [TORCH, TRAINING], ids=["no-torch", "no-training-packages"])
def test_ctd_help_and_version_list_every_command(blocked):
    proc = _ctd(["--help"], blocked)
    assert proc.returncode == 0, proc.stderr
    listed = {line.strip("│ ").split(" ")[0] for line in proc.stdout.splitlines()}
    for command in COMMANDS:
        assert command in listed, (command, proc.stdout)
    # with the packages present, their own commands load (they import torch only when run)
    assert ("Needs the training stack" in proc.stdout) == (blocked == TRAINING), proc.stdout
    proc = _ctd(["--version"], blocked)
    assert proc.returncode == 0 and proc.stdout.startswith("ctd "), proc.stderr
    for command in COMMANDS:
        proc = _ctd([command, "--help"], blocked)
        assert proc.returncode == 0 and "Usage: ctd " + command in " ".join(proc.stdout.split()), proc.stderr
    proc = _ctd(["build-engine", "--help"], blocked)
    assert "--max-batch" in proc.stdout, proc.stdout


@pytest.mark.parametrize("blocked", [TORCH, TRAINING], ids=["no-torch", "no-training-packages"])
@pytest.mark.parametrize("args", [
    ["train", "--data", "d", "--out", "o", "--epochs", "1"],
    ["teacher", "list"],
    ["export", "run", "--out", "o"],
])
def test_training_command_says_what_to_install(blocked, args, tmp_path):
    if args[0] == "train":  # a real data folder, so the training command gets as far as its imports
        args = ["train", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--epochs", "1"]
    proc = _ctd(args, blocked, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.split())
    assert "needs the training stack" in err and "pip install 'ctd[train]'" in err, err
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
