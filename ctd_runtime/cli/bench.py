"""`ctd bench MODEL_OR_RUN... [--batch 1,4] [--warmup N] [--iters N] [--images DIR] [--out DIR]`:
every contender of the given models (ONNX Runtime precisions, TensorRT) and runs (the PyTorch
baseline, through the `ctd.bench_contenders` plug-ins) timed side by side (ctd_runtime.bench)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ctd_runtime.bench import BenchConfig, parse_batches, run_bench
from ctd_runtime.bench.report import print_report, write_outputs
from ctd_runtime.machine import usable_cores


def bench_cmd(
    targets: List[Path] = typer.Argument(..., help="model.onnx / model.plan, an export folder, or a training run "
                                                   "folder (the PyTorch eager baseline; needs ctd[train])."),
    batch: str = typer.Option("1", "--batch", help="Batch sizes, comma-separated (e.g. 1,4)."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed iterations per contender and batch."),
    iters: int = typer.Option(20, "--iters", min=1, help="Timed iterations per contender, batch and round."),
    rounds: int = typer.Option(3, "--rounds", min=1, help="Repeats of the interleaved iterations (the spread)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads of every contender "
                                                                         "(default: the usable cores)."),
    images: Optional[Path] = typer.Option(None, "--images", help="Images to time; an annotated folder "
                                                                 "(images/ + annotations.csv) adds accuracy."),
    max_images: int = typer.Option(64, "--max-images", min=1, help="Use at most this many images of --images."),
    given_box: bool = typer.Option(False, "--given-box", help="Use the annotations' boxes (one pass) instead "
                                                              "of the coarse-to-fine search."),
    gpu: bool = typer.Option(True, "--gpu/--no-gpu", help="Also time the GPU contenders where a GPU is there."),
    out: Path = typer.Option(Path("ctd-bench"), "--out", help="Folder for bench.json and bench.png."),
) -> None:
    """Time every way of running a model side by side, interleaved, per stage; ratios, accuracy, % of peak."""
    from ctd_runtime.cli import table_console

    config = BenchConfig(batches=parse_batches(batch), warmup=warmup, iters=iters, rounds=rounds,
                         threads=threads or usable_cores(), images=images, given_box=given_box, gpu=gpu, max_images=max_images)
    result = run_bench(list(targets), config)
    files = write_outputs(result, out)
    console = table_console()
    print_report(result, console)
    console.print(f"wrote {', '.join(str(p) for p in files.values())}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `ctd bench` to the root app."""
    app.command("bench")(bench_cmd)
