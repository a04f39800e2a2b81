"""The crop rule a model was trained with, and how the station rebuilds that crop from landmarks.

A model only sees crops made by its training rule (`ctd.crop` in its metadata, `CropSpec`):

- `face`: the square around ALL annotated points of the image (IMM: 58), side = longer side of
  their bounding box x (1 + margin);
- `schema`: the square around the schema's own points, with the same margin;
- `pfl`: the fissure crop, a square centred on the PFL pair, `crop_scale` x PFL wide, rotated so
  that the fissure runs left to right (`geometry.pair_aligned_box`).

`schema` and `pfl` can be rebuilt exactly from the model's own landmarks. `face` cannot (the model
predicts only its schema's points, not the whole annotation), so the station APPROXIMATES it: the
bounding square of all annotated points is estimated from the bounding square of the schema's
points by a `FaceFromSchema` fit (centre offset and scale, in units of the schema square's side,
image axes, no rotation), then the model's margin is applied. The fit of a built-in IMM schema is
in `FACE_FITS` (measured on the IMM annotations); any other schema gets the identity fit (the
schema's own square), which is exact only when the schema covers every annotated point.

`ctd.crop` is optional: files exported before it existed get `DEFAULT_CROP` (rule "face", margin
0.25, crop_scale 2.5), the training defaults of those runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctd_runtime import geometry
from ctd_runtime.errors import CtdError
from ctd_runtime.schema import LandmarkSchema

CROP_RULES: tuple[str, ...] = ("face", "schema", "pfl")
Box = tuple[float, float, float, float]  # x, y, w, h in source px


@dataclass(frozen=True)
class CropSpec:
    """The crop rule of a model (`ctd.crop`): rule, margin (face/schema), crop_scale (pfl)."""

    rule: str = "face"
    margin: float = 0.25
    crop_scale: float = 2.5

    def __post_init__(self) -> None:
        if self.rule not in CROP_RULES:
            raise CtdError(f"crop rule {self.rule!r} is not one of {', '.join(CROP_RULES)}")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise CtdError(f"crop margin must be a number >= 0, not {self.margin}")
        if not (math.isfinite(self.crop_scale) and self.crop_scale > 0):
            raise CtdError(f"crop_scale must be a number > 0, not {self.crop_scale}")

    def to_json(self) -> str:
        return json.dumps({"rule": self.rule, "margin": float(self.margin), "crop_scale": float(self.crop_scale)})

    @classmethod
    def from_json(cls, text: str, where: str | Path | None = None) -> "CropSpec":
        try:
            d = json.loads(text)
            if not isinstance(d, dict):
                raise TypeError("not a JSON object")
            return cls(rule=str(d["rule"]), margin=float(d.get("margin", 0.25)),
                       crop_scale=float(d.get("crop_scale", 2.5)))
        except CtdError as e:
            raise CtdError(f"ctd.crop: {e}", path=where) from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise CtdError(f"ctd.crop is not a valid crop rule ({type(e).__name__}: {e})", path=where) from None

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "CropSpec":
        """The rule of a training run's resolved config (keys crop, margin, crop_scale; defaults when absent)."""
        return cls(rule=str(config.get("crop", "face")), margin=float(config.get("margin", 0.25)),
                   crop_scale=float(config.get("crop_scale", 2.5)))


DEFAULT_CROP = CropSpec()


@dataclass(frozen=True)
class FaceFromSchema:
    """Bounding square of all annotated points estimated from that of the schema's points
    (margin 0): centre = schema centre + offset x schema side, side = scale x schema side."""

    offset: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale > 0) or not all(map(math.isfinite, self.offset)):
            raise CtdError(f"face-from-schema fit needs finite offsets and a scale > 0, not {self}")

    @classmethod
    def fit(cls, schema_points: np.ndarray, all_points: np.ndarray) -> "FaceFromSchema":
        """The least-squares fit over annotated images ([N, K, 2] schema points, [N, P, 2] all points)."""
        s = [geometry.square_box(p, 0.0) for p in np.asarray(schema_points, np.float64)]
        f = [geometry.square_box(p, 0.0) for p in np.asarray(all_points, np.float64)]
        s_side = np.array([side for _, side in s])
        offsets = np.array([(fc - sc) / ss for (sc, _), (fc, _), ss in zip(s, f, s_side)])
        scale = float(np.sum(s_side * np.array([side for _, side in f])) / np.sum(s_side ** 2))
        mean = offsets.mean(axis=0)
        return cls(offset=(float(mean[0]), float(mean[1])), scale=scale)


# Measured on all 240 IMM annotations with FaceFromSchema.fit. imm14 covers one eye, the nose and
# the mouth; the face square is ~1.7x wider and sits lower (the chin) and towards the other eye.
# Over IMM's head poses its centre spreads by about 0.18 (x) and 0.05 (y) of the schema side and
# its scale by 7%: the approximation's error, which a model trained with rule "schema" does not have.
FACE_FITS: dict[str, FaceFromSchema] = {
    "imm14": FaceFromSchema(offset=(0.0946, 0.1269), scale=1.6977),
    "imm58": FaceFromSchema(),
}


def face_fit_for(schema: LandmarkSchema) -> FaceFromSchema:
    """The built-in fit of the schema, or the identity (exact when the schema has every point)."""
    return FACE_FITS.get(schema.name, FaceFromSchema())


@dataclass(frozen=True)
class CropBox:
    """A crop in source px: the square's centre, side and rotation (degrees, `crop_affine`'s sense)."""

    center: tuple[float, float]
    side: float
    rotation_deg: float = 0.0

    def affine(self, input_size: int) -> np.ndarray:
        return geometry.crop_affine(self.center, self.side, input_size, self.rotation_deg)

    @property
    def box(self) -> Box:
        """The axis-aligned (x, y, w, h) of the unrotated square."""
        half = self.side / 2.0
        return (self.center[0] - half, self.center[1] - half, self.side, self.side)


def crop_from_landmarks(spec: CropSpec, landmarks: np.ndarray, schema: LandmarkSchema,
                        face_fit: FaceFromSchema | None = None) -> CropBox:
    """The crop the model's training rule makes from its own (K, 2) landmarks (see the module docstring)."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if spec.rule == "pfl":
        a, b = pts[list(schema.pfl_pair)]
        return pair_crop(a, b, spec.crop_scale)
    center, side = geometry.square_box(pts, 0.0)
    if spec.rule == "face":
        fit = face_fit if face_fit is not None else face_fit_for(schema)
        center = center + np.asarray(fit.offset) * side
        side = side * fit.scale
    return CropBox((float(center[0]), float(center[1])), max(side * (1.0 + spec.margin), 1.0))


def crop_from_box(spec: CropSpec, box: Box) -> CropBox:
    """The crop of a given box (x, y, w, h): for face/schema the box is the points' bounding box
    (square of its longer side x (1 + margin)); for pfl its horizontal mid-line is the fissure."""
    x, y, w, h = (float(v) for v in box)
    if spec.rule == "pfl":
        return pair_crop(np.array([x, y + h / 2]), np.array([x + w, y + h / 2]), spec.crop_scale)
    side = max(w, h) * (1.0 + spec.margin)
    return CropBox((x + w / 2.0, y + h / 2.0), max(side, 1.0))


def whole_image_crop(width: int, height: int) -> CropBox:
    """The square crop that holds the whole image (the coarse pass), centred on it."""
    return CropBox(((width - 1) / 2.0, (height - 1) / 2.0), float(max(width, height)))


def pair_crop(a: np.ndarray, b: np.ndarray, crop_scale: float) -> CropBox:
    """The fissure crop on the corners a and b (either order): the one rule training, the cascade
    and the station share, the fissure oriented left to right in the image."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a[0] > b[0]:
        a, b = b, a
    center, side, rotation = geometry.pair_aligned_box(a, b, crop_scale)
    return CropBox((float(center[0]), float(center[1])), side, rotation)


def check_box(box: Any, where: str | Path | None = None) -> Box:
    """A given face box as four finite floats with w, h > 0 (CtdError otherwise)."""
    try:
        values = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise CtdError(f"a box is four numbers x, y, w, h, not {box!r}", path=where) from None
    if len(values) != 4 or not all(map(math.isfinite, values)) or values[2] <= 0 or values[3] <= 0:
        raise CtdError(f"a box is four finite numbers x, y, w, h with w, h > 0, not {box!r}", path=where)
    return values  # type: ignore[return-value]
