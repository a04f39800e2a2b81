"""Landmark metrics of the paper (ME, SD, FR, CED, AUC), per landmark and for PFL, in a chosen unit.

Errors are point-to-point Euclidean distances. Units:
- `px`: source-image pixels;
- `crop_px`: pixels of the 256x256 network crop (source px divided by the crop's px-per-crop-px);
- `pfl`: divided by the ground-truth PFL of each image (scale-free, needs no calibration);
- `mm`: source px times a pixel spacing in mm/px.

SD is the population standard deviation over images (ddof 0, defined for one image).
AUC is the area under the CED curve from 0 to the threshold divided by the threshold; for an
empirical CED it equals mean(max(0, T - e_i)) / T exactly, which is what is computed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

ErrorUnit = Literal["px", "crop_px", "pfl", "mm"]
ERROR_UNITS: tuple[str, ...] = ("px", "crop_px", "pfl", "mm")


def per_landmark_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean distance per image and landmark, [N, K]."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.shape[-1] != 2:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} must both be [N, K, 2]")
    return np.linalg.norm(pred - gt, axis=-1)


def per_image_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Mean point-to-point error over the K landmarks of each image, [N]."""
    return per_landmark_errors(pred, gt).mean(axis=-1)


def pfl(points: np.ndarray, pair: tuple[int, int]) -> np.ndarray:
    """Palpebral fissure length per image: distance between endocanthion and exocanthion, [N]."""
    p = np.asarray(points, dtype=np.float64)
    return np.linalg.norm(p[..., pair[0], :] - p[..., pair[1], :], axis=-1)


def pfl_errors(pred: np.ndarray, gt: np.ndarray, pair: tuple[int, int]) -> np.ndarray:
    """Signed PFL error per image (predicted minus true), [N], in the points' unit."""
    return pfl(pred, pair) - pfl(gt, pair)


def unit_factors(
    unit: ErrorUnit,
    gt: np.ndarray,
    pfl_pair: tuple[int, int] | None = None,
    crop_affines: np.ndarray | None = None,
    pixel_spacing: float | np.ndarray | None = None,
) -> np.ndarray:
    """Per-image factor [N] that turns source-pixel errors into `unit`."""
    n = np.asarray(gt).shape[0]
    if unit == "px":
        return np.ones(n)
    if unit == "crop_px":
        if crop_affines is None:
            raise ValueError("crop_px errors need the crop affines")
        a = np.asarray(crop_affines, dtype=np.float64)
        return 1.0 / np.sqrt(np.abs(np.linalg.det(a[..., :2])))
    if unit == "pfl":
        if pfl_pair is None:
            raise ValueError("PFL-normalised errors need the schema's PFL pair")
        true_pfl = pfl(gt, pfl_pair)
        if np.any(true_pfl <= 0):
            raise ValueError("a ground-truth PFL is zero: cannot normalise by it")
        return 1.0 / true_pfl
    if unit == "mm":
        if pixel_spacing is None:
            raise ValueError("mm errors need a pixel spacing (mm per pixel)")
        return np.broadcast_to(np.asarray(pixel_spacing, dtype=np.float64), (n,)).copy()
    raise ValueError(f"unknown unit {unit!r}; choose from {', '.join(ERROR_UNITS)}")


def failure_rate(errors: np.ndarray, threshold: float) -> float:
    """Fraction of images whose error exceeds the threshold."""
    e = np.asarray(errors, dtype=np.float64)
    return float(np.mean(e > threshold))


def ced_curve(errors: np.ndarray, threshold: float, num: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: x in [0, threshold], y = fraction of images with error <= x."""
    e = np.sort(np.asarray(errors, dtype=np.float64))
    x = np.linspace(0.0, threshold, num)
    y = np.searchsorted(e, x, side="right") / len(e)
    return x, y


def auc(errors: np.ndarray, threshold: float) -> float:
    """Area under the CED curve from 0 to the threshold, divided by the threshold (exact)."""
    e = np.asarray(errors, dtype=np.float64)
    return float(np.mean(np.clip(threshold - e, 0.0, None)) / threshold)


@dataclass(frozen=True)
class ErrorSummary:
    """The paper's numbers for one set of per-image errors in one unit."""

    unit: str
    threshold: float
    n_images: int
    me: float
    sd: float
    fr: float
    auc: float

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(errors: np.ndarray, threshold: float, unit: str) -> ErrorSummary:
    """ME, SD (population), FR and AUC of per-image errors."""
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim != 1 or e.size == 0:
        raise ValueError("need a non-empty 1-D array of per-image errors")
    return ErrorSummary(
        unit=unit,
        threshold=float(threshold),
        n_images=int(e.size),
        me=float(e.mean()),
        sd=float(e.std()),
        fr=failure_rate(e, threshold),
        auc=auc(e, threshold),
    )


@dataclass(frozen=True)
class Evaluation:
    """Everything `ctd evaluate` reports, in one unit."""

    summary: ErrorSummary
    per_image: np.ndarray          # [N] in unit
    per_landmark_mean: np.ndarray  # [K] in unit
    pfl_error_mean_abs: float      # mean |PFL error| in unit
    pfl_error_signed: np.ndarray   # [N] in unit


def evaluate_landmarks(
    pred: np.ndarray,
    gt: np.ndarray,
    unit: ErrorUnit,
    threshold: float,
    pfl_pair: tuple[int, int],
    crop_affines: np.ndarray | None = None,
    pixel_spacing: float | np.ndarray | None = None,
) -> Evaluation:
    """Per-image, per-landmark and PFL errors of source-pixel predictions, in `unit`."""
    factor = unit_factors(unit, gt, pfl_pair, crop_affines, pixel_spacing)
    lm = per_landmark_errors(pred, gt) * factor[:, None]
    per_image = lm.mean(axis=1)
    pe = pfl_errors(pred, gt, pfl_pair) * factor
    return Evaluation(
        summary=summarize(per_image, threshold, unit),
        per_image=per_image,
        per_landmark_mean=lm.mean(axis=0),
        pfl_error_mean_abs=float(np.mean(np.abs(pe))),
        pfl_error_signed=pe,
    )
