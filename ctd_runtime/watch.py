"""`ctd infer MODEL --watch DIR`: measure each capture that lands in a folder, once, as a station does.

Every `poll_s` the folder is listed (recursively, as `ctd infer` lists a folder). A capture is
read only when it is completely written: the size and modification time of all its files (the
image and its spacing sidecar; or the OBJ, its MTLs and texture) are unchanged over
`stable_polls` polls, and it then reads without error. A capture that is stable but does not
read (truncated, corrupt, an OBJ without faces) is tried again on each poll until it has been
unchanged for `settle_s`; then its error result is written, and the watch goes on.

The result is written next to the capture, atomically: `capture.png` -> `capture.png.ctd.json`
(one CaptureResult, the schema of a results.jsonl line; docs/infer.md) and the overlay
`capture.png.ctd.png`. The result file is the done-marker: it records the signature (size,
mtime) of the files it was made from, so after a restart a capture with a result of the same
signature is not measured again, one without a result (or whose files changed since) is. A
capture whose files change while it is measured is measured again when they settle.

A 3dMD capture is best written OBJ and MTL first and texture last, or moved in as a whole
folder: a texture that is complete before any OBJ names it is measured as an image of its own.

`run` returns when `stop` is set (the CLI sets it on SIGINT and SIGTERM), after the capture in
hand is finished: never a half-written result.
"""

from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ctd_runtime.atomic import write_text_atomic
from ctd_runtime.captures import Capture, find_captures, is_image_name, mesh_companions, mtllib_paths
from ctd_runtime.errors import CtdError
from ctd_runtime.infer import InferOptions, error_result, measure_capture
from ctd_runtime.landmarker import Landmarker
from ctd_runtime.pfl import sidecar_path
from ctd_runtime.results import CaptureResult

RESULT_SUFFIX = ".ctd.json"
OVERLAY_SUFFIX = ".ctd.png"
Signature = list[int]


@dataclass(frozen=True)
class WatchOptions:
    poll_s: float = 1.0
    stable_polls: int = 2
    settle_s: float = 10.0

    def __post_init__(self) -> None:
        finite = math.isfinite(self.poll_s) and math.isfinite(self.settle_s)  # inf would never poll again
        if not (finite and self.poll_s > 0 and self.stable_polls >= 1 and self.settle_s >= 0):
            raise CtdError("watch: poll_s must be a finite number > 0, stable_polls >= 1 and settle_s a finite "
                           f"number >= 0, not {self.poll_s}, {self.stable_polls} and {self.settle_s}")


def result_path(capture: Path) -> Path:
    return capture.with_name(capture.name + RESULT_SUFFIX)


def overlay_path(capture: Path) -> Path:
    return capture.with_name(capture.name + OVERLAY_SUFFIX)


@dataclass
class _Pending:
    signature: Signature
    polls: int
    since: float


@dataclass
class Watcher:
    """The watch loop's state: what is done (by signature) and what is settling."""

    landmarker: Landmarker
    folder: Path
    infer: InferOptions = field(default_factory=InferOptions)
    options: WatchOptions = field(default_factory=WatchOptions)
    log: Callable[[str], None] = print
    _done: dict[Path, Signature] = field(default_factory=dict)
    _pending: dict[Path, _Pending] = field(default_factory=dict)
    _mtllibs: dict[tuple[Path, int, int], list[Path]] = field(default_factory=dict)

    def run(self, stop: threading.Event) -> None:
        """Poll until `stop` is set."""
        if not self.folder.is_dir():
            raise CtdError("watch folder not found", path=self.folder)
        self.log(f"watching {self.folder} every {self.options.poll_s:g} s (Ctrl+C or SIGTERM stops)")
        while not stop.is_set():
            self.poll_once(stop)
            stop.wait(self.options.poll_s)
        self.log("stopped")

    def poll_once(self, stop: threading.Event | None = None) -> list[CaptureResult]:
        """One look at the folder; the results written by it."""
        written = []
        for capture in find_captures([self.folder], self._cached_textures):
            if stop is not None and stop.is_set():
                break
            result = self._consider(capture)
            if result is not None:
                written.append(result)
        return written

    def _consider(self, capture: Capture) -> CaptureResult | None:
        sig = signature(self._files(capture))
        if sig == self._done_signature(capture.path):
            return None
        now = time.monotonic()
        pending = self._pending.get(capture.path)
        if pending is None or pending.signature != sig:
            self._pending[capture.path] = pending = _Pending(sig, 0, now)
        pending.polls += 1
        if pending.polls < self.options.stable_polls:
            return None
        try:
            result = measure_capture(self.landmarker, capture, self.infer, overlay_path(capture.path)
                                     if self.infer.overlays else None)
        except CtdError as e:
            if now - pending.since < self.options.settle_s:
                return None  # perhaps still being written in bursts: try again next poll
            result = error_result(capture, e)
        if signature(self._files(capture)) != sig:
            return None  # changed while it was read: measure it again once it settles
        result.signature = sig
        write_text_atomic(result_path(capture.path), json.dumps(result.to_dict(), indent=1) + "\n")
        self._done[capture.path] = sig
        del self._pending[capture.path]
        self.log(describe(result))
        return result

    def _done_signature(self, path: Path) -> Signature | None:
        if path not in self._done:
            stored = read_result(result_path(path))
            if stored is None or stored.signature is None:
                return None
            self._done[path] = list(stored.signature)
        return self._done[path]

    def _files(self, capture: Capture) -> list[Path]:
        if capture.is_mesh:
            return [capture.path, *self._companions(capture.path)]
        return [capture.path, sidecar_path(capture.path)]

    def _companions(self, obj: Path) -> list[Path]:
        """mesh_companions; the OBJ (~10 MB for 3dMD) is scanned for its mtllib lines only when it changes."""
        try:
            st = obj.stat()
        except OSError:
            return []
        key = (obj, st.st_size, st.st_mtime_ns)
        if key not in self._mtllibs:
            self._mtllibs[key] = mtllib_paths(obj)
        return mesh_companions(obj, self._mtllibs[key])

    def _cached_textures(self, obj: Path) -> set[Path]:
        return {p for p in self._companions(obj) if is_image_name(p)}


def signature(files: list[Path]) -> Signature:
    """Size and mtime (ns) of each file, -1 -1 for a file that does not exist."""
    out: Signature = []
    for f in files:
        try:
            st = f.stat()
            out += [int(st.st_size), int(st.st_mtime_ns)]
        except OSError:
            out += [-1, -1]
    return out


def read_result(path: Path) -> CaptureResult | None:
    """A result file written by the watch (None when absent or unreadable: then it is redone)."""
    try:
        return CaptureResult.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def describe(result: CaptureResult) -> str:
    """One log line per capture."""
    if result.status == "error":
        return f"error {result.input}: {result.error}"
    if result.status == "no_face":
        return f"no face {result.input}: {result.reason}"
    mm = "" if result.pfl_mm is None else f", {result.pfl_mm:.2f} mm"
    d3 = "" if result.pfl_3d_mm is None else f", 3D {result.pfl_3d_mm:.2f} mm"
    flags = "".join(f" [{f['code']}]" for f in result.flags)
    return f"ok {result.input}: PFL {result.pfl_px:.2f} px{mm}{d3}{flags}"
