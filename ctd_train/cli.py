"""The training package's commands: `ctd train`, `ctd evaluate`, `ctd data ...`, `ctd teacher ...`.

The root app (ctd_runtime.cli) finds `register` through the `ctd.commands` entry points. Only typer,
rich and torch-free ctd_runtime modules are imported here; torch and the rest of ctd_train are
imported inside the command bodies, so `ctd --help` stays fast and works on a station.
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
from ctd_runtime.options import check_number

printer = Console(soft_wrap=True, highlight=False)


def _choice(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise CtdError(f"unknown {what} {value!r}; choose from {', '.join(choices)}")
    return value


# ---------------------------------------------------------------------------------------------
# ctd train


def train_cmd(
    data: Path = typer.Option(..., "--data", help="Data folder (images/ + annotations.csv)."),
    out: Path = typer.Option(..., "--out", help="Run folder; running again with the same options resumes."),
    schema: str = typer.Option("imm14", "--schema", help="Built-in schema name (imm14, imm58, imm-eye, ibug68) or schema JSON file."),
    teacher: str = typer.Option("hse-mobilenet-vggface2", "--teacher", help="Teacher name (`ctd teacher list`)."),
    teacher_weights: Optional[Path] = typer.Option(None, "--teacher-weights", help="Teacher weight file."),
    method: str = typer.Option("ft", "--method", help="fe, ftp, ft (the recipe), hg, ctd-cd, ctd-ed, ctd-com, or kd "
                               "(landmark distillation from a trained run: --teacher-run)."),
    teacher_run: Optional[Path] = typer.Option(
        None, "--teacher-run", help="kd: the trained ctd run folder whose heatmaps and encoder features the student learns."),
    train_subjects: Optional[int] = typer.Option(None, "--train-subjects", help="Limited labels: this many training subjects."),
    train_images: Optional[int] = typer.Option(None, "--train-images", help="Limited labels: this many training images."),
    val_subjects: Optional[int] = typer.Option(None, "--val-subjects", help="Validation subjects (default 10%); 0: the final fit, every non-test subject trains and the last epoch is kept."),
    test_subjects: Optional[int] = typer.Option(None, "--test-subjects", help="Test subjects (default 20%)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Default: the recipe's (TrainConfig)."),
    batch_size: int = typer.Option(2, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr", help="Initial learning rate of the encoder (polynomial decay to 0)."),
    head_lr_scale: Optional[float] = typer.Option(None, "--head-lr-scale", help="The new head's lr is lr x this."),
    lr_power: float = typer.Option(0.9, "--lr-power"),
    ema_decay: Optional[float] = typer.Option(
        None, "--ema-decay", help="Validate, keep and export a moving average of the weights with this decay (e.g. 0.998; 0: off)."),
    pfl_weight: Optional[float] = typer.Option(
        None, "--pfl-weight", help="Heatmap-loss weight of the schema's two PFL landmarks (the others 1)."),
    select: Optional[str] = typer.Option(
        None, "--select", help="Checkpoint kept as best: me (lowest validation ME, the default) or pfl (lowest validation mean |PFL error|)."),
    pfl_length_weight: Optional[float] = typer.Option(
        None, "--pfl-length-weight", help="Weight of a loss on the relative PFL length of the two corners, decoded differentiably (local centroids; 0: off)."),
    seed: int = typer.Option(0, "--seed"),
    lambda_: Optional[float] = typer.Option(None, "--lambda", help="Weight of each distillation term (eq 2); kd: of L_ED."),
    lambda_kd: Optional[float] = typer.Option(None, "--lambda-kd", help="kd: weight of L_R against the teacher run's heatmaps."),
    mu: Optional[float] = typer.Option(None, "--mu", help="Temperature of classifier distillation (eq 3)."),
    loss_reduction: Optional[str] = typer.Option(
        None, "--loss-reduction", help="Scale of L_R that lambda weighs against: sum (eq 1), mean, simplebaseline (0.5 x mean)."),
    ed_features: Optional[str] = typer.Option(None, "--ed-features", help="L_ED on whole feature maps (map) or pooled embeddings."),
    head_channels: int = typer.Option(256, "--head-channels", help="Channels of the head's deconvolutions (a smaller station model: 64)."),
    head: str = typer.Option("skip", "--head", help="skip (the recipe: the encoder's stride-16/8/4 maps added back "
                             "after each deconvolution) or simple (SimpleBaseline's deconvolutions only)."),
    hg_stacks: int = typer.Option(2, "--hg-stacks"),
    input_size: int = typer.Option(256, "--input-size", help="Crop side in pixels (heatmaps are a quarter)."),
    crop: Optional[str] = typer.Option(None, "--crop", help="face (all annotated points), schema (the schema's points) or pfl (fissure crop, refinement stage)."),
    crop_scale: Optional[float] = typer.Option(None, "--crop-scale", help="pfl crops: side = this x PFL."),
    margin: Optional[float] = typer.Option(None, "--margin", help="Crop margin around the points (face and schema crops)."),
    scale: Optional[float] = typer.Option(None, "--scale", help="Augmentation: crop scale factor in [1 - scale, 1 + scale]."),
    scale_max: Optional[float] = typer.Option(None, "--scale-max", help="Augmentation: zoom out log-uniformly up to this factor."),
    rotation: Optional[float] = typer.Option(None, "--rotation", help="Augmentation: rotation in [-deg, deg]."),
    shift: Optional[float] = typer.Option(None, "--shift", help="Augmentation: crop centre shift, fraction of the crop side."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Train without augmentation."),
    flip: bool = typer.Option(False, "--flip", help="Horizontal flip augmentation (flip pairs swap; a one-eye schema such as imm14 takes the mirrored other eye)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader worker processes."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads (default: every core)."),
    device: str = typer.Option("auto", "--device", help="auto (a CUDA GPU when torch sees one) | cpu | cuda | cuda:N."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last"),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help="bfloat16 autocast for the training step (default: on where the CPU or GPU computes in bfloat16, e.g. AVX-512 BF16; off on AVX2-only CPUs, where it is slower)."),
    decode: Optional[str] = typer.Option(None, "--decode", help="Decode for validation and test: argmax, quarter, dark."),
    run_id: Optional[str] = typer.Option(None, "--run-id"),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
) -> None:
    """Train a landmark model (the paper's methods) and evaluate its best checkpoint on the test split.
    Options left out take the recipe's defaults (README, `TrainConfig`)."""
    if decode is not None:
        _choice(decode, DECODE_METHODS, "decode")
    from ctd_train.config import TrainConfig
    from ctd_train.data.augment import AugmentConfig
    from ctd_train.methods import MethodConfig
    from ctd_train.trainer import train

    def given(**kw: Any) -> dict[str, Any]:
        return {k: v for k, v in kw.items() if v is not None}

    method_cfg = MethodConfig(name=method, head_channels=head_channels, head=head, hg_stacks=hg_stacks, **given(
        lambda_=lambda_, lambda_kd=lambda_kd, mu=mu, loss_reduction=loss_reduction, ed_features=ed_features))
    augment = None if no_augment else AugmentConfig(flip=flip, **given(
        scale=scale, scale_max=scale_max, rotation_deg=rotation, shift=shift))
    config = TrainConfig(
        data=str(data), out=str(out), schema=schema, teacher=teacher,
        teacher_weights=None if teacher_weights is None else str(teacher_weights),
        teacher_run=None if teacher_run is None else str(teacher_run),
        method=method_cfg, batch_size=batch_size, lr_power=lr_power, seed=seed,
        train_subjects=train_subjects, train_images=train_images, val_subjects=val_subjects,
        test_subjects=test_subjects, augment=augment, input_size=input_size, threads=threads, device=device,
        run_id=run_id,
        **given(epochs=epochs, lr=lr, head_lr_scale=head_lr_scale, ema_decay=ema_decay, pfl_weight=pfl_weight, pfl_length_weight=pfl_length_weight, select=select, crop=crop, crop_scale=crop_scale, margin=margin,
                workers=workers, channels_last=channels_last, bf16=bf16, decode=decode),
    )
    run_dir = train(config, progress=not no_progress)
    table_console(120).print(f"run: {run_dir}")


# ---------------------------------------------------------------------------------------------
# ctd evaluate


def _summary_table(rows: list[tuple[str, Any]], unit: str, threshold: float, title: str) -> Table:
    from ctd_train.evaluate import format_me_sd

    t = Table(title=title, caption=f"errors in {unit}; FR and AUC at threshold {threshold:g} {unit}")
    for col in ("Method", "ME +- SD", "FR", "AUC", "images"):
        t.add_column(col, justify="left" if col == "Method" else "right")
    for label, s in rows:
        t.add_row(label, format_me_sd(s.me, s.sd, unit), f"{100 * s.fr:.2f}%", f"{s.auc:.3f}", str(s.n_images))
    return t


def _pfl_table(report: Any) -> Table:
    import numpy as np

    unit, thr = report.unit, report.threshold
    px = report.evaluations["px"]
    pe = report.evaluation.pfl_error_signed
    pfl = Table(title="PFL error (predicted - true)", caption=f"in {unit} and px (threshold {thr:g} {unit})")
    for col in ("unit", "mean |error|", "mean signed", "SD"):
        pfl.add_column(col, justify="left" if col == "unit" else "right")
    pfl.add_row(unit, f"{report.evaluation.pfl_error_mean_abs:.4g}", f"{np.mean(pe):.4g}", f"{np.std(pe):.4g}")
    if unit != "px":
        pp = px.pfl_error_signed
        pfl.add_row("px", f"{px.pfl_error_mean_abs:.4g}", f"{np.mean(pp):.4g}", f"{np.std(pp):.4g}")
    return pfl


def print_report(report: Any, console: Console) -> None:
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
    console.print(_pfl_table(report))
    for kind, path in report.files.items():
        console.print(f"wrote {kind}: {path}", highlight=False)


def _compare_dir(runs: list[Path], out: Path | None) -> Path:
    """Where `--compare` writes: --out, else the runs' common parent (a single run's parent)."""
    import os

    if out is not None:
        return out
    if len(runs) == 1:
        return Path(runs[0]).resolve().parent
    return Path(os.path.commonpath([str(Path(r).resolve()) for r in runs]))


def evaluate_cmd(
    runs: List[Path] = typer.Argument(..., help="Run folder (or several with --compare)."),
    compare: bool = typer.Option(False, "--compare", help="Compare several runs in one table and CED plot."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data folder (default: the run's)."),
    split: Optional[str] = typer.Option(
        None, "--split", help="train, val, test or all (the run's subject split; default test, or all for another --data)."),
    decode: Optional[str] = typer.Option(None, "--decode", help="argmax, quarter or dark (default: the run's own)."),
    unit: str = typer.Option("pfl", "--unit", help="pfl, px, crop_px or mm (needs --pixel-spacing)."),
    threshold: float = typer.Option(0.10, "--threshold", help="Failure threshold in --unit (FR, AUC)."),
    pixel_spacing: Optional[float] = typer.Option(None, "--pixel-spacing", help="mm per source pixel."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best | last (as in ctd export)."),
    which: Optional[str] = typer.Option(None, "--which", hidden=True, help="Old name of --checkpoint."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for CSV/PNG/JSON (default: the run dir; "
                                       "for --compare the runs' common parent)."),
    by: Optional[str] = typer.Option(None, "--by", help="Break errors down by this column of --metadata (e.g. image_type)."),
    repeat: Optional[str] = typer.Option(
        None, "--repeat", help="A,B: test-retest PFL difference between each subject's images of values A and B of --by."),
    metadata: Optional[Path] = typer.Option(None, "--metadata", help="Per-image CSV for --by (default DATA/metadata.csv)."),
) -> None:
    """Evaluate a run (ME +- SD, FR, AUC, per-landmark and PFL errors; CSV + CED PNG), or compare runs;
    an exported model (.onnx, .plan) goes through the station's Landmarker (needs --data)."""
    from ctd_runtime.cli.station_eval import evaluate_model, is_model_file

    if len(runs) == 1 and is_model_file(runs[0]) and not compare:  # no torch on this path
        evaluate_model(runs[0], data, unit=unit, threshold=threshold, pixel_spacing=pixel_spacing, out=out)
        return
    if decode is not None:
        _choice(decode, DECODE_METHODS, "decode")
    pair = _repeat_pair(repeat, by)
    _choice(unit, ERROR_UNITS, "unit")
    which = checkpoint if which is None else which
    _choice(which, ("best", "last"), "checkpoint")
    check_number("--threshold", threshold, gt=0)
    check_number("--pixel-spacing", pixel_spacing, gt=0)
    from ctd_train.evaluate import compare_runs, evaluate_run

    console = table_console(120)
    if compare:
        comp = compare_runs(runs, data=data, split=split or "test", decode=decode or "argmax", threshold=threshold, unit=unit,
                            pixel_spacing=pixel_spacing, out_dir=_compare_dir(runs, out))
        console.print(_summary_table(
            [(lab, r.evaluation.summary) for lab, r in zip(comp.labels, comp.reports)], unit, threshold,
            f"{split or 'test'} split, decode {decode or 'argmax'}",
        ))
        for kind, path in comp.files.items():
            console.print(f"wrote {kind}: {path}", highlight=False)
        return
    if len(runs) != 1:
        raise CtdError(f"give one run to evaluate, or --compare for {len(runs)} runs")
    report = evaluate_run(runs[0], data=data, split=split, decode=decode, threshold=threshold, unit=unit,
                          pixel_spacing=pixel_spacing, which=which, out_dir=out)
    print_report(report, console)
    if by is not None:
        print_grouped(report, by, pair, metadata, console)


def _repeat_pair(repeat: Optional[str], by: Optional[str]) -> tuple[str, str] | None:
    if repeat is None:
        return None
    if by is None:
        raise CtdError("--repeat pairs two values of the --by column: give --by too")
    parts = [p.strip() for p in repeat.split(",")]
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise CtdError(f"--repeat takes two different values A,B, not {repeat!r}")
    return parts[0], parts[1]


def print_grouped(report: Any, column: str, repeat: tuple[str, str] | None, metadata: Optional[Path],
                  console: Console) -> None:
    """Errors per value of `column` and the test-retest PFL difference of the model and of the
    annotation (the floor no model can beat against it)."""
    from ctd_runtime.repeatability import grouped_report, read_column

    csv_path = metadata if metadata is not None else Path(report.data) / "metadata.csv"
    values = read_column(csv_path, column, report.image_names)
    g = grouped_report(report.pred, report.gt, values, report.subjects, report.pfl_pair, column, repeat)
    t = Table(title=f"errors by {column}", caption=f"ME in {g.by_value[0].unit if g.by_value else 'pfl'}; PFL errors as a fraction of the true PFL")
    for col in (column, "images", "ME", "mean |PFL error|", "mean signed PFL error"):
        t.add_column(col, justify="left" if col == column else "right")
    for v in g.by_value:
        t.add_row(v.value, str(v.n_images), f"{v.me:.4g}", f"{v.pfl_abs:.4g}", f"{v.pfl_signed:+.4g}")
    console.print(t)
    if g.retest_pred is not None and g.retest_truth is not None:
        console.print(
            f"test-retest ({column} {repeat[0]} vs {repeat[1]}, {g.retest_pred.n_pairs} subjects): model "
            f"{100 * g.retest_pred.mean:.2f}% of PFL ({g.retest_pred.mean_px:.2f} px), annotation "
            f"{100 * g.retest_truth.mean:.2f}% ({g.retest_truth.mean_px:.2f} px)", highlight=False)


# ---------------------------------------------------------------------------------------------
# ctd data


def _print_import(report: Any, what: str) -> None:
    printer.print(
        f"imported {report.num_images} images from {what} into {report.out_dir} "
        f"({report.linked} linked, {report.copied} copied)",
        markup=False,
    )
    for image, eye in report.reordered:
        printer.print(f"  eye contour re-ordered (started at the medial corner): {image}, subject's {eye} eye",
                  markup=False)
    for name, why in report.skipped:
        printer.print(f"  skipped {name}: {why}", markup=False)
    printer.print(schema_hint(report.num_points), markup=False)


def schema_hint(num_points: int) -> str:
    """Which --schema trains on a folder of `num_points`-point annotations."""
    from ctd_runtime.schema import builtin_schemas_for

    names = builtin_schemas_for(num_points)
    if names:
        return (f"{num_points} points per image: train with --schema {names[0]}"
                + (f" (or {', '.join(names[1:])})" if len(names) > 1 else ""))
    return (f"{num_points} points per image: no built-in schema has {num_points} points; write a schema JSON "
            f"with num_source_points {num_points} and pass its path to --schema")


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
    _print_import(report, str(asf_dir))


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
    _print_import(report, str(folder))


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

    check_number("--margin", margin, ge=0)

    sch = get_schema(schema)
    if out_dir.exists() and not out_dir.is_dir():
        raise CtdError("output path exists and is not a folder", path=out_dir)
    from ctd_train.data.visualize import write_samples

    written = write_samples(data, sch, out_dir, n=n, seed=seed, augment=augment, margin=margin)
    printer.print(f"wrote {len(written)} PNGs to {out_dir}", markup=False)


# ---------------------------------------------------------------------------------------------
# ctd teacher


def teacher_list_cmd() -> None:
    """The registered teachers, their licences, where the weights come from and whether they are here."""
    from ctd_train.teachers import list_teachers

    table = Table(title="teachers", show_lines=True)
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("classifier", no_wrap=True)
    for col in ("description", "licence", "weights come from", "found here"):
        table.add_column(col, overflow="fold")
    for e in list_teachers():
        found, where = e.weights_found()
        table.add_row(
            e.name,
            "yes" if e.has_classifier else "no",
            e.description,
            e.licence,
            e.weights_source,
            f"[green]yes[/]: {where}" if found else f"[yellow]no[/] ({where})",
        )
    table_console().print(table)


def _fmt_floats(v: list[float]) -> str:
    return "(" + ", ".join(f"{x:.6g}" for x in v) + ")"


def _teacher_table(name: str, d: dict[str, Any]) -> Table:
    size = d["probe_size"]
    info = Table(show_header=False, title=f"teacher {name}")
    info.add_column("what", style="bold")
    info.add_column("value", overflow="fold")
    info.add_row("weights", d["weights"] or "-")
    info.add_row(
        "input",
        f"{d['input_size']}x{d['input_size']} {d['channel_order']}, x = (pixel - mean) * scale, "
        f"mean {_fmt_floats(d['mean'])}, scale {_fmt_floats(d['scale'])}",
    )
    info.add_row("parameters", f"{d['parameters']:,} (encoder {d['encoder_parameters']:,})")
    info.add_row(f"feature map at {size}x{size}", str(d["feature_map"]))
    info.add_row("classifier", f"yes, logits {d['logits']}" if d["has_classifier"] else "no")
    info.add_row("embedding", str(d["embedding"]) if d["embedding"] else "-")
    return info


def _golden_table(results: list[Any], golden: Path) -> Table:
    table = Table(title="golden outputs", caption=str(golden))
    for col in ("output", "max abs diff", "tolerance", "ok"):
        table.add_column(col, justify="right" if col != "output" else "left")
    for r in results:
        table.add_row(r.name, f"{r.max_abs_diff:.3g}", f"{r.tolerance:.0e}",
                      "[green]ok[/]" if r.ok else "[bold red]FAIL[/]")
    return table


def teacher_check_cmd(
    name: str = typer.Argument(..., help="Teacher name (see `ctd teacher list`)."),
    weights: Optional[Path] = typer.Option(
        None, "--weights", "--teacher-weights", help="Weight file (or folder); default: found automatically."
    ),
    golden: Optional[Path] = typer.Option(
        None, "--golden", help="golden.npz of the original implementation: compare the outputs with it."
    ),
    size: int = typer.Option(256, "--size", min=32, help="Side of the square probe input for the shapes."),
) -> None:
    """Load a teacher and print its input spec, size and shapes; with --golden, compare with the
    reference outputs and exit 1 when one is beyond its tolerance."""
    from ctd_train.teachers import create_teacher

    teacher = create_teacher(name, weights)  # unknown name -> CtdError listing the known teachers
    console = table_console()
    console.print(_teacher_table(name, teacher.describe(size)))
    if golden is None:
        return

    from ctd_train.teachers.golden import compare_golden

    results = compare_golden(teacher, golden)
    console.print(_golden_table(results, golden))
    bad = [r.name for r in results if not r.ok]
    if bad:
        console.print(f"[bold red]golden check failed[/] for {len(bad)} output(s): {', '.join(bad)}")
        # SystemExit (not typer.Exit, whose code is returned, not raised, in non-standalone mode)
        raise SystemExit(1)
    console.print(f"[green]golden check passed[/] ({len(results)} outputs)")


# ---------------------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add train, evaluate, data and teacher to the root app (the names its entry points declare)."""
    app.command("train")(train_cmd)
    app.command("evaluate")(evaluate_cmd)

    data_app = typer.Typer(help="Import annotated images and inspect training crops.", no_args_is_help=True)
    data_app.command("import-imm")(import_imm_cmd)
    data_app.command("import-pts")(import_pts_cmd)
    data_app.command("show")(show_cmd)
    app.add_typer(data_app, name="data")

    teacher_app = typer.Typer(
        help="Teacher networks: list them, check that one loads (and matches its golden outputs).",
        no_args_is_help=True,
    )
    teacher_app.command("list")(teacher_list_cmd)
    teacher_app.command("check")(teacher_check_cmd)
    app.add_typer(teacher_app, name="teacher")
