"""The training/evaluation dataset: square face crops with heatmap targets.

For an item the crop box is the square around ALL annotated points of the image (for IMM the 58
points: jaw, brows, eyes, nose, mouth), enlarged by `margin`, not around the schema's own points:
a model trained on the one-eye `imm14` schema still sees the whole face, which is also what the
station's face box gives. Augmentation scales and rotates that box (and mirrors it for schemas
with flip pairs); the crop is sampled through the crop -> source affine of `ctd_runtime.geometry`,
and the landmarks go into the crop through the inverse of the same affine.

Crop rules (`CROP_RULES`): "face" is the square above; "schema" the square around the schema's own
points (what a model can compute from its own predictions: the station's second pass); "pfl" is the refinement stage's crop, a
square on the schema's PFL pair (`ctd_runtime.crop_rule.pair_crop`, the station's rule: centred on the
fissure, `crop_scale` x PFL wide, rotated so the fissure is horizontal). `box_points` replaces the
annotation as the source of the box (image index -> points): the first stage's predictions when
a cascade is evaluated, so the second stage sees the crops it will see on the station.

Randomness: item `i` draws from `numpy.random.default_rng([seed, epoch, image_index])`, so a run
is reproducible whatever the number of DataLoader workers; call `set_epoch(e)` before each epoch
(each worker holds its own copy of the dataset, so set it before creating the iterator, or use
persistent_workers=False).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ctd_runtime import geometry
from ctd_runtime.codec import HeatmapCodec
from ctd_runtime.crop_rule import CROP_RULES, pair_crop
from ctd_runtime.errors import CtdError
from ctd_runtime.normalization import Normalization
from ctd_runtime.schema import LandmarkSchema
from ctd_train.data.annotations import ANNOTATIONS_FILE, AnnotatedImages
from ctd_train.data.augment import AugmentConfig, AugmentParams, photometric, sample_params



def crop_box(rule: str, points: np.ndarray, margin: float, crop_scale: float,
             pfl_pair: tuple[int, int] | None = None) -> tuple[np.ndarray, float, float]:
    """(centre, side, rotation_deg) of the crop `rule` makes from `points`: for "face" and "schema"
    the square around all of them with `margin`; for "pfl" the fissure-aligned square on points[pfl_pair]
    (or on the two points given, when `pfl_pair` is None), oriented left to right in the image."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if rule in ("face", "schema"):
        center, side = geometry.square_box(pts, margin)
        return center, side, 0.0
    a, b = (pts[list(pfl_pair)] if pfl_pair is not None else pts[:2])
    crop = pair_crop(a, b, crop_scale)
    return np.asarray(crop.center), crop.side, crop.rotation_deg


class LandmarkCropDataset(Dataset):
    """Items are dicts of tensors:

    image [3, S, S] float32 (normalised), heatmaps [K, S/stride, S/stride] float32,
    target_weight [K] float32 (0 for landmarks outside the crop), landmarks [K, 2] crop px,
    landmarks_image [K, 2] source px, affine [2, 3] float32 (crop px -> source px; after a flip
    the affine contains the mirror, and landmarks/landmarks_image are the mirrored image's points:
    swapped by the schema's flip pairs, or its flip sources, e.g. the other eye),
    index: the image's index in `images` (int64).
    """

    def __init__(
        self,
        images: AnnotatedImages,
        indices: Sequence[int] | None,
        schema: LandmarkSchema,
        normalization: Normalization,
        codec: HeatmapCodec | None = None,
        augment: AugmentConfig | None = None,
        margin: float = 0.25,
        seed: int = 0,
        cache_images: bool = True,
        crop: str = "face",
        crop_scale: float = 2.5,
        box_points: dict[int, np.ndarray] | None = None,
    ) -> None:
        self.images = images
        self.indices = list(range(len(images))) if indices is None else [int(i) for i in indices]
        bad = [i for i in self.indices if not 0 <= i < len(images)]
        if bad:
            raise CtdError(f"image index {bad[0]} outside 0..{len(images) - 1}")
        self.schema = schema
        self.normalization = normalization
        self.codec = codec if codec is not None else HeatmapCodec()
        self.augment = augment
        self.margin = float(margin)
        self.seed = int(seed)
        self.cache_images = cache_images
        self.epoch = 0
        if self.seed < 0:
            raise CtdError(f"seed must be >= 0, not {seed}")
        if not (margin >= 0 and np.isfinite(margin)):  # NaN would crop nothing: black crops, NaN targets
            raise CtdError(f"crop margin must be a finite number >= 0, not {margin}")
        if crop not in CROP_RULES:
            raise CtdError(f"unknown crop rule {crop!r}; choose from {', '.join(CROP_RULES)}")
        if not (crop_scale > 0 and np.isfinite(crop_scale)):
            raise CtdError(f"crop_scale must be a finite number > 0, not {crop_scale}")
        self.crop = crop
        self.crop_scale = float(crop_scale)
        self.box_points = box_points
        if augment is not None and augment.flip and not schema.can_flip:
            raise CtdError(
                f"flip augmentation requested but schema {schema.name!r} has neither flip pairs nor flip "
                "sources (a one-eye schema without the other eye): a flip would mislabel landmarks; disable flip"
            )
        # fails early, naming the annotation file, when the schema needs points the data lacks
        self.schema.select(images.points[:1], where=images.root / ANNOTATIONS_FILE)

    @property
    def output_size(self) -> int:
        return self.codec.input_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def params(self, i: int) -> AugmentParams:
        idx = self.indices[i]
        rng = np.random.default_rng([self.seed, self.epoch, idx])
        return sample_params(self.augment, rng)

    def sample(self, i: int) -> dict[str, Any]:
        """Item `i` as numpy arrays, plus the uint8 BGR `crop`, the box and the drawn parameters."""
        idx = self.indices[i]
        image = self.images.load_image(idx, cache=self.cache_images)
        all_points = self.images.points[idx]
        p = self.params(i)
        # a flipped sample is labelled with the mirrored image's points (for a one-eye schema: the
        # other eye), and its box is found from those, so the crop holds what the labels name
        pts = self.schema.flipped_points(all_points) if p.flip else self.schema.select(all_points)
        center, side, rotation = self._box(idx, all_points, pts)
        size = self.output_size
        center = center + np.asarray(p.shift) * side
        affine = geometry.crop_affine(center, side * p.scale, size, rotation + p.rotation_deg, flip=p.flip)
        crop = geometry.warp_to_crop(image, affine, size)
        crop = photometric(crop, p)
        lm_image = pts
        lm_crop = geometry.apply_affine(geometry.invert_affine(affine), lm_image)
        heatmaps, weights = self.codec.encode(lm_crop)
        return {
            "crop": crop,
            "heatmaps": heatmaps,
            "target_weight": weights,
            "landmarks": lm_crop,
            "landmarks_image": lm_image,
            "affine": affine,
            "index": idx,
            "box_center": np.asarray(center, dtype=np.float64),
            "box_side": float(side),
            "params": p,
        }

    def _box(self, idx: int, all_points: np.ndarray, schema_points: np.ndarray) -> tuple[np.ndarray, float, float]:
        if self.box_points is not None:
            given = np.asarray(self.box_points[idx], dtype=np.float64)
            pair = self.schema.pfl_pair if (self.crop == "pfl" and len(given) == self.schema.num_landmarks) else None
            return crop_box(self.crop, given, self.margin, self.crop_scale, pair)
        if self.crop == "pfl":
            return crop_box("pfl", schema_points, self.margin, self.crop_scale, self.schema.pfl_pair)
        if self.crop == "schema":
            return crop_box("schema", schema_points, self.margin, self.crop_scale)
        return crop_box("face", all_points, self.margin, self.crop_scale)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.sample(i)
        return {
            "image": torch.from_numpy(self.normalization.apply(s["crop"])[0]),
            "heatmaps": torch.from_numpy(s["heatmaps"]),
            "target_weight": torch.from_numpy(s["target_weight"]),
            "landmarks": torch.from_numpy(s["landmarks"].astype(np.float32)),
            "landmarks_image": torch.from_numpy(np.asarray(s["landmarks_image"], dtype=np.float32)),
            "affine": torch.from_numpy(s["affine"].astype(np.float32)),
            "index": torch.tensor(s["index"], dtype=torch.int64),
        }
