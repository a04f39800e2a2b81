"""What `Landmarker.detect` returns: one `Detection` per image, with every pass that made it.

Landmarks are in source pixels (DESIGN.md "Pixels"). When no face is found (`found` False, with
a `reason`), `landmarks` and `scores` are NaN: a caller that forgets to check `found` measures a
NaN PFL, never a PFL of landmarks placed on noise. The raw passes stay in `passes` for diagnosis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ctd_runtime.crop_rule import Box, CropBox
from ctd_runtime.pfl import PflMeasurement, QualityFlag, measure_pfl
from ctd_runtime.schema import LandmarkSchema

BOX_SOURCES: tuple[str, ...] = ("given", "auto", "detector")


@dataclass(frozen=True)
class PassResult:
    """One run of the model: the crop it saw and what it found there. `seconds` is the wall time
    of the backend call (shared by the images of one batched call)."""

    landmarks: np.ndarray  # (K, 2) source px
    scores: np.ndarray     # (K,)
    crop: CropBox
    affine: np.ndarray     # (2, 3) crop px -> source px
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "landmarks": _floats(self.landmarks), "scores": _floats(self.scores),
            "crop": {"center": list(self.crop.center), "side": self.crop.side, "rotation_deg": self.crop.rotation_deg},
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class Detection:
    """The landmarks of one image, the box and crop they came from, per-pass results, timings
    (seconds by stage) and the quality flags that the image alone can raise (no spacing, no mesh:
    `measurement` plus `pfl.quality_flags` add those). `box` is the given or detected box, or
    for the automatic search the last crop's square."""

    found: bool
    landmarks: np.ndarray
    scores: np.ndarray
    schema: LandmarkSchema
    box: Box
    box_source: str
    passes: tuple[PassResult, ...]
    timings: dict[str, float]
    flags: list[QualityFlag] = field(default_factory=list)
    reason: str | None = None

    @property
    def final(self) -> PassResult:
        return self.passes[-1]

    @property
    def crop_affine(self) -> np.ndarray:
        """The crop -> source affine of the pass the landmarks come from."""
        return self.final.affine

    @property
    def pfl_px(self) -> float:
        """PFL in source pixels (NaN when no face was found)."""
        a, b = self.schema.pfl_pair
        return float(np.linalg.norm(self.landmarks[a] - self.landmarks[b]))

    def measurement(self, spacing_mm: float | None = None, pfl_3d_mm: float | None = None,
                    outside_uv: tuple[int, ...] = ()) -> PflMeasurement:
        """The PflMeasurement for `pfl.quality_flags`: this detection plus a spacing and a 3D PFL."""
        return measurement_of_passes(self.passes, self.schema, spacing_mm, pfl_3d_mm, outside_uv)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes null)."""
        return {
            "found": self.found,
            "reason": self.reason,
            "landmarks": _floats(self.landmarks),
            "scores": _floats(self.scores),
            "box": _floats(np.asarray(self.box)),
            "box_source": self.box_source,
            "passes": [p.to_dict() for p in self.passes],
            "timings": dict(self.timings),
            "flags": [f.to_dict() for f in self.flags],
        }


def measurement_of_passes(passes: Sequence[PassResult], schema: LandmarkSchema, spacing_mm: float | None = None,
                          pfl_3d_mm: float | None = None, outside_uv: tuple[int, ...] = ()) -> PflMeasurement:
    """What the flags judge: the last pass's landmarks and scores, its crop (`outside_box` means
    outside the network crop, i.e. the box plus the training margin: a given box is the tight box
    of the annotated points, which predicted extreme points leave by a pixel as often as not) and
    the pass before it (`pass_disagreement` compares the last two passes; the whole-image pass 1
    of the automatic search is coarse by design)."""
    last = passes[-1]
    previous = passes[-2].landmarks if len(passes) > 1 else None
    return measure_pfl(last.landmarks, schema, spacing_mm, pfl_3d_mm=pfl_3d_mm, scores=last.scores,
                       crop_affine=last.affine, first_pass=previous, outside_uv=outside_uv)


def _floats(a: np.ndarray) -> Any:
    """Nested lists of floats with NaN/inf as None (JSON has no NaN)."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 0:
        v = float(arr)
        return v if math.isfinite(v) else None
    return [_floats(x) for x in arr]
