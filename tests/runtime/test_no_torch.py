"""A station installs the runtime without torch: every ctd_runtime module and `ctd --help` must
work with torch (and onnx) impossible to import."""

import subprocess
import sys

BLOCK = (
    "import sys, importlib.abc\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'onnx', 'ctd_train', 'ctd_export'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "sys.meta_path.insert(0, Block())\n"
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True)


def test_every_runtime_module_imports_without_torch():
    code = (
        "import pkgutil, ctd_runtime\n"
        "names = [m.name for m in pkgutil.walk_packages(ctd_runtime.__path__, 'ctd_runtime.')]\n"
        "assert len(names) > 10, names\n"
        "for n in names:\n"
        "    __import__(n)\n"
        "print(len(names))\n"
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip()) > 10


def test_ctd_help_and_version_without_torch():
    proc = _run("from ctd_runtime.cli import main\nmain(['--help'])\n")
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "evaluate", "export", "build-engine", "data", "teacher"):
        assert command in proc.stdout
    proc = _run("from ctd_runtime.cli import main\nmain(['--version'])\n")
    assert proc.returncode == 0 and proc.stdout.startswith("ctd "), proc.stderr


def test_training_command_without_torch_says_what_is_missing():
    proc = _run("from ctd_runtime.cli import main\nmain(['teacher', 'list'])\n")
    assert proc.returncode == 2
    assert "needs the training stack" in proc.stderr and "ctd[train]" in proc.stderr
    assert "Traceback" not in proc.stderr
