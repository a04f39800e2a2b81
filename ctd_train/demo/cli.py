"""`ctd demo [--out DIR] [--fast] [--data DIR]`: the whole pipeline in minutes (ctd_train.demo).

Found by the root app through the `ctd.commands` entry point `demo`. Only typer and rich are
imported here; torch and the pipeline are imported in the command body, so `ctd --help` stays
fast and a station lists the command with the `ctd[train]` hint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def demo_cmd(
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for everything the demo writes "
                                       "(default runs/demo, or runs/demo-fast with --fast); rerun to resume."),
    fast: bool = typer.Option(False, "--fast", help="A tiny budget (1 epoch on 18 images): every step runs, "
                              "nothing is learnt (CI)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Your annotated folder (images/ + annotations.csv) "
                                        "instead of the synthetic faces; its OBJ files are measured in 3D."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1,
                                         help="Epochs of each training (default: the budget's)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the synthetic faces, the split and the training."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads (default: every usable core)."),
) -> None:
    """Run the whole pipeline on built-in synthetic faces (no download): train FT and CTD-ED from the
    dlib-resnet29 teacher, compare them, export ONNX FP32 + INT8, measure PFL (px, mm, 3D) on held-out
    images and OBJ captures, bench, and summarise. About 5 minutes on 2 CPU cores."""
    from ctd_runtime.cli import table_console
    from ctd_train.demo.config import DemoConfig
    from ctd_train.demo.pipeline import run_demo

    extra = {"seed": seed, "threads": threads} | ({} if epochs is None else {"epochs": epochs})
    config = DemoConfig.for_budget(fast, out=None if out is None else str(out),
                                   data=None if data is None else str(data), **extra)
    run_demo(config, table_console(120))


def register(app: typer.Typer) -> None:
    """Add `demo` to the root app (the name its entry point declares)."""
    app.command("demo")(demo_cmd)
