"""`ctd data` commands: import annotated data into the folder format and look at training crops.

The training package (numpy + OpenCV readers, torch dataset) is imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ctd_runtime.errors import CtdError

out = Console(soft_wrap=True, highlight=False)


def _print_report(report, what: str) -> None:
    out.print(
        f"imported {report.num_images} images from {what} into {report.out_dir} "
        f"({report.linked} linked, {report.copied} copied)",
        markup=False,
    )
    for image, eye in report.reordered:
        out.print(
            f"  eye contour re-ordered (started at the medial corner): {image}, subject's {eye} eye",
            markup=False,
        )
    for name, why in report.skipped:
        out.print(f"  skipped {name}: {why}", markup=False)


def import_imm_cmd(
    asf_dir: Path = typer.Argument(..., help="Folder of IMM .asf files."),
    images: Path = typer.Option(..., "--images", help="Folder holding the images the ASF files name."),
    out_dir: Path = typer.Option(..., "--out", help="Output data folder (images/ + annotations.csv)."),
    skip_missing: bool = typer.Option(False, "--skip-missing", help="Skip ASF files whose image is absent."),
    copy: bool = typer.Option(False, "--copy", help="Copy the images instead of symlinking them."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing annotations.csv."),
) -> None:
    """Import IMM Face Database ASF files (x = x_rel * width; eye contours normalised)."""
    from ctd_train.data.imm_asf import import_imm

    report = import_imm(asf_dir, images, out_dir, skip_missing_images=skip_missing, copy=copy, force=force)
    _print_report(report, str(asf_dir))


def import_pts_cmd(
    folder: Path = typer.Argument(..., help="Folder of images with iBUG .pts files of the same name."),
    out_dir: Path = typer.Option(..., "--out", help="Output data folder (images/ + annotations.csv)."),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Skip files without an image or with points outside it."
    ),
    copy: bool = typer.Option(False, "--copy", help="Copy the images instead of symlinking them."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing annotations.csv."),
) -> None:
    """Import iBUG/300-W .pts annotations (1-based coordinates, converted to 0-based)."""
    from ctd_train.data.ibug_pts import import_pts

    report = import_pts(folder, out_dir, skip_invalid=skip_invalid, copy=copy, force=force)
    _print_report(report, str(folder))


def show_cmd(
    data: Path = typer.Argument(..., help="Data folder (images/ + annotations.csv)."),
    schema: str = typer.Option("imm14", "--schema", help="Built-in schema name or schema JSON file."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for the PNGs (created if needed)."),
    n: int = typer.Option(6, "--n", min=1, help="Number of images to draw."),
    seed: int = typer.Option(0, "--seed", min=0, help="Picks the images (and the augmentation)."),
    augment: bool = typer.Option(False, "--augment", help="Apply the default training augmentation."),
    margin: float = typer.Option(0.25, "--margin", help="Crop margin around all annotated points."),
) -> None:
    """Draw samples: source image with landmarks and crop box, and the crop with heatmaps."""
    from ctd_runtime.schema import get_schema

    sch = get_schema(schema)
    if out_dir.exists() and not out_dir.is_dir():
        raise CtdError("output path exists and is not a folder", path=out_dir)
    from ctd_train.data.visualize import write_samples

    written = write_samples(data, sch, out_dir, n=n, seed=seed, augment=augment, margin=margin)
    out.print(f"wrote {len(written)} PNGs to {out_dir}", markup=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    data_app = typer.Typer(help="Import annotated images and inspect training crops.", no_args_is_help=True)
    data_app.command("import-imm")(import_imm_cmd)
    data_app.command("import-pts")(import_pts_cmd)
    data_app.command("show")(show_cmd)
    app.add_typer(data_app, name="data")
