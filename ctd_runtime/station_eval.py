"""Evaluate an exported model through the station path: `ctd evaluate MODEL.onnx --data DIR`.

Every image of an annotated folder (images/ + annotations.csv, `ctd_runtime.annotations`; a
folder that is not a run's own data has no split) goes through the `Landmarker`, as `ctd infer`
would run it, and the predictions are scored with the metrics of a run (`ctd_runtime.metrics`:
ME, SD, FR, AUC, per-landmark and PFL errors). Two boxes:

- `gt`: the ground-truth box, the bounding box of the points the model's training crop rule is
  made from (rule "face": all annotated points; "schema": the schema's; "pfl": the PFL pair's,
  whose crop then lacks the training rotation), one pass on its crop;
- `auto`: no box, the coarse-to-fine search from the whole image.

Metrics are over the images where a face was found; `not_found` counts the others, and
`fr_with_not_found` counts them as failures. With both boxes, `agreement` is the fraction of
images whose automatic-box PFL lies within `agreement_pfl` (0.1) of the ground-truth-box PFL,
in units of the true PFL.
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ctd_runtime.annotations import AnnotatedImages, read_annotations
from ctd_runtime.atomic import write_json_atomic, write_text_atomic
from ctd_runtime.crop_rule import Box
from ctd_runtime.errors import CtdError
from ctd_runtime.landmarker import Landmarker, LandmarkerOptions
from ctd_runtime.metrics import ERROR_UNITS, Evaluation, evaluate_landmarks, pfl

BOX_MODES: tuple[str, ...] = ("gt", "auto")


@dataclass(frozen=True)
class StationEvalOptions:
    boxes: tuple[str, ...] = BOX_MODES
    unit: str = "pfl"
    threshold: float = 0.10
    pixel_spacing: float | None = None
    agreement_pfl: float = 0.10
    batch: int = 8

    def __post_init__(self) -> None:
        bad = [b for b in self.boxes if b not in BOX_MODES] or ([] if self.boxes else ["(none)"])
        if bad:
            raise CtdError(f"box mode {bad[0]!r} is not one of {', '.join(BOX_MODES)}")
        if self.unit not in ERROR_UNITS:
            raise CtdError(f"unknown unit {self.unit!r}; choose from {', '.join(ERROR_UNITS)}")
        if self.unit == "mm" and self.pixel_spacing is None:
            raise CtdError("--unit mm needs --pixel-spacing")
        if not self.threshold > 0:
            raise CtdError(f"--threshold must be > 0, not {self.threshold}")


@dataclass
class BoxResult:
    """Predictions of one box mode: landmarks [N, K, 2] (NaN where not found), found [N]."""

    mode: str
    landmarks: np.ndarray
    found: np.ndarray
    reasons: list[str | None]
    seconds: float
    evaluations: dict[str, Evaluation] = field(default_factory=dict)  # by unit, over found images

    @property
    def not_found(self) -> int:
        return int((~self.found).sum())


@dataclass
class StationReport:
    model: Path
    data: Path
    image_names: list[str]
    landmark_names: tuple[str, ...]
    options: StationEvalOptions
    results: dict[str, BoxResult]
    agreement: float | None = None
    files: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": str(self.model), "data": str(self.data), "images": len(self.image_names),
                               "unit": self.options.unit, "threshold": self.options.threshold,
                               "agreement_pfl": self.options.agreement_pfl, "agreement": self.agreement, "boxes": {}}
        for mode, r in self.results.items():
            out["boxes"][mode] = {
                "not_found": r.not_found, "fr_with_not_found": fr_with_not_found(r, self.options),
                "seconds_per_image": r.seconds / max(len(self.image_names), 1),
                "units": {u: {**ev.summary.to_dict(), "pfl_error_mean_abs": ev.pfl_error_mean_abs,
                              "per_landmark_mean": dict(zip(self.landmark_names, map(float, ev.per_landmark_mean)))}
                          for u, ev in r.evaluations.items()},
            }
        return out


def ground_truth_box(rule: str, all_points: np.ndarray, schema_points: np.ndarray, pfl_pair: tuple[int, int]) -> Box:
    """The (x, y, w, h) box of the points the training rule makes the crop from."""
    pts = {"face": all_points, "schema": schema_points}.get(rule)
    if pts is None:
        pts = schema_points[list(pfl_pair)]
    lo, hi = np.min(pts, axis=0), np.max(pts, axis=0)
    return (float(lo[0]), float(lo[1]), float(max(hi[0] - lo[0], 1.0)), float(max(hi[1] - lo[1], 1.0)))


def evaluate_station(model: str | Path, data: str | Path, options: StationEvalOptions = StationEvalOptions(),
                     landmarker_options: LandmarkerOptions | None = None, out_dir: str | Path | None = None,
                     progress: Callable[[int], None] | None = None) -> StationReport:
    """Run the Landmarker on every image of `data` with each box mode and score it; writes
    station_eval.json and station_eval.csv (per image) to `out_dir` when given."""
    images = read_annotations(data, validate_images=False)
    with Landmarker(model, landmarker_options) as lm:
        schema = lm.schema
        gt = schema.select(images.points, where=images.root / "annotations.csv")
        results = {mode: _predict(lm, images, gt, mode, options.batch, progress) for mode in options.boxes}
    for r in results.values():
        r.evaluations = _evaluations(r, gt, schema.pfl_pair, options)
    report = StationReport(Path(model), Path(data), images.image_names, schema.landmark_names, options, results,
                           _agreement(results, gt, schema.pfl_pair, options.agreement_pfl))
    if out_dir is not None:
        report.files = write_report(report, gt, schema.pfl_pair, Path(out_dir))
    return report


def _predict(lm: Landmarker, images: AnnotatedImages, gt: np.ndarray, mode: str, batch: int,
             progress: Callable[[int], None] | None) -> BoxResult:
    n, k = gt.shape[:2]
    landmarks = np.full((n, k, 2), np.nan)
    found = np.zeros(n, dtype=bool)
    reasons: list[str | None] = [None] * n
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        idx = list(range(start, min(start + batch, n)))
        imgs = [images.load_image(i) for i in idx]
        boxes = [ground_truth_box(lm.crop_spec.rule, images.points[i], gt[i], lm.schema.pfl_pair) for i in idx] \
            if mode == "gt" else None
        for i, det in zip(idx, lm.detect_batch(imgs, boxes)):
            found[i], reasons[i] = det.found, det.reason
            if det.found:
                landmarks[i] = det.landmarks
        if progress is not None:
            progress(len(idx))
    return BoxResult(mode, landmarks, found, reasons, time.perf_counter() - t0)


def _evaluations(r: BoxResult, gt: np.ndarray, pair: tuple[int, int], options: StationEvalOptions) -> dict[str, Evaluation]:
    if not r.found.any():
        return {}
    units = dict.fromkeys([options.unit, "px", "pfl"] + (["mm"] if options.pixel_spacing else []))
    return {u: evaluate_landmarks(r.landmarks[r.found], gt[r.found], u, options.threshold if u == options.unit
                                  else _default_threshold(u, options), pair, pixel_spacing=options.pixel_spacing)
            for u in units}


def _default_threshold(unit: str, options: StationEvalOptions) -> float:
    """FR/AUC threshold of the other units: 0.1 PFL, else the option's value in its own unit."""
    return 0.10 if unit == "pfl" else options.threshold


def fr_with_not_found(r: BoxResult, options: StationEvalOptions) -> float | None:
    ev = r.evaluations.get(options.unit)
    n = len(r.found)
    if ev is None:
        return 1.0 if n else None
    return float((ev.summary.fr * ev.summary.n_images + r.not_found) / n)


def _agreement(results: dict[str, BoxResult], gt: np.ndarray, pair: tuple[int, int], tol: float) -> float | None:
    if not {"gt", "auto"} <= set(results):
        return None
    diff = np.abs(pfl(results["auto"].landmarks, pair) - pfl(results["gt"].landmarks, pair)) / pfl(gt, pair)
    return float(np.mean(diff <= tol))  # NaN (not found in either) counts as a miss


def write_report(report: StationReport, gt: np.ndarray, pair: tuple[int, int], out: Path) -> dict[str, Path]:
    """station_eval.json (summary) and station_eval.csv (one row per image and box mode)."""
    out.mkdir(parents=True, exist_ok=True)
    true_pfl = pfl(gt, pair)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "box", "found", "reason", "me_px", "me_pfl", "pfl_true_px", "pfl_px", "pfl_error_px"])
    for mode, r in report.results.items():
        me = np.linalg.norm(r.landmarks - gt, axis=-1).mean(axis=-1)
        pred = pfl(r.landmarks, pair)
        for i, name in enumerate(report.image_names):
            cells = [me[i], me[i] / true_pfl[i], true_pfl[i], pred[i], pred[i] - true_pfl[i]]
            writer.writerow([name, mode, int(r.found[i]), r.reasons[i] or "", *(_num(c) for c in cells)])
    files = {"json": out / "station_eval.json", "csv": out / "station_eval.csv"}
    write_json_atomic(files["json"], report.to_dict())
    write_text_atomic(files["csv"], buf.getvalue())
    return files


def _num(v: float) -> str:
    return "" if not np.isfinite(v) else f"{float(v):.6g}"
