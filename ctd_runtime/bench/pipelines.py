"""Pipeline contenders of `ctd bench`: whole ready-made tools timed beside the model contenders.

A pipeline contender is what a user would run instead of ctd (benchmarks/latency.py makes
MediaPipe Face Mesh and dlib's predictors into them; ctd_runtime never imports either): image in,
the two corners of the schema's PFL pair out (endocanthion, exocanthion, in ctd pixels), its own
face detection inside. So only image decode and end to end are timed; it takes its turn in the
same interleaved schedule as the model contenders, and a batch's images one after another. It is
scored on the PFL pair only (its other points follow another annotation schema, so ME is not
comparable): mean |PFL error| and the eye-corner error, in px and in units of the true PFL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np

from ctd_runtime.bench import stats
from ctd_runtime.bench.memory import resident_mib
from ctd_runtime.errors import CtdError
from ctd_runtime.image_io import read_image

TIMED_STAGES = ("image_decode", "end_to_end")
IDLE_PROBE_S = 0.05
IDLE_KEY = "cpu_ms_in_50ms_idle_after_a_call"  # the JSON's name of `idle_cpu_ms()`, per contender


class PipelineDetector(Protocol):
    """An opened pipeline: `detect(bgr) -> [2, 2]` (endocanthion, exocanthion) or None (no face)."""

    def __call__(self, image: np.ndarray) -> Optional[np.ndarray]: ...

    def close(self) -> None: ...


@dataclass
class PipelineContender:
    """One ready-made tool: `open()` gives its detector. `threads`: what it says of its threads."""

    name: str
    open: Callable[[], PipelineDetector]
    kind: str
    description: str = ""
    threads: str = ""


@dataclass
class PipelineSet:
    """Pipeline contenders found, and those skipped with the reason (package missing)."""

    contenders: list[PipelineContender] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class OpenedPipeline:
    contender: PipelineContender
    detect: PipelineDetector
    memory_mib: float = 0.0
    threads_added: int | None = None
    idle_cpu_ms: float = 0.0
    samples: dict[int, list[dict[str, float]]] = field(default_factory=dict)


def os_threads() -> int | None:
    """The process's OS threads (Linux /proc), or None where that cannot be read."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def idle_cpu_ms(seconds: float = IDLE_PROBE_S) -> float:
    """CPU time (ms, all threads) the process uses while the caller sleeps `seconds` right after a
    call: near 0 unless some thread spins on after its work (and would take cores from the next)."""
    t = time.process_time()
    time.sleep(seconds)
    return (time.process_time() - t) * 1e3


def corners_of(out: Any, name: str) -> np.ndarray | None:
    """A pipeline's answer as [2, 2] float, None for no face; CtdError for anything else."""
    if out is None:
        return None
    arr = np.asarray(out, dtype=np.float64)
    if arr.shape != (2, 2):
        raise CtdError(f"pipeline contender {name!r} returned shape {arr.shape}, not the PFL pair's [2, 2] or None")
    return arr


def open_pipelines(found: PipelineSet, first_image: np.ndarray) -> tuple[list[OpenedPipeline], dict[str, str]]:
    """Open each pipeline and run it once on `first_image` (memory, threads and idle CPU measured
    around that); one that cannot open or run is closed and skipped with the reason."""
    opened, skipped = [], dict(found.skipped)
    for c in found.contenders:
        before, threads = resident_mib(), os_threads()
        try:
            detect = c.open()
        except Exception as e:  # a third-party tool that cannot start is skipped, never fatal
            skipped[c.name] = f"cannot open: {type(e).__name__}: {e}"
            continue
        try:
            corners_of(detect(first_image), c.name)
        except Exception as e:
            close(detect)
            skipped[c.name] = f"cannot run: {type(e).__name__}: {e}"
            continue
        after = os_threads()
        added = after - threads if after is not None and threads is not None else None
        opened.append(OpenedPipeline(c, detect, resident_mib() - before, added, idle_cpu_ms()))
    return opened, skipped


def close(detect: PipelineDetector) -> None:
    """Close an opened pipeline (one without close() has nothing to free)."""
    getattr(detect, "close", lambda: None)()


def time_pipeline(o: OpenedPipeline, paths: Sequence[Path], idx: list[int]) -> dict[str, float]:
    """One timed call: read the images `idx`, run the pipeline on each in turn (seconds)."""
    t0 = time.perf_counter()
    images = [read_image(paths[i]) for i in idx]
    t1 = time.perf_counter()
    for image in images:
        o.detect(image)
    return {"image_decode": t1 - t0, "end_to_end": time.perf_counter() - t0}


def summarize_pipeline(samples: list[dict[str, float]], batch: int, stages: Sequence[str]) -> dict[str, Any]:
    """Per stage p50/p90/p99 (ms; the stages a pipeline does not split off have n = 0), the spread
    over rounds and throughput, as the model contenders' rows."""
    e2e = [s["end_to_end"] for s in samples]
    return {
        "stages": {k: stats.latency_summary([s[k] for s in samples if k in s]) for k in stages},
        "spread": stats.round_spread(e2e, [int(s["round"]) for s in samples]),
        "throughput_images_per_s": batch / float(np.median(e2e)),
    }


def pair_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
    """Mean |PFL error| (PFL units) and the eye-corner error (mean over both corners, px and PFL
    units) of PFL-pair predictions [N, 2, 2] (NaN rows: no face) against the truth [N, 2, 2]."""
    from ctd_runtime.metrics import evaluate_landmarks

    found = np.all(np.isfinite(pred), axis=(1, 2))
    row: dict[str, Any] = {"found": int(found.sum()), "images": len(found)}
    if found.any():
        rel = evaluate_landmarks(pred[found], gt[found], "pfl", 0.10, (0, 1))
        px = evaluate_landmarks(pred[found], gt[found], "px", 0.10, (0, 1))
        row |= {"pfl_error_mean_abs_pfl": rel.pfl_error_mean_abs, "pfl_error_mean_signed_pfl":
                float(rel.pfl_error_signed.mean()), "eye_corner_me_px": px.summary.me, "eye_corner_me_pfl": rel.summary.me}
    return row


def pipeline_accuracy(opened: list[OpenedPipeline], paths: Sequence[Path], gt_pair: np.ndarray) -> dict[str, dict[str, Any]]:
    """`pair_scores` of every pipeline on the annotated images (one untimed pass each)."""
    out = {}
    for o in opened:
        pred = np.full(gt_pair.shape, np.nan)
        for i, path in enumerate(paths):
            corners = corners_of(o.detect(read_image(path)), o.contender.name)
            if corners is not None:
                pred[i] = corners
        out[o.contender.name] = pair_scores(pred, gt_pair)
    return out


def describe(opened: list[OpenedPipeline]) -> dict[str, dict[str, Any]]:
    """What the JSON says of each pipeline: kind, description, its threads, memory, idle CPU."""
    return {o.contender.name: {"kind": o.contender.kind, "description": o.contender.description,
                               "threads": o.contender.threads, "os_threads_added": o.threads_added,
                               "memory_mib": o.memory_mib,
                               IDLE_KEY: o.idle_cpu_ms}
            for o in opened}
