"""`ctd evaluate MODEL.onnx --data DIR`: an exported model scored on an annotated folder through
the station's Landmarker (ctd_runtime.station_eval), with no torch.

The training package's `ctd evaluate` hands a .onnx / .plan argument to `evaluate_model`; where
that package is not installed, `evaluate_cmd` is `ctd evaluate` itself (plugins: a station command
takes the place of the stand-in)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ctd_runtime.errors import CtdError
from ctd_runtime.landmarker import LandmarkerOptions
from ctd_runtime.station_eval import BOX_MODES, StationEvalOptions, StationReport, evaluate_station

MODEL_SUFFIXES: tuple[str, ...] = (".onnx", ".plan", ".engine")


def is_model_file(path: str | Path) -> bool:
    """An exported model (evaluated through the station path) rather than a run folder."""
    return Path(path).suffix.lower() in MODEL_SUFFIXES


def evaluate_model(model: Path, data: Optional[Path], boxes: str = "gt,auto", unit: str = "pfl",
                   threshold: float = 0.10, pixel_spacing: Optional[float] = None, out: Optional[Path] = None,
                   threads: Optional[int] = None) -> StationReport:
    """Evaluate, print the tables, write station_eval.json/csv (to --out, default beside the model)."""
    if data is None:
        raise CtdError("an exported model has no data folder of its own: give --data DIR (images/ + annotations.csv)")
    options = StationEvalOptions(boxes=tuple(b.strip() for b in boxes.split(",") if b.strip()), unit=unit,
                                 threshold=threshold, pixel_spacing=pixel_spacing)
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("evaluating", total=None)
        report = evaluate_station(model, data, options, LandmarkerOptions(threads=threads),
                                  out_dir=out if out is not None else Path(model).parent / "station_eval",
                                  progress=lambda n: progress.advance(task, n))
    print_station_report(report)
    return report


def print_station_report(report: StationReport) -> None:
    out = Console(highlight=False, soft_wrap=True, width=140)
    o = report.options
    out.print(f"{report.model} on {report.data}: {len(report.image_names)} images (every image: no split)")
    table = Table(title="station evaluation", caption=f"errors in {o.unit}; FR and AUC at {o.threshold:g} {o.unit}; "
                  "metrics over the images where a face was found")
    for col in ("box", "ME +- SD", "FR", "AUC", "mean |PFL error|", "ME px", "|PFL error| px", "not found",
                "FR incl. not found", "s / image"):
        table.add_column(col, justify="left" if col == "box" else "right")
    n = max(len(report.image_names), 1)
    for mode, r in report.results.items():
        ev, px = r.evaluations.get(o.unit), r.evaluations.get("px")
        if ev is None or px is None:
            table.add_row(mode, "-", "-", "-", "-", "-", "-", str(r.not_found), "100%", f"{r.seconds / n:.3f}")
            continue
        s = ev.summary
        fr_all = report.to_dict()["boxes"][mode]["fr_with_not_found"]
        table.add_row(mode, f"{s.me:.4g} +- {s.sd:.3g}", f"{100 * s.fr:.1f}%", f"{s.auc:.3f}",
                      f"{ev.pfl_error_mean_abs:.4g}", f"{px.summary.me:.3f}", f"{px.pfl_error_mean_abs:.3f}",
                      str(r.not_found), f"{100 * fr_all:.1f}%", f"{r.seconds / n:.3f}")
    out.print(table)
    if report.agreement is not None:
        out.print(f"automatic box within {o.agreement_pfl:g} PFL of the ground-truth-box PFL: "
                  f"{100 * report.agreement:.1f}% of images")
    for kind, path in report.files.items():
        out.print(f"wrote {kind}: {path}")


def evaluate_cmd(
    models: List[Path] = typer.Argument(..., help="Exported model: model.onnx or model.plan."),
    data: Optional[Path] = typer.Option(None, "--data", help="Annotated folder (images/ + annotations.csv)."),
    boxes: str = typer.Option("gt,auto", "--boxes", help=f"Box modes, comma-separated: {', '.join(BOX_MODES)}."),
    unit: str = typer.Option("pfl", "--unit", help="pfl, px, crop_px or mm (needs --pixel-spacing)."),
    threshold: float = typer.Option(0.10, "--threshold", help="Failure threshold in --unit (FR, AUC)."),
    pixel_spacing: Optional[float] = typer.Option(None, "--pixel-spacing", help="mm per source pixel."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for station_eval.json/csv (default: "
                                       "station_eval/ beside the model)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="ONNX Runtime CPU threads."),
) -> None:
    """Evaluate an exported model on an annotated folder through the station path (no torch)."""
    if len(models) != 1 or not is_model_file(models[0]):
        raise CtdError("on this install `ctd evaluate` takes one exported model (.onnx or .plan); evaluating a run "
                       "folder needs the training stack: pip install 'ctd[train]'")
    evaluate_model(models[0], data, boxes, unit, threshold, pixel_spacing, out, threads)
