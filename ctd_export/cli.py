"""`ctd export`: a training run -> DIR/model.onnx (fused: uint8 image + crop affine in, landmarks
out; or `--raw` heatmaps), gated by parity with PyTorch.

The root app (ctd_runtime.cli) finds `register` through the `ctd.commands` entry points; torch
and onnx are imported inside the command, so `ctd --help` stays fast and works on a station."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

out = Console()


def print_parity(report, source: str = "") -> None:
    """The parity numbers as a small rich table (worst landmarks first)."""
    colour = "green" if report.passed else "red"
    verdict = "passed" if report.passed else "FAILED"
    out.print(
        f"[{colour}]parity {verdict}[/]: max {report.max_px:.4g} px, mean {report.mean_px:.4g} px "
        f"over {report.num_images} crops (tolerance {report.tolerance_px:g} px; decode {report.decode}, "
        f"{report.graph} graph vs PyTorch)" + (f"\n  images: {source}" if source else ""),
        highlight=False,
    )
    if report.heatmap_max_rel is not None:
        out.print(f"  heatmaps differ by at most {report.heatmap_max_rel:.2g} of their magnitude "
                  f"(tolerance {report.heatmap_tolerance:g})", highlight=False)
    for note in report.notes:
        out.print(f"  [yellow]note:[/] {note}", highlight=False)
    names = report.landmark_names or tuple(str(i) for i in range(len(report.per_landmark_max)))
    order = sorted(range(len(names)), key=lambda i: -report.per_landmark_max[i])[:5]
    table = Table("landmark", "max px", title="largest per-landmark differences", title_justify="left")
    for i in order:
        table.add_row(names[i], f"{report.per_landmark_max[i]:.3g}")
    out.print(table)


def export_cmd(
    run: Path = typer.Argument(..., help="Run folder (or its checkpoint file)."),
    out_dir: Path = typer.Option(..., "--out", help="Output folder for model.onnx and export_config.json."),
    decode: Optional[str] = typer.Option(
        None, "--decode", help="argmax | quarter | dark (default: the run's own decode method)."
    ),
    heatmaps: bool = typer.Option(False, "--heatmaps", help="The fused graph also outputs the heatmaps."),
    raw: bool = typer.Option(
        False, "--raw", help="Export the plain predictor (normalised NCHW input -> heatmaps) instead."
    ),
    tolerance: float = typer.Option(
        0.1, "--tolerance", help="Parity gate: largest landmark difference allowed, source pixels."
    ),
    images: Optional[Path] = typer.Option(
        None, "--images", help="Folder of validation images (default: the run's validation split; a final fit's training split)."
    ),
    max_images: int = typer.Option(16, "--max-images", min=1, help="Crops the parity gate compares."),
    which: str = typer.Option("best", "--checkpoint", help="best | last"),
    schema: Optional[str] = typer.Option(
        None, "--schema", help="Refuse a run trained for another schema (built-in name or JSON)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing model.onnx."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="CPU threads of the parity run (torch and ONNX Runtime)."
    ),
    precision: Optional[str] = typer.Option(
        None, "--precision",
        help="Comma-separated subset of fp32,fp16,int8 (default: all three for the fused graph, fp32 "
             "with --raw). model.onnx (fp32) is always written: it is the parity-gated base.",
    ),
    calibration: str = typer.Option("minmax", "--calibration", help="INT8 calibration: minmax | entropy | percentile."),
    calib_images: int = typer.Option(64, "--calib-images", min=1, help="Training images the INT8 calibration sees."),
    int8_activations: str = typer.Option(
        "int8", "--int8-activations",
        help="INT8 activations: int8 (symmetric, TensorRT-ready; the default) | uint8 (asymmetric: every Conv "
             "fuses to QLinearConv in ONNX Runtime CPU, faster there, refused by ctd build-engine).",
    ),
    head_op: str = typer.Option(
        "convtranspose", "--head-op",
        help="How the graph writes the head's 4x4 stride-2 deconvolutions: convtranspose (as trained) | subpixel "
             "(one 3x3 Conv + DepthToSpace) | subpixel2x2 (one 2x2 Conv + DepthToSpace + border Slice); the same "
             "network, held to the same parity gate.",
    ),
    engine: bool = typer.Option(
        False, "--engine", help="Also build model.plan (TensorRT FP16) + model.plan.json here (needs tensorrt + GPU)."
    ),
    refine: Optional[Path] = typer.Option(
        None, "--refine", help="Eye-refinement run (trained with --crop pfl): export face + eye as one two-stage graph (FP32)."
    ),
) -> None:
    """Export a trained run to ONNX with ctd metadata; fails, writing nothing, unless the ONNX
    model's landmarks match PyTorch's within the tolerance. Writes model.onnx, model.fp16.onnx and
    model.int8.onnx by default; --engine adds the TensorRT engine."""
    from ctd_export.onnx_export import ExportOptions, export_run

    if refine is not None:
        if head_op != "convtranspose":
            from ctd_runtime.errors import CtdError

            raise CtdError("--head-op applies to one-stage graphs; the two-stage graph (--refine) keeps ConvTranspose")
        _export_two_stage(run, refine, out_dir, decode, tolerance, images, max_images, which, force, threads, precision)
        return
    options = ExportOptions(
        decode=decode, heatmaps=heatmaps, raw=raw, tolerance_px=tolerance,
        images=None if images is None else str(images), max_images=max_images, which=which,
        schema=schema, force=force, threads=threads, precisions=parse_precisions(precision, raw),
        calibration=calibration, calibration_images=calib_images, engine=engine, head_op=head_op,
        int8_activations=int8_activations,
    )
    from ctd_export.progress import ConsoleProgress

    shown = ConsoleProgress(out)
    result = export_run(run, out_dir, options, log=shown.log, progress=shown.progress)
    print_parity(result.parity, result.parity_source)
    meta = result.metadata
    out.print(
        f"wrote {result.model_path} ({meta.graph} graph, decode {meta.decode}, {meta.precision}, "
        f"{meta.num_landmarks} landmarks, outputs {', '.join(meta.outputs)}) and {result.config_path.name}",
        highlight=False,
    )
    for name, path in result.artifacts.items():
        if name != "onnx":
            out.print(f"wrote {path}", highlight=False)


def _export_two_stage(run: Path, refine: Path, out_dir: Path, decode: Optional[str], tolerance: float,
                      images: Optional[Path], max_images: int, which: str, force: bool, threads: Optional[int],
                      precision: Optional[str]) -> None:
    """`ctd export RUN --refine EYE_RUN`: the two-stage graph, FP32 only for now."""
    from ctd_export.cascade_export import export_cascade
    from ctd_export.onnx_export import ExportOptions
    from ctd_runtime.errors import CtdError

    if precision is not None and parse_precisions(precision, False) != ("fp32",):
        raise CtdError("the two-stage graph (--refine) is exported in FP32 only; FP16/INT8 variants are made "
                       "for one-stage graphs")
    options = ExportOptions(decode=decode, tolerance_px=tolerance, images=None if images is None else str(images),
                            max_images=max_images, which=which, force=force, threads=threads, precisions=("fp32",))
    config = export_cascade(run, refine, out_dir, options, log=lambda msg: out.print(msg, highlight=False))
    parity = config["parity"]
    out.print(f"wrote {Path(out_dir) / config['model']} (two-stage fused graph: face {config['face_run']}, eye "
              f"{config['eye_run']}; parity mean {parity['mean_px']:.3g} px, max {parity['max_px']:.3g} px)",
              highlight=False)


def parse_precisions(text: str | None, raw: bool) -> tuple[str, ...]:
    """`--precision` as a tuple; fp32 is implied (the other files are made from it)."""
    from ctd_runtime.artifacts import ONNX_PRECISIONS
    from ctd_runtime.errors import CtdError

    if text is None:
        return ("fp32",) if raw else ONNX_PRECISIONS
    chosen = [p.strip().lower() for p in text.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in ONNX_PRECISIONS]
    if unknown:
        raise CtdError(f"unknown precision {unknown[0]!r}; choose from {', '.join(ONNX_PRECISIONS)}")
    if raw and any(p != "fp32" for p in chosen):
        raise CtdError("--raw exports the plain FP32 network only; FP16/INT8 are made from the fused graph")
    return ("fp32",) + tuple(p for p in ONNX_PRECISIONS[1:] if p in chosen)


def register(app: typer.Typer) -> None:
    """Add `export` to the root app (the name its entry point declares)."""
    app.command("export")(export_cmd)
