"""Crop geometry: the 2x3 crop-to-image affine of DESIGN.md, built once, used everywhere.

Convention: a point (x, y) is in pixels with the origin at the centre of the top-left pixel,
x right, y down (OpenCV). A crop of `output_size` pixels spans the continuous interval
[-0.5, output_size - 0.5]; its centre (output_size - 1) / 2 maps to the box centre, and one crop
pixel covers side / output_size source pixels:

    [x, y]^T = c + R(rotation) * (side / output_size) * ([u, v]^T - (output_size - 1) / 2)

The matrix maps crop pixels (u, v) to source pixels (x, y). Landmarks go back through it.
"""

from __future__ import annotations

import cv2
import numpy as np


def square_box(points: np.ndarray, margin: float = 0.25) -> tuple[np.ndarray, float]:
    """Centre and side of a square around the points' bounding box, side = longer side * (1 + margin)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    center = (lo + hi) / 2.0
    side = float(max(hi - lo)) * (1.0 + margin)
    return center, max(side, 1.0)


def pair_aligned_box(a: np.ndarray, b: np.ndarray, scale: float) -> tuple[np.ndarray, float, float]:
    """(centre, side, rotation_deg) of the square crop on the segment a -> b: centred on its
    midpoint, side = scale x |b - a|, rotated so that a -> b runs along the crop's +x axis (for
    `crop_affine`). For an eye, a = exocanthion and b = endocanthion of the subject's right eye keep
    the face upright; the crop then always shows the fissure at the same size and angle."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    d = b - a
    length = float(np.hypot(d[0], d[1]))
    rotation = float(np.degrees(np.arctan2(-d[1], d[0])))
    return (a + b) / 2.0, max(scale * length, 1.0), rotation


def crop_affine(
    center: np.ndarray | tuple[float, float],
    side: float,
    output_size: int = 256,
    rotation_deg: float = 0.0,
    flip: bool = False,
) -> np.ndarray:
    """2x3 float64 matrix mapping crop pixels to source-image pixels.

    `rotation_deg` turns the crop counter-clockwise on the source image (positive angles show
    the face rotated clockwise in the crop); `flip` mirrors the crop horizontally.
    """
    cx, cy = float(center[0]), float(center[1])
    s = float(side) / float(output_size)
    t = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    lin = rot * s
    if flip:
        lin = lin @ np.diag([-1.0, 1.0])
    mid = (output_size - 1) / 2.0
    offset = np.array([cx, cy]) - lin @ np.array([mid, mid])
    return np.hstack([lin, offset[:, None]])


def invert_affine(affine: np.ndarray) -> np.ndarray:
    """The inverse 2x3 affine (source pixels -> crop pixels)."""
    a = np.asarray(affine, dtype=np.float64)
    lin_inv = np.linalg.inv(a[:, :2])
    return np.hstack([lin_inv, (-lin_inv @ a[:, 2])[:, None]])


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points [..., 2] through a 2x3 affine (batched affines [..., 2, 3] broadcast)."""
    a = np.asarray(affine, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    if a.ndim == 2:
        return p @ a[:, :2].T + a[:, 2]
    return np.einsum("...ij,...kj->...ki", a[..., :2], p) + a[..., None, :, 2]


def affine_scale(affine: np.ndarray) -> np.ndarray:
    """Source pixels per crop pixel (sqrt of |det|), per affine."""
    a = np.asarray(affine, dtype=np.float64)
    return np.sqrt(np.abs(np.linalg.det(a[..., :2])))


def warp_to_crop(image: np.ndarray, affine: np.ndarray, output_size: int = 256) -> np.ndarray:
    """Sample the crop from the image: bilinear, black outside the image.

    The affine maps crop -> source, which is exactly OpenCV's WARP_INVERSE_MAP.
    """
    return cv2.warpAffine(
        image,
        np.asarray(affine, dtype=np.float64),
        (output_size, output_size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
