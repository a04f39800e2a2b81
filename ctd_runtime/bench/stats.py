"""Statistics of a benchmark: percentiles, the spread over repeated rounds, the interleaved order.

Contenders take turns one iteration at a time (`interleaved_schedule`), so a change of the
machine's load (another process, thermal throttling) shifts every contender alike instead of
whichever one happened to be timed at that moment.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

PERCENTILES = (50, 90, 99)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean in ms and the count of a list of durations in seconds."""
    t = np.asarray(seconds, dtype=np.float64) * 1000.0
    if t.size == 0:
        return {"n": 0}
    out = {f"p{p}_ms": float(np.percentile(t, p)) for p in PERCENTILES}
    return out | {"mean_ms": float(t.mean()), "n": int(t.size)}


def round_spread(seconds: Sequence[float], rounds: Sequence[int]) -> dict[str, float]:
    """Min and max over rounds of each round's median (ms), and the interquartile range of all
    samples (ms): how far apart repeated measurements of the same thing land."""
    t = np.asarray(seconds, dtype=np.float64) * 1000.0
    r = np.asarray(rounds)
    if t.size == 0:
        return {}
    medians = [float(np.median(t[r == k])) for k in np.unique(r)]
    q1, q3 = np.percentile(t, [25, 75])
    return {"round_median_min_ms": min(medians), "round_median_max_ms": max(medians),
            "iqr_ms": float(q3 - q1), "rounds": len(medians)}


def interleaved_schedule(names: Sequence[str], iters: int, rounds: int = 1) -> list[tuple[int, int, str]]:
    """(round, iteration, contender) in the order they run: every iteration runs each contender
    once, the starting contender rotating by one per iteration so none is always first."""
    n = len(names)
    out = []
    for r in range(rounds):
        for i in range(iters):
            start = (r * iters + i) % n if n else 0
            out.extend((r, i, names[(start + j) % n]) for j in range(n))
    return out


def ratio(reference_ms: float | None, value_ms: float | None) -> float | None:
    """How many times faster `value` is than `reference` (reference / value); None when either is missing."""
    if not reference_ms or not value_ms:
        return None
    return float(reference_ms) / float(value_ms)
