"""Pictures of training samples (`ctd data show`): the source image with the schema's landmarks
numbered and the (rotated) crop box, beside the network's crop with its landmarks and the sum of
its heatmaps overlaid. Both panels are drawn at 512 px height."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ctd_runtime import geometry
from ctd_runtime.atomic import write_bytes_atomic
from ctd_runtime.codec import HeatmapCodec
from ctd_runtime.errors import CtdError
from ctd_runtime.normalization import Normalization
from ctd_runtime.schema import LandmarkSchema
from ctd_train.data.annotations import read_annotations
from ctd_train.data.augment import AugmentConfig
from ctd_train.data.dataset import LandmarkCropDataset

PANEL = 512
_IDENTITY = Normalization("BGR", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _draw_points(img: np.ndarray, pts: np.ndarray, scale: float, color, weights=None) -> None:
    for k, (x, y) in enumerate(np.asarray(pts, dtype=np.float64)):
        if weights is not None and weights[k] == 0:
            continue
        c = (int(round((x + 0.5) * scale - 0.5)), int(round((y + 0.5) * scale - 0.5)))
        cv2.circle(img, c, 3, color, -1, cv2.LINE_AA)
        cv2.putText(img, str(k), (c[0] + 4, c[1] - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, str(k), (c[0] + 4, c[1] - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                    cv2.LINE_AA)


def render_sample(dataset: LandmarkCropDataset, i: int) -> np.ndarray:
    """One picture (uint8 BGR, PANEL px high) for item `i`."""
    s = dataset.sample(i)
    image = dataset.images.load_image(s["index"], cache=False)
    h, w = image.shape[:2]
    scale = PANEL / h
    left = cv2.resize(image, (max(1, int(round(w * scale))), PANEL), interpolation=cv2.INTER_AREA)
    size = dataset.output_size
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [size - 0.5, size - 0.5], [-0.5, size - 0.5]])
    box = (geometry.apply_affine(s["affine"], corners) + 0.5) * scale - 0.5
    cv2.polylines(left, [np.round(box).astype(np.int32)], True, (0, 255, 255), 2, cv2.LINE_AA)
    _draw_points(left, s["landmarks_image"], scale, (0, 0, 255))

    cscale = PANEL / size
    right = cv2.resize(s["crop"], (PANEL, PANEL), interpolation=cv2.INTER_LINEAR)
    hm = s["heatmaps"].sum(axis=0)
    hm = np.clip(hm, 0.0, 1.0)
    hm = cv2.resize(hm, (PANEL, PANEL), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.round(hm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (0.6 * hm)[..., None]
    right = np.round(right * (1 - alpha) + colour * alpha).astype(np.uint8)
    _draw_points(right, s["landmarks"], cscale, (0, 255, 0), s["target_weight"])
    name = dataset.images.image_names[s["index"]]
    cv2.putText(left, name, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(left, name, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1, cv2.LINE_AA)
    return np.hstack([left, np.zeros((PANEL, 8, 3), np.uint8), right])


def write_samples(
    data: str | Path,
    schema: LandmarkSchema,
    out_dir: str | Path,
    n: int = 6,
    seed: int = 0,
    augment: bool = False,
    margin: float = 0.25,
    codec: HeatmapCodec | None = None,
) -> list[Path]:
    """Draw `n` images picked by `seed` to `out_dir/sample_XX_<image>.png` (atomic writes)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CtdError("output path exists and is not a folder", path=out_dir)
    images = read_annotations(data, validate_images=False)
    cfg = AugmentConfig(flip=schema.can_flip) if augment else None
    order = np.random.default_rng(seed).permutation(len(images))[: min(n, len(images))]
    ds = LandmarkCropDataset(images, sorted(int(i) for i in order), schema, _IDENTITY, codec, cfg, margin, seed,
                             cache_images=False)
    pictures = [render_sample(ds, i) for i in range(len(ds))]  # every image read before any file is written
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CtdError(f"cannot create the output folder: {e.strerror}", path=out_dir) from None
    written = []
    for i, picture in enumerate(pictures):
        ok, buf = cv2.imencode(".png", picture)
        if not ok:
            raise CtdError("PNG encoding failed", path=out_dir)
        stem = Path(images.image_names[ds.indices[i]]).with_suffix("").as_posix().replace("/", "_")
        path = out_dir / f"sample_{i:02d}_{stem}.png"
        write_bytes_atomic(path, buf.tobytes())
        written.append(path)
    return written
