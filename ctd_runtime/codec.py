"""Heatmap codec: Gaussian targets for training and argmax / quarter / DARK decoding, shared by
training, evaluation, export parity and the station (MMPose-style: one place for coordinates).

Heatmap pixel (a, b) is centred on crop pixel (stride * a + (stride - 1) / 2, ...): a heatmap of
input_size / stride pixels covers the crop exactly, pixel-centre to pixel-centre. So

    crop = stride * heatmap + (stride - 1) / 2        heatmap = (crop - (stride - 1) / 2) / stride

which for stride 4 is crop = 4 h + 1.5 (the paper's "divide by 4", made exact for pixel centres).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

DecodeMethod = Literal["argmax", "quarter", "dark"]
DECODE_METHODS: tuple[str, ...] = ("argmax", "quarter", "dark")
DARK_BORDER = 3  # heatmap pixels; DARK refines only peaks at least this far inside


@dataclass(frozen=True)
class HeatmapCodec:
    """Encode crop-pixel landmarks to heatmaps and decode heatmaps back to crop pixels."""

    input_size: int = 256
    stride: int = 4
    sigma: float = 1.5

    def __post_init__(self) -> None:
        if self.input_size % self.stride:
            raise ValueError(f"input_size {self.input_size} is not a multiple of stride {self.stride}")

    @property
    def heatmap_size(self) -> int:
        return self.input_size // self.stride

    def crop_to_heatmap(self, xy: np.ndarray) -> np.ndarray:
        return (np.asarray(xy, dtype=np.float64) - (self.stride - 1) / 2.0) / self.stride

    def heatmap_to_crop(self, xy: np.ndarray) -> np.ndarray:
        return np.asarray(xy, dtype=np.float64) * self.stride + (self.stride - 1) / 2.0

    def encode(self, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """K crop-pixel landmarks -> (heatmaps float32 [K, h, h], weights float32 [K]).

        g(a, b) = exp(-((a - x)^2 + (b - y)^2) / (2 sigma^2)) in heatmap pixels. A landmark outside
        the crop (or non-finite) gets an all-zero heatmap and weight 0.
        """
        pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
        h = self.heatmap_size
        hm_xy = self.crop_to_heatmap(pts)
        grid = np.arange(h, dtype=np.float64)
        inside = np.all(np.isfinite(hm_xy), axis=1) & np.all((hm_xy >= -0.5) & (hm_xy <= h - 0.5), axis=1)
        safe = np.where(inside[:, None], hm_xy, 0.0)
        gx = np.exp(-((grid[None, :] - safe[:, 0:1]) ** 2) / (2 * self.sigma**2))  # [K, h]
        gy = np.exp(-((grid[None, :] - safe[:, 1:2]) ** 2) / (2 * self.sigma**2))
        heatmaps = gy[:, :, None] * gx[:, None, :]
        heatmaps[~inside] = 0.0
        return heatmaps.astype(np.float32), inside.astype(np.float32)

    def decode(
        self, heatmaps: np.ndarray, method: DecodeMethod = "argmax"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Heatmaps [N, K, h, w] (or [K, h, w]) -> (crop-pixel coords [N, K, 2], scores [N, K]).

        The score is the heatmap maximum; flat, all-zero or non-finite heatmaps get score 0
        (their coordinates are then meaningless and should be ignored).
        """
        hm = np.asarray(heatmaps, dtype=np.float32)
        squeeze = hm.ndim == 3
        if squeeze:
            hm = hm[None]
        if hm.ndim != 4:
            raise ValueError(f"heatmaps must be [N,K,h,w] or [K,h,w], got shape {hm.shape}")
        if method not in DECODE_METHODS:
            raise ValueError(f"unknown decode method {method!r}; choose from {', '.join(DECODE_METHODS)}")
        finite = np.isfinite(hm)
        clean = np.where(finite, hm, 0.0).astype(np.float32)
        xy, scores = argmax_decode(clean)
        valid = finite.all(axis=(2, 3)) & (clean.max(axis=(2, 3)) > clean.min(axis=(2, 3)))
        scores = np.where(valid, scores, 0.0).astype(np.float32)
        if method == "quarter":
            xy = xy + quarter_offsets(clean, xy)
        elif method == "dark":
            xy = xy + dark_offsets(clean, xy, self.sigma)
        coords = self.heatmap_to_crop(xy).astype(np.float32)
        if squeeze:
            return coords[0], scores[0]
        return coords, scores


def argmax_decode(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer peak positions (heatmap pixels, float) and peak values, [N,K,2] and [N,K]."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    idx = flat.argmax(axis=2)
    scores = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0]
    xy = np.stack([idx % w, idx // w], axis=-1).astype(np.float64)
    return xy, scores


def quarter_offsets(heatmaps: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """A quarter-pixel step from the integer peak toward the higher neighbour, per axis."""
    n, k, h, w = heatmaps.shape
    x = xy[..., 0].astype(int)
    y = xy[..., 1].astype(int)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    off = np.zeros_like(xy)
    inner_x = (x > 0) & (x < w - 1)
    inner_y = (y > 0) & (y < h - 1)
    xr, xl = np.clip(x + 1, 0, w - 1), np.clip(x - 1, 0, w - 1)
    yd, yu = np.clip(y + 1, 0, h - 1), np.clip(y - 1, 0, h - 1)
    dx = heatmaps[ni, ki, y, xr] - heatmaps[ni, ki, y, xl]
    dy = heatmaps[ni, ki, yd, x] - heatmaps[ni, ki, yu, x]
    off[..., 0] = np.where(inner_x, 0.25 * np.sign(dx), 0.0)
    off[..., 1] = np.where(inner_y, 0.25 * np.sign(dy), 0.0)
    return off


def dark_kernel_size(sigma: float) -> int:
    """Blur kernel of DARK's modulation: odd, about 3 sigma on each side (7 for sigma 1.5)."""
    return int(2 * np.ceil(2 * sigma) + 1)


def dark_offsets(heatmaps: np.ndarray, xy: np.ndarray, sigma: float) -> np.ndarray:
    """DARK (Zhang et al., CVPR 2020): Gaussian-modulate, take the log, one Newton step.

    offset = -H^{-1} g of log(h) at the integer peak, with central differences (step 1 for the
    gradient, step 2 for the second derivatives, as the reference implementation). Peaks closer
    than DARK_BORDER pixels to the border (where the zero border biases the blur), or with a non-negative-definite Hessian, keep offset 0; the step is
    clamped to half a heatmap pixel (the integer peak of a unimodal blob is the nearest grid
    point to its maximum, so a longer step can only come from a distorted border peak).
    """
    n, k, h, w = heatmaps.shape
    ks = dark_kernel_size(sigma)
    blurred = np.empty_like(heatmaps, dtype=np.float32)
    for i in range(n):
        for j in range(k):
            src = heatmaps[i, j]
            peak = src.max()
            b = cv2.GaussianBlur(src, (ks, ks), sigma, borderType=cv2.BORDER_CONSTANT)
            bmax = b.max()
            blurred[i, j] = b * (peak / bmax) if bmax > 0 else b
    logh = np.log(np.maximum(blurred, 1e-10)).astype(np.float64)
    x = xy[..., 0].astype(int)
    y = xy[..., 1].astype(int)
    m = DARK_BORDER
    ok = (x >= m) & (x < w - m) & (y >= m) & (y < h - m)
    xc, yc = np.clip(x, 2, w - 3), np.clip(y, 2, h - 3)
    ni, ki = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")

    def at(dy: int, dx: int) -> np.ndarray:
        return logh[ni, ki, yc + dy, xc + dx]

    c = at(0, 0)
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * c + at(0, -2))
    dyy = 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy**2
    ok &= (det > 1e-12) & (dxx < 0)
    safe_det = np.where(ok, det, 1.0)
    off_x = -(dyy * dx - dxy * dy) / safe_det
    off_y = -(dxx * dy - dxy * dx) / safe_det
    off = np.stack([off_x, off_y], axis=-1)
    off = np.where(ok[..., None], np.clip(off, -0.5, 0.5), 0.0)
    return off
