"""`ctd infer MODEL INPUT... [--box x,y,w,h] [--spacing MM_PER_PX] [--out DIR]` and
`ctd infer MODEL --watch DIR`: the station's measurement commands (docs/infer.md)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ctd_runtime.captures import find_captures
from ctd_runtime.crop_rule import Box, check_box
from ctd_runtime.errors import CtdError
from ctd_runtime.infer import BatchReport, InferOptions, run_batch
from ctd_runtime.landmarker import Landmarker, LandmarkerOptions
from ctd_runtime.watch import Watcher, WatchOptions, describe

err = Console(stderr=True, highlight=False, soft_wrap=True)


def parse_box(text: str | None) -> Box | None:
    """'x,y,w,h' -> a checked box."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise CtdError(f"--box must be four numbers x,y,w,h, not {text!r}") from None
    return check_box(values, where="--box")


def infer_cmd(
    model: Path = typer.Argument(..., help="Exported model: model.onnx (ONNX Runtime) or model.plan (TensorRT)."),
    inputs: Optional[List[Path]] = typer.Argument(None, help="Images, folders of images, or 3dMD captures (.obj)."),
    box: Optional[str] = typer.Option(None, "--box", help="Face box x,y,w,h in px (the box of the annotated points); "
                                      "default: found by the model itself."),
    spacing: Optional[float] = typer.Option(None, "--spacing", help="Pixel spacing, mm per px, for PFL in mm "
                                            "(or a <image>.json sidecar per image)."),
    out: Path = typer.Option(Path("ctd-infer"), "--out", help="Folder for results.jsonl, results.csv, overlays/."),
    watch: Optional[Path] = typer.Option(None, "--watch", help="Serve a folder: measure each capture written into it."),
    poll: float = typer.Option(1.0, "--poll", help="--watch: seconds between looks at the folder."),
    settle: float = typer.Option(10.0, "--settle", help="--watch: seconds a capture that does not read stays "
                                 "unchanged before its error result is written."),
    overlays: bool = typer.Option(True, "--overlays/--no-overlays", help="Write an overlay PNG per capture."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="ONNX Runtime CPU threads."),
    max_passes: int = typer.Option(8, "--max-passes", min=1, help="Most coarse-to-fine passes per image."),
    face_detector: Optional[Path] = typer.Option(None, "--face-detector", help="YuNet ONNX file for OpenCV's "
                                                 "FaceDetectorYN (optional first box)."),
) -> None:
    """Measure PFL on captures: landmarks, PFL in px, mm and 3D, quality flags, overlays."""
    options = InferOptions(box=parse_box(box), spacing_mm=spacing, overlays=overlays)
    if watch is None and not inputs:
        raise CtdError("give INPUT files or folders, or --watch DIR")
    if watch is not None and inputs:
        raise CtdError("--watch serves one folder: give no INPUT with it")
    serve = WatchOptions(poll_s=poll, settle_s=settle) if watch is not None else None  # checked before the model
    captures = find_captures(inputs) if inputs else []
    lm = Landmarker(model, LandmarkerOptions(threads=threads, max_passes=max_passes, face_detector=face_detector,
                                             min_passes=min(2, max_passes)))
    with lm:
        if watch is not None:
            _serve(lm, watch, options, serve)
            return
        report = _run_with_progress(lm, captures, options, out)
    _summarise(report)


def _run_with_progress(lm: Landmarker, captures: list, options: InferOptions, out: Path) -> BatchReport:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task("measuring", total=len(captures))

        def step(capture, result) -> None:
            progress.update(task, advance=1, description=f"{result.status:7s} {capture.name[:40]}")

        return run_batch(lm, captures, options, out, progress=step)


def _summarise(report: BatchReport) -> None:
    out = Console(highlight=False, soft_wrap=True)
    counts = {s: sum(r.status == s for r in report.results) for s in ("ok", "no_face", "error")}
    for kind, path in report.files.items():
        out.print(f"wrote {path}")
    out.print(f"{len(report.results)} captures: {counts['ok']} measured, {counts['no_face']} without a face found, "
              f"{counts['error']} failed")
    for r in report.results:
        if r.status == "no_face":
            out.print(f"[yellow]no face[/] {escape(describe(r)[len('no face '):])}")
    for r in report.failures:
        err.print(f"[bold red]failed:[/] {escape(r.error or '')}")
    if report.failures:
        raise typer.Exit(1)


def _serve(lm: Landmarker, folder: Path, options: InferOptions, watch: WatchOptions) -> None:
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        Watcher(lm, folder, options, watch, log=lambda line: print(line, flush=True)).run(stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def register(app: typer.Typer) -> None:
    """Add `ctd infer` to the root app."""
    app.command("infer")(infer_cmd)
