"""Test-retest repeatability of PFL, and errors broken down by an image attribute (type, pose, light).

The ground truth cannot tell whether a model gives the same answer twice for the same eye; two
captures of one face in one pose can (IMM: image types 1 and 5 of a subject, the same frontal
neutral face without and with a spotlight). For each such pair the PFL difference |PFL_a - PFL_b|
is given in the points' unit (px) and as a fraction of the pair's mean PFL (scale-free, like the
metrics' `pfl` unit). The same measure on the annotators' points is the floor an accuracy
metric against them cannot go below.

An image without a prediction (NaN points: a detector found no face) drops out of its pairs and
out of the breakdown, and is counted there, never silently lost. SDs are population SDs (ddof 0),
as in `ctd_runtime.metrics`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Hashable, Sequence

import numpy as np

from ctd_runtime.errors import CtdError
from ctd_runtime.metrics import evaluate_landmarks, pfl

Pair = tuple[int, int]


# ---------------------------------------------------------------------------------------------
# which images are repeats of each other


def pairs_within_groups(keys: Sequence[Hashable | None]) -> list[Pair]:
    """Every pair (i < j) of images that share a group key (e.g. (subject, pose)); None is in no group."""
    groups: dict[Hashable, list[int]] = {}
    for i, k in enumerate(keys):
        if k is not None:
            groups.setdefault(k, []).append(i)
    return [(m[a], m[b]) for m in groups.values() for a in range(len(m)) for b in range(a + 1, len(m))]


def pairs_of_values(groups: Sequence[Hashable], values: Sequence[Hashable], a: Hashable, b: Hashable) -> list[Pair]:
    """Per group (e.g. subject), its image whose value is `a` paired with its image whose value is
    `b` (IMM: image types 1 and 5 of each subject). A group lacking either value gives no pair; a
    group with two images of one of the values is ambiguous and refused."""
    if len(groups) != len(values):
        raise ValueError(f"{len(groups)} group keys but {len(values)} values")
    if a == b:
        raise ValueError(f"the two values of a pair must differ (both {a!r})")
    found: dict[Hashable, dict[Hashable, int]] = {}
    for i, (g, v) in enumerate(zip(groups, values)):
        if v not in (a, b):
            continue
        slot = found.setdefault(g, {})
        if v in slot:
            raise ValueError(f"group {g!r} has two images with value {v!r} (images {slot[v]} and {i})")
        slot[v] = i
    return [(s[a], s[b]) for s in found.values() if a in s and b in s]


# ---------------------------------------------------------------------------------------------
# PFL differences over the pairs


@dataclass(frozen=True)
class RetestPairs:
    """The pairs whose two images both have points, with both PFLs (in the points' unit)."""

    index_a: np.ndarray  # [M] image indices
    index_b: np.ndarray  # [M]
    pfl_a: np.ndarray    # [M]
    pfl_b: np.ndarray    # [M]
    n_skipped: int       # pairs left out because an image has no points (NaN)

    @property
    def diff(self) -> np.ndarray:
        """|PFL_a - PFL_b| per pair, in the points' unit."""
        return np.abs(self.pfl_a - self.pfl_b)

    @property
    def diff_fraction(self) -> np.ndarray:
        """|PFL_a - PFL_b| / mean(PFL_a, PFL_b) per pair."""
        return self.diff / ((self.pfl_a + self.pfl_b) / 2.0)


def retest_pairs(points: np.ndarray, pfl_pair: Pair, pairs: Sequence[Pair]) -> RetestPairs:
    """PFL of both images of every pair, from points [N, K, 2]; pairs with a NaN image are skipped."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 3 or p.shape[-1] != 2:
        raise ValueError(f"points must be [N, K, 2], got {p.shape}")
    idx = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if idx.size and (idx.min() < 0 or idx.max() >= p.shape[0]):
        raise ValueError(f"a pair indexes an image outside 0..{p.shape[0] - 1}")
    lengths = pfl(p, pfl_pair)
    ok = np.isfinite(lengths[idx[:, 0]]) & np.isfinite(lengths[idx[:, 1]])
    idx_ok = idx[ok]
    a, b = lengths[idx_ok[:, 0]], lengths[idx_ok[:, 1]]
    if np.any(a + b <= 0):
        raise ValueError("a pair has zero PFL in both images: its relative difference is undefined")
    return RetestPairs(idx_ok[:, 0], idx_ok[:, 1], a, b, n_skipped=int((~ok).sum()))


@dataclass(frozen=True)
class RetestSummary:
    """Test-retest PFL difference over pairs: as a fraction of the pair's mean PFL, and in px."""

    n_pairs: int
    n_skipped: int
    mean: float
    median: float
    sd: float
    mean_px: float
    median_px: float
    sd_px: float

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def _stats(x: np.ndarray) -> tuple[float, float, float]:
    if x.size == 0:
        return math.nan, math.nan, math.nan
    return float(x.mean()), float(np.median(x)), float(x.std())


def summarize_retest(rp: RetestPairs) -> RetestSummary:
    """Mean, median and SD of the pairs' PFL differences (NaN when no pair is left)."""
    frac, px = _stats(rp.diff_fraction), _stats(rp.diff)
    return RetestSummary(len(rp.pfl_a), rp.n_skipped, *frac, *px)


def retest(points: np.ndarray, pfl_pair: Pair, pairs: Sequence[Pair]) -> RetestSummary:
    """Test-retest summary of points [N, K, 2] over the given image pairs."""
    return summarize_retest(retest_pairs(points, pfl_pair, pairs))


# ---------------------------------------------------------------------------------------------
# errors per value of an image attribute


@dataclass(frozen=True)
class ValueErrors:
    """Errors of the images that share one value of an attribute (e.g. image type 3)."""

    value: str
    n_images: int    # images with this value
    n_missing: int   # of them, without a prediction (left out of the numbers)
    me: float        # mean point-to-point error over the landmarks, in `unit`
    unit: str
    pfl_abs: float     # mean |PFL error| / true PFL
    pfl_signed: float  # mean signed PFL error / true PFL

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def _value_order(values: Sequence[Hashable]) -> list[str]:
    """Distinct values as strings, numerically sorted where they all are numbers."""
    uniq = sorted({str(v) for v in values})
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return uniq


def errors_by_value(
    values: Sequence[Hashable],
    pred: np.ndarray,
    gt: np.ndarray,
    pfl_pair: Pair,
    unit: str = "px",
    pixel_spacing: float | None = None,
) -> list[ValueErrors]:
    """ME (in `unit`: px, pfl or mm) and PFL error (fraction of true PFL) per distinct value."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if len(values) != len(pred) or pred.shape != gt.shape:
        raise ValueError(f"{len(values)} values, pred {pred.shape}, gt {gt.shape}: need one value per image")
    if unit == "crop_px":
        raise ValueError("errors_by_value does not take crop_px (no crop affines); use px, pfl or mm")
    has = np.isfinite(pred).all(axis=(1, 2))
    keys = np.array([str(v) for v in values])
    out = []
    for v in _value_order(values):
        sel = keys == v
        ok = sel & has
        me = pfl_abs = pfl_signed = math.nan
        if ok.any():
            ev = evaluate_landmarks(pred[ok], gt[ok], unit, 1.0, pfl_pair, pixel_spacing=pixel_spacing)
            rel = evaluate_landmarks(pred[ok], gt[ok], "pfl", 1.0, pfl_pair)
            me, pfl_abs, pfl_signed = ev.summary.me, rel.pfl_error_mean_abs, float(rel.pfl_error_signed.mean())
        out.append(ValueErrors(v, int(sel.sum()), int((sel & ~has).sum()), me, unit, pfl_abs, pfl_signed))
    return out


# ---------------------------------------------------------------------------------------------
# an attribute column from a metadata CSV


def read_column(csv_path: str | Path, column: str, images: Sequence[str], key: str = "image") -> list[str]:
    """Values of `column` for the given images, from a CSV with one row per image (its `key` column
    names the image, as in annotations.csv), e.g. IMM's metadata.csv and its `image_type`."""
    csv_path = Path(csv_path)
    try:
        rows = list(csv.DictReader(csv_path.read_text(encoding="utf-8-sig").splitlines()))
    except (OSError, UnicodeDecodeError) as e:
        raise CtdError(f"cannot read: {e}", path=csv_path) from None
    except csv.Error as e:
        raise CtdError(f"not valid CSV: {e}", path=csv_path) from None
    header = list(rows[0].keys()) if rows else []
    for name in (key, column):
        if name not in header:
            raise CtdError(f"no column {name!r} (columns: {', '.join(header) or 'none'})", path=csv_path)
    by_image = {str(r[key]).strip(): str(r[column]).strip() for r in rows}
    missing = [im for im in images if im not in by_image]
    if missing:
        raise CtdError(f"{len(missing)} image(s) have no row, e.g. {missing[0]!r}", path=csv_path)
    return [by_image[im] for im in images]


# ---------------------------------------------------------------------------------------------
# one report: the breakdown by a column and the test-retest of its two values


@dataclass
class GroupedReport:
    """Errors per value of `column`, and (given `repeat`) the test-retest PFL difference between
    each subject's two images of those values, for the predictions and for the annotation."""

    column: str
    by_value: list[ValueErrors]
    repeat: tuple[str, str] | None
    retest_pred: RetestSummary | None
    retest_truth: RetestSummary | None

    def to_dict(self) -> dict:
        return {"column": self.column, "by_value": [asdict(v) for v in self.by_value],
                "repeat": list(self.repeat) if self.repeat else None,
                "retest_pred": asdict(self.retest_pred) if self.retest_pred else None,
                "retest_truth": asdict(self.retest_truth) if self.retest_truth else None}


def grouped_report(pred: np.ndarray, gt: np.ndarray, values: Sequence[str], subjects: Sequence[str],
                   pfl_pair: Pair, column: str, repeat: tuple[str, str] | None = None,
                   unit: str = "pfl") -> GroupedReport:
    """`errors_by_value` over `values` (one per image) and, given `repeat` = (a, b), the
    test-retest of every subject's value-a image against its value-b image."""
    by_value = errors_by_value(values, pred, gt, pfl_pair, unit=unit)
    retest_pred = retest_truth = None
    if repeat is not None:
        pairs = pairs_of_values(list(subjects), list(values), str(repeat[0]), str(repeat[1]))
        retest_pred, retest_truth = retest(pred, pfl_pair, pairs), retest(gt, pfl_pair, pairs)
    return GroupedReport(column, by_value, None if repeat is None else (str(repeat[0]), str(repeat[1])),
                         retest_pred, retest_truth)
