"""Atomic file writes: write to a temporary sibling, then rename, so a killed process never
leaves a half-written checkpoint, ONNX file, engine or JSON.

A temporary is named `.NAME.<pid>-<random>.tmp` beside NAME (a file, or a folder for work that
needs several files: `temp_dir`). It is removed on every exit path Python sees (an exception, a
Ctrl-C, SIGTERM through the `ctd` command's handler); only SIGKILL or a power cut leaves one
behind, and the next command writing into that folder removes it (`remove_stale_temps`): the pid
in its name says its writer is gone, so a temporary of a process still running is never touched.
Every atomic write of NAME does that for NAME's own temporaries; a command that owns a folder (a
run dir, an export folder) clears the whole folder when it starts.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-z_]+\.tmp$")
# ctd before the pid was in the name: `.NAME.<8 random>.tmp`, stale once no writer could still be at it
_LEGACY_TEMP = re.compile(r"^\.(?P<name>.+)\.[0-9a-z_]{8}\.tmp$")
LEGACY_STALE_S = 3600.0


def _temp_prefix(name: str) -> str:
    return f".{name}.{os.getpid()}-"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)  # what a killed writer of this same file left
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_current_umask())  # mkstemp makes 0600; artifacts are shared
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def temp_dir(folder: str | Path, name: str) -> Iterator[Path]:
    """A temporary folder `.NAME.<pid>-<random>.tmp` inside `folder` (work files of the step that
    writes NAME there), removed with its contents on exit; a killed process's is stale like any
    temporary. Kept beside the output, not in /tmp, so the next run finds and removes it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_temp_prefix(name)}{secrets.token_hex(4)}.tmp"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_temps(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temporaries in `folder` (of the file `name` only, when given) whose writing
    process is gone (SIGKILL, a crash); the removed paths. Other files, and temporaries of live
    processes, are left alone."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    entries = folder.iterdir() if name is None else folder.glob(f".{glob.escape(name)}.*.tmp")
    for entry in entries:
        if not _stale(entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _stale(entry: Path) -> bool:
    m = _TEMP.match(entry.name)
    if m is not None:
        return not _alive(int(m.group("pid")))
    if _LEGACY_TEMP.match(entry.name):
        try:
            return time.time() - entry.lstat().st_mtime > LEGACY_STALE_S
        except OSError:
            return False
    return False


def _alive(pid: int) -> bool:
    """Whether a process `pid` exists (this one included); unknown counts as alive."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True  # exists under another user, or cannot be asked: keep its files
    return True


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
