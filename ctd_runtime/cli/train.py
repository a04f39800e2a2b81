"""`ctd train` and `ctd evaluate`: train a landmark model on an annotated folder, evaluate runs.

Thin: parse options, call `ctd_train.trainer.train` / `ctd_train.evaluate` (imported inside the
commands, so torch is never imported by `ctd --help` or the station commands), print with rich.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.table import Table

from ctd_runtime.cli import table_console

from ctd_runtime.codec import DECODE_METHODS
from ctd_runtime.errors import CtdError
from ctd_runtime.metrics import ERROR_UNITS


def _choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise CtdError(f"unknown {what} {value!r}; choose from {', '.join(choices)}")
    return value


def train_cmd(
    data: Path = typer.Option(..., "--data", help="Data folder (images/ + annotations.csv)."),
    out: Path = typer.Option(..., "--out", help="Run folder; running again with the same options resumes."),
    schema: str = typer.Option("imm14", "--schema", help="Built-in schema name or schema JSON file."),
    teacher: str = typer.Option("hse-mobilenet-vggface2", "--teacher", help="Teacher name (`ctd teacher list`)."),
    teacher_weights: Optional[Path] = typer.Option(None, "--teacher-weights", help="Teacher weight file."),
    method: str = typer.Option("ctd-ed", "--method", help="fe, ftp, ft, hg, ctd-cd, ctd-ed or ctd-com."),
    train_subjects: Optional[int] = typer.Option(None, "--train-subjects", help="Limited labels: this many training subjects."),
    train_images: Optional[int] = typer.Option(None, "--train-images", help="Limited labels: this many training images."),
    val_subjects: Optional[int] = typer.Option(None, "--val-subjects", help="Validation subjects (default 10%)."),
    test_subjects: Optional[int] = typer.Option(None, "--test-subjects", help="Test subjects (default 20%)."),
    epochs: int = typer.Option(150, "--epochs"),
    batch_size: int = typer.Option(2, "--batch-size"),
    lr: float = typer.Option(1e-3, "--lr", help="Initial learning rate (polynomial decay to 0)."),
    lr_power: float = typer.Option(0.9, "--lr-power"),
    seed: int = typer.Option(0, "--seed"),
    lambda_: float = typer.Option(0.002, "--lambda", help="Weight of each distillation term (eq 2)."),
    mu: float = typer.Option(2.0, "--mu", help="Temperature of classifier distillation (eq 3)."),
    head_channels: int = typer.Option(256, "--head-channels"),
    hg_stacks: int = typer.Option(2, "--hg-stacks"),
    input_size: int = typer.Option(256, "--input-size", help="Crop side in pixels (heatmaps are a quarter)."),
    margin: float = typer.Option(0.25, "--margin", help="Crop margin around all annotated points."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Train without augmentation."),
    flip: bool = typer.Option(False, "--flip", help="Horizontal flip augmentation (schemas with flip pairs only)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader worker processes."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads (default: every core)."),
    device: str = typer.Option("auto", "--device", help="auto (a CUDA GPU when torch sees one) | cpu | cuda | cuda:N."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last"),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bfloat16 autocast on the CPU."),
    decode: str = typer.Option("argmax", "--decode", help="Decode for validation and test: argmax, quarter, dark."),
    run_id: Optional[str] = typer.Option(None, "--run-id"),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Train a landmark model (the paper's methods) and evaluate its best checkpoint on the test split."""
    from ctd_train.config import TrainConfig
    from ctd_train.data.augment import AugmentConfig
    from ctd_train.methods import MethodConfig
    from ctd_train.trainer import train

    _choice(decode, DECODE_METHODS, "decode")
    defaults = TrainConfig(data="", out="")
    config = TrainConfig(
        data=str(data), out=str(out), schema=schema, teacher=teacher,
        teacher_weights=None if teacher_weights is None else str(teacher_weights),
        method=MethodConfig(name=method, lambda_=lambda_, mu=mu, head_channels=head_channels, hg_stacks=hg_stacks),
        epochs=epochs, batch_size=batch_size, lr=lr, lr_power=lr_power, seed=seed,
        train_subjects=train_subjects, train_images=train_images, val_subjects=val_subjects,
        test_subjects=test_subjects, augment=None if no_augment else AugmentConfig(flip=flip),
        margin=margin, input_size=input_size,
        workers=defaults.workers if workers is None else workers,
        threads=threads,
        device=device,
        channels_last=defaults.channels_last if channels_last is None else channels_last,
        bf16=defaults.bf16 if bf16 is None else bf16,
        decode=decode, run_id=run_id,
    )
    run_dir = train(config, progress=not no_progress)
    table_console(120).print(f"run: {run_dir}")


def _summary_table(rows: list[tuple[str, Any]], unit: str, threshold: float, title: str) -> Table:
    from ctd_train.evaluate import format_me_sd

    t = Table(title=title, caption=f"errors in {unit}; FR and AUC at threshold {threshold:g} {unit}")
    for col in ("Method", "ME +- SD", "FR", "AUC", "images"):
        t.add_column(col, justify="left" if col == "Method" else "right")
    for label, s in rows:
        t.add_row(label, format_me_sd(s.me, s.sd, unit), f"{100 * s.fr:.2f}%", f"{s.auc:.3f}", str(s.n_images))
    return t


def print_report(report, console: Console) -> None:
    """The tables of `ctd evaluate` for one run."""
    from ctd_train.evaluate import format_me_sd, method_label

    unit, thr = report.unit, report.threshold
    head = (f"{method_label(report.method)}: {report.run_dir} (epoch {report.epoch}), {report.split} split, "
            f"{report.n_images} images, decode {report.decode}")
    console.print(head, highlight=False)
    console.print(_summary_table([(method_label(report.method), report.evaluation.summary)], unit, thr, "summary"))

    units = Table(title="mean error in every unit", caption=f"FR/AUC above use {thr:g} {unit}")
    for col in ("unit", "ME +- SD", "mean |PFL error|"):
        units.add_column(col, justify="left" if col == "unit" else "right")
    for u, ev in report.evaluations.items():
        units.add_row(u, format_me_sd(ev.summary.me, ev.summary.sd, u), f"{ev.pfl_error_mean_abs:.4g}")
    console.print(units)

    lm = Table(title="per-landmark mean error", caption=f"in {unit} (threshold {thr:g} {unit})")
    lm.add_column("landmark")
    lm.add_column(f"error ({unit})", justify="right")
    lm.add_column("error (px)", justify="right")
    px = report.evaluations["px"]
    for name, e, epx in zip(report.landmark_names, report.evaluation.per_landmark_mean, px.per_landmark_mean):
        lm.add_row(name, f"{e:.4g}", f"{epx:.3f}")
    console.print(lm)

    pe = report.evaluation.pfl_error_signed
    pfl = Table(title="PFL error (predicted - true)", caption=f"in {unit} and px (threshold {thr:g} {unit})")
    for col in ("unit", "mean |error|", "mean signed", "SD"):
        pfl.add_column(col, justify="left" if col == "unit" else "right")
    import numpy as np

    pfl.add_row(unit, f"{report.evaluation.pfl_error_mean_abs:.4g}", f"{np.mean(pe):.4g}", f"{np.std(pe):.4g}")
    if unit != "px":
        pp = px.pfl_error_signed
        pfl.add_row("px", f"{px.pfl_error_mean_abs:.4g}", f"{np.mean(pp):.4g}", f"{np.std(pp):.4g}")
    console.print(pfl)
    for kind, path in report.files.items():
        console.print(f"wrote {kind}: {path}", highlight=False)


def evaluate_cmd(
    runs: List[Path] = typer.Argument(..., help="Run folder (or several with --compare)."),
    compare: bool = typer.Option(False, "--compare", help="Compare several runs in one table and CED plot."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data folder (default: the run's)."),
    split: str = typer.Option("test", "--split", help="train, val, test or all (the run's subject split)."),
    decode: str = typer.Option("argmax", "--decode", help="argmax, quarter or dark."),
    unit: str = typer.Option("pfl", "--unit", help="pfl, px, crop_px or mm (needs --pixel-spacing)."),
    threshold: float = typer.Option(0.10, "--threshold", help="Failure threshold in --unit (FR, AUC)."),
    pixel_spacing: Optional[float] = typer.Option(None, "--pixel-spacing", help="mm per source pixel."),
    which: str = typer.Option("best", "--which", help="best or last checkpoint."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for CSV/PNG/JSON (default: the run dir; "
                                       "for --compare the runs' common parent)."),
) -> None:
    """Evaluate a run (ME +- SD, FR, AUC, per-landmark and PFL errors; CSV + CED PNG), or compare runs."""
    _choice(decode, DECODE_METHODS, "decode")
    _choice(unit, ERROR_UNITS, "unit")
    _choice(which, ("best", "last"), "checkpoint")
    from ctd_train.evaluate import compare_runs, evaluate_run

    console = table_console(120)
    if compare:
        import os

        out_dir = out if out is not None else Path(os.path.commonpath([str(Path(r).resolve()) for r in runs]))
        if len(runs) == 1:
            out_dir = Path(runs[0]).resolve().parent if out is None else out
        comp = compare_runs(runs, data=data, split=split, decode=decode, threshold=threshold, unit=unit,
                            pixel_spacing=pixel_spacing, out_dir=out_dir)
        console.print(_summary_table(
            [(lab, r.evaluation.summary) for lab, r in zip(comp.labels, comp.reports)], unit, threshold,
            f"{split} split, decode {decode}",
        ))
        for kind, path in comp.files.items():
            console.print(f"wrote {kind}: {path}", highlight=False)
        return
    if len(runs) != 1:
        raise CtdError(f"give one run to evaluate, or --compare for {len(runs)} runs")
    report = evaluate_run(runs[0], data=data, split=split, decode=decode, threshold=threshold, unit=unit,
                          pixel_spacing=pixel_spacing, which=which, out_dir=out)
    print_report(report, console)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)
