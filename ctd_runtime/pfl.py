"""PFL in 2D (pixels, and mm through a pixel spacing) and the quality flags of a measurement.

PFL is the distance between the schema's `pfl_pair` (endocanthion, exocanthion). A measurement
is never silently wrong: what makes it doubtful is returned as `QualityFlag`s next to it, never
raised (an error is for bad *input*, a flag for a doubtful *result*).

Pixel spacing (mm per source pixel, isotropic) comes from an option or from a per-image JSON
sidecar, the image's full file name plus `.json` (`capture.png` -> `capture.png.json`, so it
cannot collide with a result file named after the stem):

    {"pixel_spacing_mm": 0.25}

`pixel_spacing_mm` is required and must be a finite number > 0 (a JSON bool is not a number);
other keys are ignored, so a station may keep e.g. a subject id there. Given both an option and
a sidecar that disagree, the image is refused rather than one silently winning.

Flags (`FlagCode`, the strings that go into results):

- `low_score`: a landmark's heatmap score (its maximum, ~1 for a clean peak) is below
  `QualityOptions.min_score`;
- `outside_box`: a landmark lies outside the face box (x, y, w, h) or outside the network crop;
- `pass_disagreement`: the mean landmark shift between the first (coarse) and second pass is more
  than `max_pass_shift_pfl` times the second pass's PFL;
- `pfl_implausible`: a PFL (px, mm or 3D mm) is outside its plausible range, or not finite;
- `outside_uv`: a landmark maps into no UV triangle of the mesh (its 3D point is NaN).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from ctd_runtime.errors import CtdError
from ctd_runtime.geometry import apply_affine, invert_affine
from ctd_runtime.metrics import pfl
from ctd_runtime.schema import LandmarkSchema

SIDECAR_SUFFIX = ".json"
SIDECAR_KEY = "pixel_spacing_mm"
# Physically plausible PFL for ages 4-18 and adults (mean ~24 mm at 4 years, ~30 mm in adults).
# The lower bound sits well below the clinical FAS cut-off (about -2 SD, >= 20 mm from age 4) so
# that a genuinely short fissure - the thing being screened for - is not flagged as a failure.
DEFAULT_PFL_RANGE_MM: tuple[float, float] = (15.0, 40.0)
# Name of an optional schema attribute that overrides the mm range (LandmarkSchema has none yet).
SCHEMA_RANGE_ATTR = "pfl_range_mm"


class FlagCode(str, Enum):
    """Names of the quality flags; the value is what results.jsonl/csv carry."""

    LOW_SCORE = "low_score"
    OUTSIDE_BOX = "outside_box"
    PASS_DISAGREEMENT = "pass_disagreement"
    PFL_IMPLAUSIBLE = "pfl_implausible"
    OUTSIDE_UV = "outside_uv"


@dataclass(frozen=True)
class QualityFlag:
    """One reason to doubt a measurement: a code, a sentence, and the landmarks concerned."""

    code: FlagCode
    message: str
    landmarks: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, "landmarks": list(self.landmarks)}


@dataclass(frozen=True)
class QualityOptions:
    """Thresholds of the flags. A range of None is not checked (px has no default: it depends on
    the camera); `pfl_range_mm` None means the schema's range, else DEFAULT_PFL_RANGE_MM."""

    min_score: float = 0.3
    max_pass_shift_pfl: float = 0.25
    pfl_range_mm: tuple[float, float] | None = None
    pfl_range_px: tuple[float, float] | None = None
    crop_size: int = 256


@dataclass(frozen=True)
class PflMeasurement:
    """One image's landmarks and PFLs plus what the flags need; fields left None are not checked.

    `box` is (x, y, w, h) in source px; `crop_affine` is the 2x3 crop -> source matrix of the pass
    that produced the landmarks; `first_pass` the coarse pass's (K, 2) landmarks; `outside_uv`
    the landmarks that fell into no UV triangle (from `pfl_3d`).
    """

    landmarks: np.ndarray
    pfl_px: float
    pfl_mm: float | None = None
    pfl_3d_mm: float | None = None
    scores: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None
    crop_affine: np.ndarray | None = None
    first_pass: np.ndarray | None = None
    outside_uv: tuple[int, ...] = ()


# ---------------------------------------------------------------------------- PFL and spacing


def pfl_px(landmarks: np.ndarray, schema: LandmarkSchema) -> np.ndarray:
    """PFL in pixels of (K, 2) landmarks (a 0-d array) or of (N, K, 2) landmarks ([N])."""
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.ndim not in (2, 3) or pts.shape[-1] != 2 or pts.shape[-2] != schema.num_landmarks:
        raise ValueError(
            f"landmarks of shape {pts.shape} do not match schema {schema.name!r} "
            f"([N,] {schema.num_landmarks}, 2)"
        )
    return pfl(pts, schema.pfl_pair)


def pfl_mm(landmarks: np.ndarray, schema: LandmarkSchema, spacing_mm: float | np.ndarray) -> np.ndarray:
    """PFL in mm: PFL in px times the spacing (one number, or one per image for (N, K, 2))."""
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    if not np.all(np.isfinite(spacing) & (spacing > 0)):
        raise CtdError(f"pixel spacing must be a finite number > 0 mm/px, got {spacing_mm!r}")
    return pfl_px(landmarks, schema) * spacing


def validate_spacing(value: Any, where: str | Path | None = None) -> float:
    """A pixel spacing as a float, or a CtdError naming `where` (zero, negative, NaN, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CtdError(f"pixel spacing must be a number (mm per px), got {value!r}", path=where)
    spacing = float(value)
    if not math.isfinite(spacing) or spacing <= 0:
        raise CtdError(f"pixel spacing must be a finite number > 0 mm/px, got {value!r}", path=where)
    return spacing


def sidecar_path(image_path: str | Path) -> Path:
    """Where an image's spacing sidecar lives: `capture.png` -> `capture.png.json`."""
    p = Path(image_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def read_spacing_sidecar(path: str | Path) -> float:
    """The `pixel_spacing_mm` of a sidecar file; CtdError naming it when it is not valid."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise CtdError(f"cannot read the pixel-spacing sidecar: {e.strerror}", path=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CtdError(f"pixel-spacing sidecar is not valid JSON: {e}", path=path) from None
    if not isinstance(data, dict):
        raise CtdError(f"pixel-spacing sidecar must be a JSON object with {SIDECAR_KEY!r}", path=path)
    if SIDECAR_KEY not in data:
        raise CtdError(f"pixel-spacing sidecar has no {SIDECAR_KEY!r} key", path=path)
    return validate_spacing(data[SIDECAR_KEY], where=path)


def resolve_spacing(image_path: str | Path, option_mm: float | None = None) -> float | None:
    """The spacing for one image: its sidecar, the option, or None when neither exists.

    Both present and different (relative 1e-9) is a CtdError naming the sidecar.
    """
    option = None if option_mm is None else validate_spacing(option_mm, where="--spacing")
    side = sidecar_path(image_path)
    if not side.is_file():
        return option
    from_file = read_spacing_sidecar(side)
    if option is not None and not math.isclose(option, from_file, rel_tol=1e-9):
        raise CtdError(
            f"pixel spacing {from_file} mm/px in the sidecar disagrees with the option {option} mm/px",
            path=side,
        )
    return from_file


def measure_pfl(
    landmarks: np.ndarray,
    schema: LandmarkSchema,
    spacing_mm: float | None = None,
    **context: Any,
) -> PflMeasurement:
    """A PflMeasurement of one image's (K, 2) source-px landmarks; `context` fills the other
    fields (scores, box, crop_affine, first_pass, pfl_3d_mm, outside_uv)."""
    pts = np.asarray(landmarks, dtype=np.float64)
    px = float(pfl_px(pts, schema))
    mm = None if spacing_mm is None else float(pfl_mm(pts, schema, spacing_mm))
    return PflMeasurement(landmarks=pts, pfl_px=px, pfl_mm=mm, **context)


# ---------------------------------------------------------------------------- flags


def quality_flags(
    m: PflMeasurement, schema: LandmarkSchema, options: QualityOptions = QualityOptions()
) -> list[QualityFlag]:
    """Every flag that applies to a measurement, in FlagCode order; an empty list when none does."""
    flags = [
        _low_score(m, options),
        _outside_box(m),
        _outside_crop(m, options),
        _pass_disagreement(m, options),
        *_implausible_pfls(m, schema, options),
        outside_uv_flag(m.outside_uv),
    ]
    return [f for f in flags if f is not None]


def flag_codes(flags: list[QualityFlag]) -> list[str]:
    """The distinct codes of a flag list, in order (the CSV form)."""
    return list(dict.fromkeys(f.code.value for f in flags))


def plausible_range_mm(schema: LandmarkSchema, options: QualityOptions) -> tuple[float, float]:
    """The option's mm range, else the schema's `pfl_range_mm` if it declares one, else the default."""
    if options.pfl_range_mm is not None:
        return options.pfl_range_mm
    declared = getattr(schema, SCHEMA_RANGE_ATTR, None)
    return tuple(declared) if declared is not None else DEFAULT_PFL_RANGE_MM  # type: ignore[return-value]


def _low_score(m: PflMeasurement, options: QualityOptions) -> QualityFlag | None:
    if m.scores is None:
        return None
    scores = np.asarray(m.scores, dtype=np.float64).reshape(-1)
    low = tuple(int(i) for i in np.flatnonzero(~(scores >= options.min_score)))
    if not low:
        return None
    worst = float(np.nanmin(scores[list(low)])) if np.any(np.isfinite(scores[list(low)])) else math.nan
    return QualityFlag(
        FlagCode.LOW_SCORE,
        f"{len(low)} landmark(s) score below {options.min_score} (lowest {worst:.3f})",
        low,
    )


def _outside_box(m: PflMeasurement) -> QualityFlag | None:
    if m.box is None:
        return None
    x, y, w, h = (float(v) for v in m.box)
    pts = np.asarray(m.landmarks, dtype=np.float64)
    inside = (pts[:, 0] >= x) & (pts[:, 0] <= x + w) & (pts[:, 1] >= y) & (pts[:, 1] <= y + h)
    out = tuple(int(i) for i in np.flatnonzero(~inside))
    if not out:
        return None
    return QualityFlag(FlagCode.OUTSIDE_BOX, f"{len(out)} landmark(s) outside the face box {m.box}", out)


def _outside_crop(m: PflMeasurement, options: QualityOptions) -> QualityFlag | None:
    if m.crop_affine is None:
        return None
    crop_pts = apply_affine(invert_affine(m.crop_affine), np.asarray(m.landmarks, dtype=np.float64))
    lo, hi = -0.5, options.crop_size - 0.5
    inside = np.all((crop_pts >= lo) & (crop_pts <= hi), axis=1)
    out = tuple(int(i) for i in np.flatnonzero(~inside))
    if not out:
        return None
    return QualityFlag(FlagCode.OUTSIDE_BOX, f"{len(out)} landmark(s) outside the network crop", out)


def _pass_disagreement(m: PflMeasurement, options: QualityOptions) -> QualityFlag | None:
    if m.first_pass is None:
        return None
    first = np.asarray(m.first_pass, dtype=np.float64)
    shift = float(np.mean(np.linalg.norm(first - m.landmarks, axis=-1)))
    limit = options.max_pass_shift_pfl * m.pfl_px
    if shift <= limit:  # False for NaN: a non-finite pass is flagged
        return None
    return QualityFlag(
        FlagCode.PASS_DISAGREEMENT,
        f"second pass moved the landmarks by {shift:.2f} px on average "
        f"(> {options.max_pass_shift_pfl} PFL = {limit:.2f} px)",
    )


def _implausible_pfls(
    m: PflMeasurement, schema: LandmarkSchema, options: QualityOptions
) -> list[QualityFlag | None]:
    mm_range = plausible_range_mm(schema, options)
    return [
        _implausible("pfl_px", m.pfl_px, options.pfl_range_px, "px", schema.pfl_pair),
        _implausible("pfl_mm", m.pfl_mm, mm_range, "mm", schema.pfl_pair),
        _implausible("pfl_3d_mm", m.pfl_3d_mm, mm_range, "mm", schema.pfl_pair),
    ]


def _implausible(
    name: str, value: float | None, bounds: tuple[float, float] | None, unit: str, pair: tuple[int, int]
) -> QualityFlag | None:
    if value is None:
        return None
    if not math.isfinite(value):
        return QualityFlag(FlagCode.PFL_IMPLAUSIBLE, f"{name} is not finite ({value})", pair)
    if bounds is None or bounds[0] <= value <= bounds[1]:
        return None
    return QualityFlag(
        FlagCode.PFL_IMPLAUSIBLE,
        f"{name} = {value:.2f} {unit} is outside the plausible {bounds[0]}-{bounds[1]} {unit}",
        pair,
    )


def outside_uv_flag(landmarks: tuple[int, ...]) -> QualityFlag | None:
    """The `outside_uv` flag for landmarks that fall in no UV triangle (None for none)."""
    if not landmarks:
        return None
    return QualityFlag(
        FlagCode.OUTSIDE_UV,
        f"{len(landmarks)} landmark(s) fall in no UV triangle of the mesh (no 3D point)",
        tuple(int(i) for i in landmarks),
    )
