"""`ctd build-engine`: model.onnx (or model.fp16.onnx / model.int8.onnx) -> model.plan + its
manifest, on the machine that will run it (`pip install 'ctd[tensorrt]'`, no torch, no onnx).

The arguments (file, precision, profile, workspace) and the model's ctd metadata are checked
before TensorRT is imported, so `--help` and a wrong argument answer the same on a machine
without TensorRT; only then does a missing TensorRT print the install hint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ctd_runtime.artifacts import manifest_path, onnx_variant, plan_path
from ctd_runtime.engine.build import ShapeProfile, build_engine, check_build_arguments, resolve_onnx
from ctd_runtime.engine.check import check_engine
from ctd_runtime.engine.environment import current_environment, import_tensorrt
from ctd_runtime.engine.manifest import describe, engine_is_current, read_manifest
from ctd_runtime.errors import CtdError
from ctd_runtime.model_meta import read_model_metadata

out = Console()


def build_engine_cmd(
    model: Path = typer.Argument(..., help="Fused ONNX file: model.onnx, model.fp16.onnx or model.int8.onnx."),
    plan: Optional[Path] = typer.Option(None, "--out", help="Engine file (default: model.plan beside the ONNX)."),
    precision: Optional[str] = typer.Option(
        None, "--precision", help="fp16 | int8 | fp32 (default: fp16, or int8 for the INT8 model)."
    ),
    min_batch: int = typer.Option(1, "--min-batch", min=1),
    opt_batch: int = typer.Option(1, "--opt-batch", min=1),
    max_batch: int = typer.Option(4, "--max-batch", min=1),
    min_height: int = typer.Option(32, "--min-height", min=1, help="Smallest image height, px."),
    opt_height: int = typer.Option(1080, "--opt-height", min=1, help="Image height TensorRT tunes for."),
    max_height: int = typer.Option(4096, "--max-height", min=1, help="Largest image height, px."),
    min_width: int = typer.Option(32, "--min-width", min=1),
    opt_width: int = typer.Option(1440, "--opt-width", min=1),
    max_width: int = typer.Option(4096, "--max-width", min=1),
    workspace_mb: int = typer.Option(2048, "--workspace-mb", min=1, help="Builder workspace limit, MiB."),
    timing_cache: Optional[Path] = typer.Option(
        None, "--timing-cache", help="Timing cache file: read if present, written after the build."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild even when the plan is current."),
    verbose: bool = typer.Option(False, "--verbose", help="TensorRT's verbose log."),
    check_images: Optional[Path] = typer.Option(
        None, "--check-images", help="Folder of captures for the engine check (default: a built-in synthetic set)."),
    no_check: bool = typer.Option(False, "--no-check", help="Skip the engine check against model.onnx."),
) -> None:
    """Build a TensorRT engine for this GPU; skips the build when the plan is current (same ONNX,
    same TensorRT and GPU). The engine is then checked against model.onnx under ONNX Runtime
    (the gate of its precision); an engine that fails is removed."""
    profile = ShapeProfile(min_batch, opt_batch, max_batch, min_height, opt_height, max_height,
                           min_width, opt_width, max_width)
    check_build_arguments(model, profile, workspace_mb, precision)
    if check_images is not None and not Path(check_images).is_dir():
        raise CtdError("--check-images: not a folder", path=check_images)
    read_model_metadata(model)  # a ctd model? (ONNX Runtime, before TensorRT)
    trt = import_tensorrt()  # the install hint only once the arguments are right
    source, _, _ = resolve_onnx(model, str(trt.__version__), precision)
    target = plan if plan is not None else plan_path(source)
    if not force and engine_is_current(target, source, current_environment(trt)):
        out.print(f"{target} is current (built from {source.name} for this GPU and TensorRT); --force rebuilds it",
                  highlight=False)
        manifest = read_manifest(target)
    else:
        manifest = build_engine(model, plan, profile, workspace_mb, timing_cache, precision, verbose,
                                log=lambda msg: out.print(msg, highlight=False))
    table = Table("", "", show_header=False, title=f"engine {manifest.plan_file}", title_justify="left")
    for key, value in describe(manifest).items():
        table.add_row(key, str(value))
    out.print(table)
    if not no_check:
        gate_engine(target, onnx_variant(source, "fp32"), check_images)


def gate_engine(plan: Path, reference: Path, images: Optional[Path]) -> None:
    """The engine check; a failing engine and its manifest are removed (CtdError, exit 2)."""
    result = check_engine(plan, reference, images)
    out.print(result.summary(), highlight=False)
    if not result.passed:
        for path in (Path(plan), manifest_path(plan)):
            path.unlink(missing_ok=True)
        raise CtdError(f"the engine failed its check against {reference.name} and was removed; "
                       "rebuild with another precision or report the TensorRT version", path=plan)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("build-engine")(build_engine_cmd)
