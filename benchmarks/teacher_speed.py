"""CPU speed of the teachers' encoders: parameter count and forward time for one 256x256 image.

For every registered teacher whose weights are on this machine (found automatically, or in the
shared teachers folder). resnet50-vggface2's weight file is not available here, so it is timed
with random weights in the same architecture (the time does not depend on the values); the
output says so.

    python benchmarks/teacher_speed.py [--runs 30] [--warmup 5] [--size 256]
        [--teachers-dir ../shared/teachers] [--out benchmarks/results/teacher_speed.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from ctd_runtime.atomic import write_json_atomic
from ctd_runtime.machine import cpu_model
from ctd_runtime.errors import CtdError
from ctd_train.teachers import create_teacher, list_teachers

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TEACHERS_DIR = Path(os.environ.get("CTD_SHARED", REPO.parent / "shared")) / "teachers"
# where each teacher's weights lie in the shared teachers folder (README of that folder)
SHARED_WEIGHTS = {
    "dlib-resnet29": "dlib-resnet29/dlib_face_recognition_resnet_model_v1.dat",
    "hse-mobilenet-vggface2": "hse-mobilenet-vggface2/faceres-deep.json",
}


def machine_description() -> dict[str, Any]:
    return {"cpu_model": cpu_model(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch_version": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}


def load_for_benchmark(name: str, teachers_dir: Path):
    """(teacher, weights note) or (None, reason) when the weights are not on this machine."""
    try:
        t = create_teacher(name)
        return t, f"real weights ({t.weights_path})"
    except CtdError as auto_error:
        rel = SHARED_WEIGHTS.get(name)
        if rel is not None and (teachers_dir / rel).exists():
            t = create_teacher(name, teachers_dir / rel)
            return t, f"real weights ({t.weights_path})"
        if name == "resnet50-vggface2":
            from ctd_train.teachers.vggface2_resnet import random_teacher

            return random_teacher(), "RANDOM weights, same architecture (weight file not available here)"
        return None, f"skipped: {auto_error}"


def time_encoder(encoder: torch.nn.Module, size: int, runs: int, warmup: int) -> dict[str, Any]:
    x = torch.randn(1, 3, size, size)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            y = encoder(x)
        for _ in range(runs):
            t0 = time.perf_counter()
            y = encoder(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return {
        "feature_map": list(y.shape),
        "median_ms": statistics.median(times),
        "p90_ms": float(np.percentile(times, 90)),
        "min_ms": min(times),
        "mean_ms": statistics.fmean(times),
        "runs": runs,
        "warmup": warmup,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--teachers-dir", type=Path, default=DEFAULT_TEACHERS_DIR)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "teacher_speed.json")
    args = ap.parse_args(argv)

    torch.set_num_threads(os.cpu_count() or 1)
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 150))
    machine = machine_description()
    rows: list[dict[str, Any]] = []
    for entry in list_teachers():
        teacher, note = load_for_benchmark(entry.name, args.teachers_dir)
        row: dict[str, Any] = {"teacher": entry.name, "weights": note}
        if teacher is not None:
            encoder = teacher.frozen().encoder
            row["encoder_parameters"] = sum(p.numel() for p in encoder.parameters())
            row["total_parameters"] = teacher.parameter_count()
            row["trained_input_size"] = teacher.input_spec.size
            row.update(time_encoder(encoder, args.size, args.runs, args.warmup))
        rows.append(row)

    table = Table(title=f"teacher encoders, CPU, 1x3x{args.size}x{args.size}, torch.inference_mode, "
                        f"{args.runs} runs after {args.warmup} warm-up")
    for col in ("teacher", "encoder params", "feature map", "median ms", "p90 ms", "weights"):
        table.add_column(col, justify="right" if "ms" in col or "params" in col else "left",
                         no_wrap=col != "weights", overflow="fold")
    for r in rows:
        if "median_ms" not in r:
            table.add_row(r["teacher"], "-", "-", "-", "-", r["weights"])
            continue
        table.add_row(r["teacher"], f"{r['encoder_parameters']:,}", "x".join(map(str, r["feature_map"][1:])),
                      f"{r['median_ms']:.1f}", f"{r['p90_ms']:.1f}", r["weights"])
    console.print(table)
    console.print(f"machine: {machine['cpu_model']}, {machine['cpu_cores']} cores "
                  f"(torch threads {machine['torch_threads']}), torch {machine['torch_version']}")

    result = {
        "benchmark": "teacher_speed",
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input": [1, 3, args.size, args.size],
        "machine": machine,
        "teachers": rows,
    }
    write_json_atomic(args.out, result)
    console.print(f"written {args.out}")
    return result


if __name__ == "__main__":
    main()
