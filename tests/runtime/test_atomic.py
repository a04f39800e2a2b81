"""Atomic writes: temporaries carry their writer's pid, are removed on every exit Python sees, and
a killed writer's are removed by the next write of the same file (or the folder's next owner),
never those of a process still running."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ctd_runtime.atomic import LEGACY_STALE_S, atomic_path, remove_stale_temps, temp_dir, write_text_atomic


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_carry_the_pid_and_go_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "model.onnx") as tmp:
            assert tmp.name.startswith(f".model.onnx.{os.getpid()}-") and tmp.name.endswith(".tmp")
            tmp.write_bytes(b"half")
            raise RuntimeError("killed halfway")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        with temp_dir(tmp_path, "model.int8.onnx") as work:
            (work / "pre.onnx").write_bytes(b"x")
            raise RuntimeError("quantiser failed")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_temporaries_are_removed_by_the_next_write(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".model.onnx.{dead}-abcd1234.tmp"
    stale.write_bytes(b"38 MB of a killed export")
    live = tmp_path / f".model.onnx.{os.getppid()}-abcd1234.tmp"  # pytest's parent: alive
    live.write_bytes(b"another export still running")
    other = tmp_path / f".metrics.jsonl.{dead}-abcd1234.tmp"
    other.write_text("{}")
    write_text_atomic(tmp_path / "model.onnx", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "model.onnx"])
    assert remove_stale_temps(tmp_path) == [other]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "model.onnx"])


def test_stale_folders_and_pre_pid_temporaries(tmp_path):
    work = tmp_path / f".model.int8.onnx.{_dead_pid()}-0a1b2c3d.tmp"
    work.mkdir()
    (work / "named.onnx").write_bytes(b"x")
    old = tmp_path / ".model.onnx.k2j4h5g6.tmp"  # before the pid was in the name
    old.write_bytes(b"x")
    os.utime(old, (time.time() - LEGACY_STALE_S - 60,) * 2)
    recent = tmp_path / ".model.fp16.onnx.q1w2e3r4.tmp"
    recent.write_bytes(b"x")
    keep = tmp_path / ".hidden-notes.tmp"
    keep.write_text("not ours")
    removed = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted([work.name, old.name])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([recent.name, keep.name])
