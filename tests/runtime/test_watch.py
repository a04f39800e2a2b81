"""`ctd infer MODEL --watch DIR` as a real process: a capture copied in slowly is measured once it
is complete, a bad file gets an error result and the watch goes on, a restart after a kill does
nothing twice and skips nothing, SIGTERM and SIGINT stop it cleanly. Polls every 0.2 s."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.runtime._station_data import blob_png, plane_capture

POLL = "0.2"
SETTLE = "1.5"


class WatchProcess:
    """`ctd infer --watch` in a subprocess, its stdout lines in a queue."""

    def __init__(self, model: Path, folder: Path) -> None:
        code = "from ctd_runtime.cli import main; main()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "infer", str(model), "--watch", str(folder), "--poll", POLL,
             "--settle", SETTLE, "--threads", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for("watching")

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} within {timeout} s; output: {self.seen}")

    def drain(self) -> list[str]:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.seen

    def stop(self, sig: int, timeout: float = 15.0) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        time.sleep(0.1)
        self.drain()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def watcher(tiny_model, tmp_path):
    started: list[WatchProcess] = []

    def start() -> WatchProcess:
        w = WatchProcess(tiny_model, tmp_path / "station")
        started.append(w)
        return w

    (tmp_path / "station").mkdir()
    yield start
    for w in started:
        w.kill()


def _result(path: Path) -> dict:
    return json.loads(path.with_name(path.name + ".ctd.json").read_text())


def test_slow_copy_bad_file_and_sigterm(watcher, tmp_path):
    station = tmp_path / "station"
    source = tmp_path / "src.png"
    blob_png(source, 1)
    data = source.read_bytes()
    w = watcher()
    target = station / "slow.png"
    with target.open("wb") as f:  # copied in slowly: 40% now, the rest 1.2 s later (6 polls)
        f.write(data[: int(0.4 * len(data))])
        f.flush()
        time.sleep(1.2)
        assert not target.with_name("slow.png.ctd.json").exists()  # never while it is being copied
        f.write(data[int(0.4 * len(data)):])
    line = w.wait_for("slow.png")
    assert line.startswith("ok ") and _result(target)["status"] == "ok"
    assert _result(target)["signature"][0] == len(data)
    assert (station / "slow.png.ctd.png").is_file()
    (station / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 20)  # complete, but not an image
    line = w.wait_for("bad.png")
    assert line.startswith("error ") and "bad.png" in line
    assert _result(station / "bad.png")["status"] == "error"
    blob_png(station / "after.png", 2)  # the watch went on
    assert w.wait_for("after.png").startswith("ok ")
    assert w.stop(signal.SIGTERM) == 0
    assert "stopped" in w.seen[-1]
    done = [line for line in w.seen if line.startswith(("ok ", "error ", "no face "))]
    assert len(done) == 3  # each capture once
    assert not [p for p in station.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_restart_does_nothing_twice_and_skips_nothing(watcher, tmp_path):
    station = tmp_path / "station"
    w = watcher()
    blob_png(station / "a.png", 1)
    blob_png(station / "sub" / "b.png", 2)
    w.wait_for("a.png")
    w.wait_for("b.png")
    w.kill()  # SIGKILL: no chance to clean up
    before = {p: p.stat().st_mtime_ns for p in station.rglob("*.ctd.json")}
    assert len(before) == 2
    blob_png(station / "c.png", 3)  # arrives while the station is down
    cap = station / "cap"
    plane_capture(cap, 4)  # a 3dMD capture as well
    w2 = watcher()
    w2.wait_for("c.png")
    w2.wait_for("capture.obj")
    time.sleep(0.8)  # a few more polls: nothing else may be measured
    assert w2.stop(signal.SIGINT) == 0
    done = [line for line in w2.seen if line.startswith(("ok ", "error ", "no face "))]
    assert len(done) == 2, w2.seen
    assert {p: p.stat().st_mtime_ns for p in before} == before
    mesh = _result(cap / "capture.obj")
    assert mesh["status"] == "ok" and mesh["kind"] == "mesh" and mesh["pfl_3d_mm"] is not None
    assert not (cap / "capture.png.ctd.json").exists()  # the texture is part of the capture


def test_a_capture_that_changes_is_measured_again(watcher, tmp_path):
    station = tmp_path / "station"
    w = watcher()
    blob_png(station / "a.png", 1)
    w.wait_for("a.png")
    first = _result(station / "a.png")
    (station / "a.png.json").write_text('{"pixel_spacing_mm": 0.2}')  # its sidecar arrives later
    w.wait_for("a.png")
    second = _result(station / "a.png")
    assert first["pfl_mm"] is None and second["pfl_mm"] == pytest.approx(0.2 * second["pfl_px"])
    assert w.stop(signal.SIGTERM) == 0
