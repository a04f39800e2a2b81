"""UV -> 3D lookup on a 3dMD-sized mesh: the uniform-grid index against a scan of every triangle.

    python benchmarks/mesh_lookup.py                     # ~10^5 triangles, 14 and 200 points
    python benchmarks/mesh_lookup.py --side 100 --repeats 3

The mesh is a synthetic face-sized patch of an ellipsoid (mm) on a (side + 1)^2 vertex grid,
2 side^2 triangles, with a non-uniform, jittered UV layout (triangle sizes vary like a real
atlas) that covers only part of [0, 1]^2, so some points fall in no triangle. Per repeat, in
turn: build the index, map 14 points (one capture's landmarks) and 200 points with the index,
and the same points by the scan; medians and the 10-90 percentile spread over the repeats. The
index and the scan must agree point for point (checked). The scan is handed the index's
prepared per-triangle arrays (UV edge inverses) for free, which favours it. Reading the OBJ is
timed too (median of 3), for scale. Writes benchmarks/results/mesh_lookup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ctd_runtime.machine import cpu_model, usable_cores  # noqa: E402
from ctd_runtime.obj_mesh import read_obj  # noqa: E402
from ctd_runtime.uv_lookup import UvIndex  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def face_patch_obj(folder: Path, side: int, seed: int = 0) -> Path:
    """Write an OBJ (no texture) of an ellipsoid patch with an irregular UV layout."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, side + 1)
    s, r = np.meshgrid(t, t)
    lam, phi = (s - 0.5) * 2.2, (r - 0.5) * 1.6
    xyz = np.stack([80 * np.cos(phi) * np.sin(lam), 110 * np.sin(phi), 95 * np.cos(phi) * np.cos(lam)], -1)
    u, v = 0.05 + 0.9 * s ** 1.4, 0.08 + 0.85 * r ** 0.8          # uneven triangle sizes
    step = 0.3 / side
    inner = (s > 0) & (s < 1) & (r > 0) & (r < 1)
    u = u + inner * rng.uniform(-step, step, u.shape)
    v = v + inner * rng.uniform(-step, step, v.shape)
    n = side + 1
    a = (np.arange(side)[None, :] + n * np.arange(side)[:, None]).ravel() + 1
    tris = np.concatenate([np.stack([a, a + 1, a + n + 1], 1), np.stack([a, a + n + 1, a + n], 1)])
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in xyz.reshape(-1, 3)]
    lines += [f"vt {p:.7f} {q:.7f}" for p, q in zip(u.ravel(), v.ravel())]
    lines += [f"f {i}/{i} {j}/{j} {k}/{k}" for i, j, k in tris]
    path = folder / "patch.obj"
    path.write_text("\n".join(lines) + "\n")
    return path


def stats(times_s: list[float]) -> dict[str, float]:
    t = np.asarray(times_s) * 1000.0
    return {"median_ms": float(np.median(t)), "min_ms": float(t.min()), "p10_ms": float(np.percentile(t, 10)),
            "p90_ms": float(np.percentile(t, 90)), "n": int(t.size)}


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(side: int, repeats: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = face_patch_obj(Path(tmp), side, seed)
        reads = [timed(lambda: read_obj(path)) for _ in range(3)]
    mesh = reads[0][1]
    rng = np.random.default_rng(seed + 1)
    queries = {14: rng.uniform(0, 1, (14, 2)), 200: rng.uniform(0, 1, (200, 2))}
    times: dict[str, list[float]] = {"build": []}
    for n in queries:
        times[f"grid_{n}"], times[f"scan_{n}"] = [], []
    index = UvIndex(mesh)
    for _ in range(repeats):
        dt, index = timed(lambda: UvIndex(mesh))
        times["build"].append(dt)
        for n, q in queries.items():
            dt, fast = timed(lambda: index.locate(q))
            times[f"grid_{n}"].append(dt)
            dt, slow = timed(lambda: index.locate_by_scan(q))
            times[f"scan_{n}"].append(dt)
            assert np.array_equal(fast.found, slow.found) and np.allclose(
                fast.points_3d[fast.found], slow.points_3d[slow.found], atol=1e-9), "index and scan disagree"
    found = {n: int(index.locate(q).found.sum()) for n, q in queries.items()}
    return {
        "machine": {"cpu": cpu_model(), "cores": usable_cores(), "python": platform.python_version(),
                    "numpy": np.__version__, "load_average_1min": os.getloadavg()[0]},
        "mesh": {"vertices": int(len(mesh.vertices)), "triangles": int(len(mesh.tri_vertices)),
                 "grid_cells_per_side": index.grid,
                 "read_obj_ms": float(np.median([r[0] for r in reads]) * 1000.0)},
        "points_found": found,
        "timings": {k: stats(v) for k, v in times.items()},
    }


def print_table(result: dict) -> None:
    m, t = result["mesh"], result["timings"]
    mach = result["machine"]
    print(f"mesh: {m['triangles']} triangles, {m['vertices']} vertices, grid {m['grid_cells_per_side']}^2; "
          f"read_obj {m['read_obj_ms']:.0f} ms; {mach['cpu']}, {mach['cores']} cores, "
          f"load average {mach['load_average_1min']:.1f}")
    print(f"{'step':<28}{'median ms':>12}{'min ms':>10}{'p10-p90 ms':>20}")
    rows = [("build index (once per mesh)", "build")]
    for n in result["points_found"]:
        rows += [(f"{n} points, grid index", f"grid_{n}"), (f"{n} points, scan", f"scan_{n}")]
    for label, key in rows:
        s = t[key]
        print(f"{label:<28}{s['median_ms']:>12.3f}{s['min_ms']:>10.3f}{s['p10_ms']:>11.3f}-{s['p90_ms']:<8.3f}")
    for n in result["points_found"]:
        grid, scan, build = t[f"grid_{n}"]["median_ms"], t[f"scan_{n}"]["median_ms"], t["build"]["median_ms"]
        print(f"{n} points: scan / grid = {scan / grid:.0f}x; scan / (build + grid) = {scan / (build + grid):.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=224, help="grid cells per side (2 side^2 triangles)")
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "mesh_lookup.json")
    args = ap.parse_args()
    result = run(args.side, args.repeats, args.seed)
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
