"""`ctd export`: a training run -> DIR/model.onnx (fused: uint8 image + crop affine in, landmarks
out; or `--raw` heatmaps), gated by parity with PyTorch. The export code (torch, onnx) is
imported inside the command."""

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
        None, "--images", help="Folder of validation images (default: the run's validation split)."
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
) -> None:
    """Export a trained run to ONNX with ctd metadata; fails, writing nothing, unless the ONNX
    model's landmarks match PyTorch's within the tolerance."""
    from ctd_export.onnx_export import ExportOptions, export_run

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    options = ExportOptions(
        decode=decode, heatmaps=heatmaps, raw=raw, tolerance_px=tolerance,
        images=None if images is None else str(images), max_images=max_images, which=which,
        schema=schema, force=force, threads=threads,
    )
    result = export_run(run, out_dir, options)
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


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("export")(export_cmd)
