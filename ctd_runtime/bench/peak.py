"""The machine's measured limit: float32 matrix-multiply throughput of numpy's BLAS, in the same run
as the contenders, so each contender's fraction of it is taken under the same load."""

from __future__ import annotations

import time

import numpy as np


def matmul_peak_gflops(n: int = 1024, repeats: int = 5) -> dict[str, float]:
    """Best-of-`repeats` GFLOP/s of an n x n float32 matrix product (2 n^3 FLOPs), with numpy's
    default BLAS threads; a few hundred ms for n = 1024 on two cores."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm-up: BLAS thread pool, page faults
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return {"gflops": 2.0 * n ** 3 / best / 1e9, "n": n, "repeats": repeats, "best_s": best}


def fraction_of_peak(flops: float | None, seconds: float | None, peak_gflops: float | None) -> float | None:
    """Achieved FLOP rate of `flops` in `seconds` as a fraction of the peak; None when unknown."""
    if not flops or not seconds or not peak_gflops:
        return None
    return flops / seconds / 1e9 / peak_gflops
