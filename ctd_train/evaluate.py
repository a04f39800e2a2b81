"""Evaluation of a run: predict on ground-truth-box crops (the dataset's crop rule, no augmentation),
decode with the codec, map back to source pixels through the crop affine, and report the paper's
numbers (ME +- SD, FR, AUC, per-landmark and PFL errors) with `ctd_runtime.metrics` in every unit.

Also `compare_runs`: several runs in the layout of the paper's Table 1 and one CED plot.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ctd_runtime import geometry
from ctd_runtime.atomic import write_json_atomic, write_text_atomic
from ctd_runtime.codec import DECODE_METHODS, HeatmapCodec
from ctd_runtime.errors import CtdError
from ctd_runtime.metrics import ERROR_UNITS, Evaluation, evaluate_landmarks, per_landmark_errors, unit_factors
from ctd_runtime.schema import LandmarkSchema

SPLITS = ("train", "val", "test", "all")
DEFAULT_THRESHOLD = 0.10
METHOD_LABELS = {
    "fe": "FE", "ftp": "FTP", "ft": "FT", "hg": "HG",
    "ctd-cd": "CTD-CD", "ctd-ed": "CTD-ED", "ctd-com": "CTD-Com", "kd": "KD",
}


def method_label(name: str) -> str:
    return METHOD_LABELS.get(name, name)


# ----------------------------------------------------------------------------- prediction


@dataclass
class Predictions:
    """Source-pixel predictions on crops of a dataset, in the dataset's order."""

    pred: np.ndarray      # [N, K, 2] source px
    scores: np.ndarray    # [N, K] heatmap maxima
    affines: np.ndarray   # [N, 2, 3] crop px -> source px
    indices: np.ndarray   # [N] image indices into the AnnotatedImages


@torch.no_grad()
def predict_crops(
    predictor: nn.Module,
    dataset: torch.utils.data.Dataset,
    codec: HeatmapCodec,
    decode: str = "argmax",
    batch_size: int = 8,
    workers: int = 0,
    channels_last: bool = False,
    bf16: bool = False,
) -> Predictions:
    """Run `predictor` over `dataset` and decode its heatmaps to source px. The predictor is left
    in eval mode (a training loop switches its method back with `method.train()`, which keeps
    frozen parts in eval mode)."""
    if decode not in DECODE_METHODS:
        raise CtdError(f"unknown decode {decode!r}; choose from {', '.join(DECODE_METHODS)}")
    predictor.eval()
    device = next(predictor.parameters()).device
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    preds, scores, affines, indices = [], [], [], []
    for batch in loader:
        x = batch["image"].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            hm = predictor(x)
        xy, sc = codec.decode(hm.float().cpu().numpy(), method=decode)
        aff = batch["affine"].numpy().astype(np.float64)
        preds.append(geometry.apply_affine(aff, xy))
        scores.append(sc)
        affines.append(aff)
        indices.append(batch["index"].numpy())
    if not preds:
        raise CtdError("nothing to predict: the split has no images")
    return Predictions(
        pred=np.concatenate(preds), scores=np.concatenate(scores),
        affines=np.concatenate(affines), indices=np.concatenate(indices),
    )


# ----------------------------------------------------------------------------- the report


@dataclass
class EvalReport:
    """Predictions and metrics of one run on one split; `evaluations` has one entry per unit."""

    run_dir: Path
    run_id: str
    method: str
    split: str
    decode: str
    unit: str
    threshold: float
    pixel_spacing: float | None
    landmark_names: list[str]
    image_names: list[str]
    subjects: list[str]
    pred: np.ndarray       # [N, K, 2] source px
    gt: np.ndarray         # [N, K, 2] source px
    affines: np.ndarray    # [N, 2, 3]
    pfl_pair: tuple[int, int]
    evaluations: dict[str, Evaluation]
    epoch: int = 0
    data: str = ""
    run_decode: str = "argmax"   # the decode the run validated with: files for it carry no suffix
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def evaluation(self) -> Evaluation:
        """The evaluation in the report's unit (with its threshold)."""
        return self.evaluations[self.unit]

    @property
    def n_images(self) -> int:
        return int(self.pred.shape[0])

    def to_dict(self) -> dict[str, Any]:
        ev = self.evaluation
        units: dict[str, Any] = {}
        for u, e in self.evaluations.items():
            units[u] = {
                "me": e.summary.me,
                "sd": e.summary.sd,
                "per_landmark": dict(zip(self.landmark_names, map(float, e.per_landmark_mean))),
                "pfl_error_mean_abs": e.pfl_error_mean_abs,
                "pfl_error_mean_signed": float(np.mean(e.pfl_error_signed)),
            }
        return {
            "run_id": self.run_id,
            "run_dir": str(self.run_dir),
            "method": self.method,
            "epoch": self.epoch,
            "data": self.data,
            "split": self.split,
            "decode": self.decode,
            "unit": self.unit,
            "threshold": self.threshold,
            "pixel_spacing": self.pixel_spacing,
            "n_images": self.n_images,
            "summary": ev.summary.to_dict(),
            "per_landmark": dict(zip(self.landmark_names, map(float, ev.per_landmark_mean))),
            "pfl_error_mean_abs": ev.pfl_error_mean_abs,
            "pfl_error_mean_signed": float(np.mean(ev.pfl_error_signed)),
            "pfl_error_sd": float(np.std(ev.pfl_error_signed)),
            "units": units,
            "files": {k: str(v) for k, v in self.files.items()},
        }

    def per_image_csv(self) -> str:
        """One row per image: errors in every unit, true/predicted PFL (px), per-landmark errors in
        the report's unit and the predicted source-pixel coordinates."""
        units = list(self.evaluations)
        names = self.landmark_names
        a, b = self.pfl_pair
        true_pfl = np.linalg.norm(self.gt[:, a] - self.gt[:, b], axis=-1)
        pred_pfl = np.linalg.norm(self.pred[:, a] - self.pred[:, b], axis=-1)
        factor = unit_factors(self.unit, self.gt, self.pfl_pair, self.affines, self.pixel_spacing)
        lm = per_landmark_errors(self.pred, self.gt) * factor[:, None]
        header = (["image", "subject"] + [f"error_{u}" for u in units]
                  + ["pfl_true_px", "pfl_pred_px", "pfl_error_px", f"failure_{self.unit}"]
                  + [f"err_{n}_{self.unit}" for n in names]
                  + [f"{c}_{n}" for n in names for c in ("x", "y")])
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        for i in range(self.n_images):
            row: list[Any] = [self.image_names[i], self.subjects[i]]
            row += [f"{self.evaluations[u].per_image[i]:.6g}" for u in units]
            row += [f"{true_pfl[i]:.4f}", f"{pred_pfl[i]:.4f}", f"{pred_pfl[i] - true_pfl[i]:.4f}"]
            row += [int(self.evaluation.per_image[i] > self.threshold)]
            row += [f"{v:.6g}" for v in lm[i]]
            row += [f"{v:.3f}" for v in self.pred[i].reshape(-1)]
            w.writerow(row)
        return buf.getvalue()


def _file_stem(split: str, decode: str, unit: str, threshold: float, run_decode: str = "argmax") -> tuple[str, str]:
    """(eval file stem, CED file stem): eval_test / ced for the defaults (the run's own decode),
    suffixed otherwise."""
    suffix = ""
    if decode != run_decode:
        suffix += f"_{decode}"
    if unit != "pfl" or threshold != DEFAULT_THRESHOLD:
        suffix += f"_{unit}{threshold:g}"
    eval_stem = f"eval_{split}{suffix}"
    ced_stem = "ced" + ("" if split == "test" else f"_{split}") + suffix
    return eval_stem, ced_stem


def _check_unit(unit: str, threshold: float, pixel_spacing: float | None) -> None:
    if unit not in ERROR_UNITS:
        raise CtdError(f"unknown unit {unit!r}; choose from {', '.join(ERROR_UNITS)}")
    if unit == "mm" and pixel_spacing is None:
        raise CtdError("errors in mm need --pixel-spacing (mm per source pixel)")
    if pixel_spacing is not None and not (pixel_spacing > 0 and math.isfinite(pixel_spacing)):
        raise CtdError(f"pixel spacing must be a finite number > 0, not {pixel_spacing}")
    if not (threshold > 0 and math.isfinite(threshold)):
        raise CtdError(f"the failure threshold must be a finite number > 0, not {threshold}")


def evaluate_predictions(
    pred: np.ndarray,
    gt: np.ndarray,
    affines: np.ndarray,
    schema: LandmarkSchema,
    unit: str = "pfl",
    threshold: float = DEFAULT_THRESHOLD,
    pixel_spacing: float | None = None,
) -> dict[str, Evaluation]:
    """`ctd_runtime.metrics.evaluate_landmarks` in every unit available (mm only with a pixel
    spacing); `threshold` is in `unit` and only that unit's FR/AUC are meaningful."""
    _check_unit(unit, threshold, pixel_spacing)
    out: dict[str, Evaluation] = {}
    for u in ERROR_UNITS:
        if u == "mm" and pixel_spacing is None:
            continue
        out[u] = evaluate_landmarks(pred, gt, u, threshold, schema.pfl_pair, crop_affines=affines,
                                    pixel_spacing=pixel_spacing)
    return out


def _run_config(run) -> "Any":
    from ctd_train.config import TrainConfig

    return TrainConfig.from_dict(run.config, where=run.checkpoint_path)


def is_own_data(config, data: str | Path | None) -> bool:
    """Whether `data` is the folder the run was trained on (None: yes)."""
    return data is None or Path(data).expanduser().resolve() == Path(config.data).expanduser().resolve()


def evaluate_loaded(
    run,
    data: str | Path | None = None,
    split: str | None = None,
    decode: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    unit: str = "pfl",
    pixel_spacing: float | None = None,
    out_dir: str | Path | None = None,
    write: bool = True,
    workers: int = 0,
) -> EvalReport:
    """`evaluate_run` for an already loaded run (a `LoadedRun`)."""
    from ctd_train.config import split_indices
    from ctd_train.data.annotations import read_annotations
    from ctd_train.data.dataset import LandmarkCropDataset

    _check_unit(unit, threshold, pixel_spacing)
    config = _run_config(run)
    own = is_own_data(config, data)
    split = split or ("test" if own else "all")
    decode = decode or run.decode
    if not own and split != "all":
        raise CtdError(f"{data} is not the run's own data ({config.data}): it has no train/val/test split of "
                       "this run, so it is evaluated whole (split all)", path=data)
    if split not in SPLITS:
        raise CtdError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if decode not in DECODE_METHODS:
        raise CtdError(f"unknown decode {decode!r}; choose from {', '.join(DECODE_METHODS)}")
    data_dir = Path(data) if data is not None else Path(config.data)
    images = read_annotations(data_dir, validate_images=False)
    indices = list(range(len(images))) if split == "all" else split_indices(images.subjects, config)[split]
    if not indices:
        hint = (": the run is a final fit (val_subjects 0), trained without validation"
                if split == "val" and config.final_fit else "")
        raise CtdError(f"the {split} split of {data_dir} has no images{hint}")
    dataset = LandmarkCropDataset(images, indices, run.schema, run.normalization, run.codec, augment=None,
                                  margin=config.margin, seed=config.seed, crop=config.crop,
                                  crop_scale=config.crop_scale)
    p = predict_crops(run.predictor, dataset, run.codec, decode, batch_size=8, workers=workers)
    gt = run.schema.select(images.points[p.indices])
    evaluations = evaluate_predictions(p.pred, gt, p.affines, run.schema, unit, threshold, pixel_spacing)
    names = images.image_names
    report = EvalReport(
        run_dir=Path(run.run_dir), run_id=run.run_id, method=run.method_name, split=split, decode=decode,
        unit=unit, threshold=float(threshold), pixel_spacing=pixel_spacing,
        landmark_names=list(run.schema.landmark_names),
        image_names=[names[i] for i in p.indices], subjects=[images.subjects[i] for i in p.indices],
        pred=p.pred, gt=gt, affines=p.affines, pfl_pair=run.schema.pfl_pair, evaluations=evaluations,
        epoch=run.epoch, data=str(data_dir), run_decode=run.decode,
    )
    if write:
        write_report(report, Path(out_dir) if out_dir is not None else Path(run.run_dir))
    return report


def write_report(report: EvalReport, out_dir: Path) -> dict[str, Path]:
    """eval_<split>.json, eval_<split>.csv and ced.png (suffixed for non-default settings)."""
    from ctd_train.plots import plot_ced

    if out_dir.exists() and not out_dir.is_dir():
        raise CtdError("output path exists and is not a folder", path=out_dir)
    eval_stem, ced_stem = _file_stem(report.split, report.decode, report.unit, report.threshold, report.run_decode)
    report.files = {
        "json": out_dir / f"{eval_stem}.json",
        "csv": out_dir / f"{eval_stem}.csv",
        "ced": out_dir / f"{ced_stem}.png",
    }
    write_text_atomic(report.files["csv"], report.per_image_csv())
    plot_ced({method_label(report.method): report.evaluation.per_image}, report.threshold, report.unit,
             report.files["ced"], title=f"{method_label(report.method)}, {report.split} split, {report.decode}")
    write_json_atomic(report.files["json"], report.to_dict())
    return report.files


def evaluate_run(
    run_dir: str | Path,
    data: str | Path | None = None,
    split: str | None = None,
    decode: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    unit: str = "pfl",
    pixel_spacing: float | None = None,
    which: str = "best",
    out_dir: str | Path | None = None,
    write: bool = True,
) -> EvalReport:
    """Evaluate a run's best (or last) checkpoint on a split of its data (default test; the split
    is the training run's, subject-wise from its seed), or on every image of another folder
    `data`; decoded as the run was validated unless `decode` says otherwise. Writes the per-image CSV, the CED PNG and
    the JSON summary into the run dir (or `out_dir`) unless `write` is False."""
    from ctd_train.checkpoint import load_run

    _check_unit(unit, threshold, pixel_spacing)
    run = load_run(run_dir, which=which)  # type: ignore[arg-type]
    return evaluate_loaded(run, data=data, split=split, decode=decode, threshold=threshold, unit=unit,
                           pixel_spacing=pixel_spacing, out_dir=out_dir, write=write)


# ----------------------------------------------------------------------------- comparison


@dataclass
class Comparison:
    """Several runs evaluated alike: one Table-1 row per run and a CED plot with a curve each."""

    reports: list[EvalReport]
    labels: list[str]
    unit: str
    threshold: float
    split: str
    decode: str
    files: dict[str, Path] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for label, r in zip(self.labels, self.reports):
            s = r.evaluation.summary
            out.append({"method": label, "run_dir": str(r.run_dir), "me": s.me, "sd": s.sd, "fr": s.fr,
                        "auc": s.auc, "n_images": s.n_images, "pfl_error_mean_abs": r.evaluation.pfl_error_mean_abs})
        return out

    def markdown(self) -> str:
        """The paper's Table 1 layout: Method | ME +- SD | FR | AUC (unit and threshold named)."""
        lines = [
            f"Errors in {self.unit}; FR and AUC at threshold {self.threshold:g} {self.unit}; "
            f"{self.split} split; decode {self.decode}.",
            "",
            "| Method | ME +- SD | FR | AUC |",
            "|---|---|---|---|",
        ]
        for row in self.rows():
            lines.append(f"| {row['method']} | {format_me_sd(row['me'], row['sd'], self.unit)} | "
                         f"{100 * row['fr']:.2f}% | {row['auc']:.3f} |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "threshold": self.threshold, "split": self.split, "decode": self.decode,
                "rows": self.rows(), "files": {k: str(v) for k, v in self.files.items()}}


def format_me_sd(me: float, sd: float, unit: str) -> str:
    digits = 4 if unit == "pfl" else 3
    return f"{me:.{digits}f} +- {sd:.{digits}f}"


def compare_runs(
    run_dirs: Sequence[str | Path],
    data: str | Path | None = None,
    split: str = "test",
    decode: str = "argmax",
    threshold: float = DEFAULT_THRESHOLD,
    unit: str = "pfl",
    pixel_spacing: float | None = None,
    out_dir: str | Path | None = None,
    labels: Sequence[str] | None = None,
) -> Comparison:
    """Evaluate every run alike; with `out_dir`, write compare.md / compare.json / compare_ced.png."""
    from ctd_train.checkpoint import load_run
    from ctd_train.plots import plot_ced

    if not run_dirs:
        raise CtdError("nothing to compare: give at least one run")
    _check_unit(unit, threshold, pixel_spacing)
    reports = []
    for rd in run_dirs:
        run = load_run(rd)
        reports.append(evaluate_loaded(run, data=data, split=split, decode=decode, threshold=threshold,
                                       unit=unit, pixel_spacing=pixel_spacing, write=False))
    if labels is None:
        base = [method_label(r.method) for r in reports]
        labels = [b if base.count(b) == 1 else f"{b} ({Path(r.run_dir).name})" for b, r in zip(base, reports)]
        labels = [lab if labels.count(lab) == 1 else f"{lab} #{i + 1}" for i, lab in enumerate(labels)]
    elif len(labels) != len(reports):
        raise CtdError(f"{len(labels)} labels for {len(reports)} runs")
    comp = Comparison(reports=reports, labels=list(labels), unit=unit, threshold=float(threshold),
                      split=split, decode=decode)
    if out_dir is not None:
        out = Path(out_dir)
        if out.exists() and not out.is_dir():
            raise CtdError("output path exists and is not a folder", path=out)
        comp.files = {"md": out / "compare.md", "json": out / "compare.json", "ced": out / "compare_ced.png"}
        write_text_atomic(comp.files["md"], comp.markdown())
        plot_ced({lab: r.evaluation.per_image for lab, r in zip(comp.labels, reports)}, threshold, unit,
                 comp.files["ced"], title=f"CED, {split} split, {decode}")
        write_json_atomic(comp.files["json"], comp.to_dict())
    return comp
