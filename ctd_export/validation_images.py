"""The parity gate's images: the run's validation split (its training split in a final fit), or a folder of face images, each with
the crop affine a face box gives (and rotated, scaled variants when there are few images)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ctd_runtime import geometry
from ctd_runtime.errors import CtdError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# variants of each validation crop: (rotation in degrees, scale of the box)
PARITY_VARIANTS: tuple[tuple[float, float], ...] = ((0.0, 1.0), (12.0, 1.1), (-9.0, 0.9), (25.0, 1.25))


def _variant_crops(center: np.ndarray, side: float, input_size: int, j: int) -> np.ndarray:
    rot, scale = PARITY_VARIANTS[j % len(PARITY_VARIANTS)]
    return geometry.crop_affine(center, side * scale, input_size, rot)


def _annotated_set(root: Path, indices: list[int] | None, margin: float, run: Any, max_images: int):
    from ctd_train.data.annotations import read_annotations

    data = read_annotations(root, validate_images=False)
    idx = list(range(len(data))) if indices is None else list(indices)
    if not idx:
        raise CtdError("no validation images in the split", path=root)
    images, crops = [], []
    for j in range(max_images):
        i = idx[j % len(idx)]
        center, side = geometry.square_box(data.points[i], margin)
        images.append(data.load_image(i, cache=True))
        crops.append(_variant_crops(center, side, run.input_size, j // len(idx)))
    return images, np.stack(crops)


def _folder_set(folder: Path, run: Any, max_images: int):
    from ctd_train.data.annotations import read_image

    if (folder / "annotations.csv").is_file():
        return _annotated_set(folder, None, 0.25, run, max_images)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise CtdError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder", path=folder)
    images, crops = [], []
    for j in range(max_images):
        img = read_image(files[j % len(files)])
        h, w = img.shape[:2]
        center = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
        crops.append(_variant_crops(center, float(min(h, w)), run.input_size, j // len(files)))
        images.append(img)
    return images, np.stack(crops)


def validation_set(run: Any, folder: str | Path | None, max_images: int) -> tuple[list[np.ndarray], np.ndarray, str]:
    """(uint8 BGR images, crop affines [N, 2, 3], where they come from) for the parity gate.

    A `folder` wins (a ctd data folder: boxes around its annotated points; otherwise centred
    square crops); else the run's validation split (the training split of a final fit, which has none), from the
    data folder its config names. Each
    image also appears rotated and scaled when there are fewer images than `max_images`.
    """
    if folder:
        folder = Path(folder)
        if not folder.is_dir():
            raise CtdError("validation image folder not found", path=folder)
        images, crops = _folder_set(folder, run, max_images)
        return images, crops, f"folder {folder}"
    data = (run.config or {}).get("data")
    if data and (Path(data) / "annotations.csv").is_file():
        from ctd_train.config import TrainConfig, split_indices
        from ctd_train.data.annotations import read_annotations

        cfg = TrainConfig.from_dict(run.config)
        subjects = read_annotations(data, validate_images=False).subjects
        splits = split_indices(subjects, cfg)
        # a final fit (val_subjects 0) has no validation split; parity needs real faces, not unseen ones
        name = "training" if cfg.final_fit else "validation"
        chosen = splits["train"] if cfg.final_fit else splits["val"]
        images, crops = _annotated_set(Path(data), chosen, cfg.margin, run, max_images)
        return images, crops, f"{name} split of {data} ({len(chosen)} images)"
    where = f" ({data})" if data else ""
    raise CtdError(
        f"no validation images for the parity gate: the run's data folder{where} is not available; "
        "give a folder of face images with --images DIR"
    )
