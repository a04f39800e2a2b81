"""Latency of every way of running a ctd model, side by side in one run: the script behind `ctd bench`
(ctd_runtime.bench), with the PyTorch contenders of ctd_export added directly when torch is installed.

    python benchmarks/latency.py runs/mobilenet exports/mobilenet/model.onnx \
        --images ../shared/data/imm-face --batch 1,4 --out benchmarks/results/latency

A run folder gives the PyTorch eager baseline (OpenCV warp, torch predictor, numpy decode) and,
on a GPU, PyTorch CUDA FP16 with and without CUDA graphs; a model gives ONNX Runtime on
model.onnx / model.fp16.onnx / model.int8.onnx beside it, TensorRT on model.plan where it exists
and tensorrt imports, ONNX Runtime's CUDA provider where onnxruntime-gpu is there. Writes
bench.json and bench.png to --out; prints the table. The older export-only comparison is
benchmarks/export_latency.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from ctd_runtime.machine import usable_cores

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="+", type=Path, help="model.onnx / model.plan, export folders, run folders")
    ap.add_argument("--batch", default="1", help="batch sizes, comma-separated")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=usable_cores())
    ap.add_argument("--images", type=Path, default=None, help="images; an annotated folder adds accuracy")
    ap.add_argument("--max-images", type=int, default=64, help="use at most this many images of --images")
    ap.add_argument("--given-box", action="store_true", help="the annotations' boxes instead of the passes")
    ap.add_argument("--no-gpu", action="store_true", help="skip the GPU contenders")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "latency")
    return ap.parse_args(argv)


def run_contenders() -> list[Any]:
    """ctd_export's PyTorch contender factory, or none without torch (the runs are then skipped)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed: no PyTorch baseline; ratios are against ONNX Runtime FP32")
        return []
    from ctd_export.bench_contenders import pytorch_contenders

    return [pytorch_contenders]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from ctd_runtime.bench import BenchConfig, parse_batches, run_bench
    from ctd_runtime.bench.report import print_report, write_outputs
    from ctd_runtime.cli import table_console

    args = parse_args(argv)
    config = BenchConfig(batches=parse_batches(args.batch), warmup=args.warmup, iters=args.iters, rounds=args.rounds,
                         threads=args.threads, images=args.images, given_box=args.given_box, gpu=not args.no_gpu,
                         max_images=args.max_images)
    result = run_bench(list(args.targets), config, extra=run_contenders())
    files = write_outputs(result, args.out)
    print_report(result, table_console())
    print(f"wrote {', '.join(str(p) for p in files.values())}")
    return result


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
