"""How far the station's PFL is from the truth, on the held-out captures the demo measured.

The truth of an image is its annotated PFL (the schema's PFL pair), in px and, with the image's
pixel spacing, in mm; the truth of a synthetic OBJ capture is the surface chord between the two
eye corners its generator placed (captures.json). Errors are |measured - true|, averaged over the
captures where both are known; a capture without a face found counts in `not_found`, not in the
means.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ctd_runtime.annotations import AnnotatedImages
from ctd_runtime.schema import get_schema


@dataclass(frozen=True)
class PflErrors:
    """Mean |PFL error| (and the mean true PFL, for scale) in px, mm (2D) and mm (3D), with the
    number of captures behind each; None where no capture had both numbers."""

    captures: int
    measured: int
    not_found: int
    failed: int
    px: float | None
    px_n: int
    true_px: float | None
    mm: float | None
    mm_n: int
    true_mm: float | None
    mm_3d: float | None
    mm_3d_n: int
    true_mm_3d: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def true_pfl_px(images: AnnotatedImages, schema_name: str) -> dict[str, float]:
    """{resolved image path: annotated PFL in px}."""
    schema = get_schema(schema_name)
    pts = schema.select(images.points)
    a, b = schema.pfl_pair
    lengths = np.linalg.norm(pts[:, a] - pts[:, b], axis=-1)
    return {str(Path(p).resolve()): float(v) for p, v in zip(images.image_paths, lengths)}


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def pfl_errors(results: Sequence[Any], truth_px: dict[str, float], truth_3d: dict[str, float],
               texture_truth_px: dict[str, float] | None = None) -> PflErrors:
    """The errors of `results` (ctd_runtime.results.CaptureResult) against the truth by resolved
    input path (`texture_truth_px`: an OBJ capture's 2D truth, by its resolved path)."""
    px, mm, mm3 = [], [], []
    true_px, true_mm, true_mm3 = [], [], []
    texture_truth_px = texture_truth_px or {}
    for r in results:
        if r.status != "ok":
            continue
        key = str(Path(r.input).resolve())
        t_px = truth_px.get(key, texture_truth_px.get(key))
        if t_px is not None and _finite(r.pfl_px):
            px.append(abs(r.pfl_px - t_px))
            true_px.append(t_px)
            if _finite(r.pfl_mm) and _finite(r.spacing_mm):
                mm.append(abs(r.pfl_mm - t_px * r.spacing_mm))
                true_mm.append(t_px * r.spacing_mm)
        t_3d = truth_3d.get(key)
        if t_3d is not None and _finite(r.pfl_3d_mm):
            mm3.append(abs(r.pfl_3d_mm - t_3d))
            true_mm3.append(t_3d)
    status = [r.status for r in results]
    return PflErrors(captures=len(results), measured=status.count("ok"), not_found=status.count("no_face"),
                     failed=status.count("error"), px=_mean(px), px_n=len(px), true_px=_mean(true_px),
                     mm=_mean(mm), mm_n=len(mm), true_mm=_mean(true_mm), mm_3d=_mean(mm3), mm_3d_n=len(mm3),
                     true_mm_3d=_mean(true_mm3))


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)
