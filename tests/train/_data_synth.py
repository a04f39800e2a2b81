"""Synthetic annotated folders for the data tests (random images drawn in tmp_path; no real faces)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ctd_train.data.annotations import write_annotations


def eye_contour(cx: float, cy: float, lateral_sign: float, r: float = 14.0, a: float = 6.0) -> np.ndarray:
    """8 points: lateral corner, upper lid lateral->medial, medial corner, lower lid medial->lateral."""
    t_up = np.deg2rad([45.0, 90.0, 135.0])
    upper = np.stack([cx + lateral_sign * r * np.cos(t_up), cy - a * np.sin(t_up)], axis=1)
    lower = np.stack([cx - lateral_sign * r * np.cos(t_up), cy + a * np.sin(t_up)], axis=1)
    return np.vstack([[cx + lateral_sign * r, cy], upper, [cx - lateral_sign * r, cy], lower])


def face58(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """58 IMM-like points (eyes well formed, lateral corner first), all inside the image."""
    cx, cy = width / 2 + rng.uniform(-10, 10), height / 2 + rng.uniform(-10, 10)
    pts = np.empty((58, 2))
    t = np.linspace(np.pi, 0, 13)
    pts[0:13] = np.stack([cx + 55 * np.cos(t), cy + 10 + 50 * np.sin(t)], axis=1)  # jaw (below)
    pts[13:21] = eye_contour(cx + 28, cy - 20, +1)  # subject's left eye on the image right
    pts[21:29] = eye_contour(cx - 28, cy - 20, -1)  # subject's right eye on the image left
    pts[29:34] = np.stack([cx + 15 + 8 * np.arange(5), np.full(5, cy - 35)], axis=1)
    pts[34:39] = np.stack([cx - 15 - 8 * np.arange(5), np.full(5, cy - 35)], axis=1)
    pts[39:47] = np.stack([cx + 20 * np.cos(np.linspace(np.pi, -np.pi, 9)[:-1]),
                           cy + 35 + 6 * np.sin(np.linspace(np.pi, -np.pi, 9)[:-1])], axis=1)
    pts[47:58] = np.stack([cx + np.linspace(-10, 10, 11), cy + np.abs(np.linspace(-1, 1, 11)) * -25 + 10],
                          axis=1)
    return pts + rng.normal(0, 0.5, size=pts.shape)


def random_image(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def make_folder(root: Path, n_images: int = 6, n_subjects: int = 3, width: int = 200, height: int = 160,
                seed: int = 0, points: np.ndarray | None = None, ext: str = ".png") -> tuple[Path, np.ndarray]:
    """A valid data folder with IMM-like 58-point annotations; returns (root, points [N,58,2])."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    names, subjects, pts = [], [], []
    for i in range(n_images):
        name = f"{i % n_subjects:02d}-{i}{ext}"
        cv2.imwrite(str(root / "images" / name), random_image(width, height, rng))
        names.append(name)
        subjects.append(f"{i % n_subjects:02d}")
        pts.append(face58(width, height, rng) if points is None else points[i])
    arr = np.stack(pts)
    write_annotations(root, names, subjects, arr, decimals=6)
    return root, arr
