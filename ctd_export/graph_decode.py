"""Heatmap decoding as a graph: `HeatmapCodec.decode` (argmax / quarter / DARK) rebuilt from
TensorRT-friendly ops, so the exported model outputs landmarks rather than heatmaps.

It reproduces the numpy codec in FP32 (see `ctd_runtime.codec`), with these choices for the
TensorRT 10 ONNX parser (docs/onnx_operators.md):

- the peak is an ArgMax over float data [N, K, h*w] (no TopK);
- the flat index becomes heatmap coordinates by Gather from float tables (x = i % w and y = i // w,
  tabulated), never by integer floor-division / modulo (exported as Div/Mod/Where/Xor on int64);
- neighbours (+-1, +-w; for DARK also +-2, +-2w and the diagonals) are gathered with
  GatherElements at index + constant, kept inside the flattened map by Max/Min (no Pad: the
  exporters write Pad's reversed pads with a step -1 Slice); a neighbour that is not really one
  (beyond the border, or wrapped into the next row) is never used, because whether a neighbour
  counts comes from float validity tables indexed by the peak, as the codec decides it;
- DARK's Gaussian blur is a fixed depthwise Conv with OpenCV's kernel and a zero border;
- "finite" is |x| < inf (Abs + Less: false for NaN and +-inf), no IsInf;
- K and the heatmap size are static (fixed by the trained model); only the batch is dynamic.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ctd_runtime.codec import DARK_BORDER, DECODE_METHODS, HeatmapCodec, dark_kernel_size

# DARK's five-by-five stencil: (dy, dx) of every value the Newton step reads, in this order
_DARK_STENCIL: tuple[tuple[int, int], ...] = (
    (0, 0),
    (0, 1), (0, -1), (1, 0), (-1, 0),
    (0, 2), (0, -2), (2, 0), (-2, 0),
    (1, 1), (1, -1), (-1, 1), (-1, -1),
)
_QUARTER_STENCIL: tuple[tuple[int, int], ...] = ((0, 1), (0, -1), (1, 0), (-1, 0))


def dark_blur_kernel(sigma: float) -> np.ndarray:
    """OpenCV's 2-D Gaussian kernel of DARK's blur (outer product of getGaussianKernel), float32."""
    ks = dark_kernel_size(sigma)
    g = cv2.getGaussianKernel(ks, sigma, ktype=cv2.CV_64F)[:, 0]
    return np.outer(g, g).astype(np.float32)


class GraphDecoder(nn.Module):
    """Heatmaps [N, K, h, w] -> (heatmap-pixel coordinates [N, K, 2], scores [N, K]).

    The same numbers as `HeatmapCodec.decode(...)` before its heatmap -> crop step; the crop step
    is `heatmap_to_crop` below. `num_landmarks` and `heatmap_size` are fixed at construction.
    """

    def __init__(self, codec: HeatmapCodec, method: str, num_landmarks: int, heatmap_size: int | None = None):
        super().__init__()
        if method not in DECODE_METHODS:
            raise ValueError(f"unknown decode method {method!r}; choose from {', '.join(DECODE_METHODS)}")
        self.method = method
        self.stride = int(codec.stride)
        self.sigma = float(codec.sigma)
        self.k = int(num_landmarks)
        h = w = int(heatmap_size if heatmap_size is not None else codec.heatmap_size)
        self.h, self.w = h, w
        n = h * w
        idx = np.arange(n)
        xs = (idx % w).astype(np.float32)
        ys = (idx // w).astype(np.float32)
        self.register_buffer("x_table", torch.from_numpy(xs), persistent=False)
        self.register_buffer("y_table", torch.from_numpy(ys), persistent=False)
        if method == "quarter":
            stencil = _QUARTER_STENCIL
            inner_x = (xs > 0) & (xs < w - 1)
            inner_y = (ys > 0) & (ys < h - 1)
            self.register_buffer("inner_x", torch.from_numpy(inner_x.astype(np.float32)), persistent=False)
            self.register_buffer("inner_y", torch.from_numpy(inner_y.astype(np.float32)), persistent=False)
        elif method == "dark":
            stencil = _DARK_STENCIL
            m = DARK_BORDER
            ok = (xs >= m) & (xs < w - m) & (ys >= m) & (ys < h - m)
            self.register_buffer("dark_ok", torch.from_numpy(ok.astype(np.float32)), persistent=False)
            kernel = dark_blur_kernel(self.sigma)
            ks = kernel.shape[0]
            self.pad = ks // 2
            weight = np.broadcast_to(kernel, (self.k, 1, ks, ks)).copy()
            self.register_buffer("blur_weight", torch.from_numpy(weight), persistent=False)
        else:
            stencil = ()
        # flat offsets of the stencil, and the index range the gathered positions are kept in
        offsets = [dy * w + dx for dy, dx in stencil]
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.int64), persistent=False)
        self.register_buffer("index_lo", torch.zeros((), dtype=torch.int64), persistent=False)
        self.register_buffer("index_hi", torch.tensor(n - 1, dtype=torch.int64), persistent=False)

    # ------------------------------------------------------------------ pieces

    def _neighbours(self, flat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Values of the stencil around the flat peak index: [N, K, L], idx [N, K, 1] -> [N, K, S]
        (positions outside the map read a border value, which the validity tables then ignore)."""
        where = torch.minimum(torch.maximum(idx + self.offsets, self.index_lo), self.index_hi)
        return torch.gather(flat, 2, where)

    def _quarter(self, flat: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        v = self._neighbours(flat, idx)
        dx = v[..., 0] - v[..., 1]
        dy = v[..., 2] - v[..., 3]
        ix = self.inner_x[idx[..., 0]]
        iy = self.inner_y[idx[..., 0]]
        return torch.stack([0.25 * torch.sign(dx) * ix, 0.25 * torch.sign(dy) * iy], dim=-1)

    def _dark(self, clean: torch.Tensor, peak: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        blurred = F.conv2d(clean, self.blur_weight, padding=self.pad, groups=self.k)
        bflat = blurred.reshape(-1, self.k, self.h * self.w)
        bmax = torch.amax(bflat, dim=2, keepdim=True)
        positive = bmax > 0
        ratio = torch.where(positive, peak / torch.where(positive, bmax, 1.0), 1.0)
        logh = torch.log(torch.clamp(bflat * ratio, min=1e-10))
        v = self._neighbours(logh, idx)
        c = v[..., 0]
        dx = 0.5 * (v[..., 1] - v[..., 2])
        dy = 0.5 * (v[..., 3] - v[..., 4])
        dxx = 0.25 * (v[..., 5] - 2 * c + v[..., 6])
        dyy = 0.25 * (v[..., 7] - 2 * c + v[..., 8])
        dxy = 0.25 * (v[..., 9] - v[..., 10] - v[..., 11] + v[..., 12])
        det = dxx * dyy - dxy * dxy
        ok = (self.dark_ok[idx[..., 0]] > 0.5) & (det > 1e-12) & (dxx < 0)
        safe_det = torch.where(ok, det, 1.0)
        off_x = torch.clamp(-(dyy * dx - dxy * dy) / safe_det, -0.5, 0.5)
        off_y = torch.clamp(-(dxx * dy - dxy * dx) / safe_det, -0.5, 0.5)
        return torch.stack([torch.where(ok, off_x, 0.0), torch.where(ok, off_y, 0.0)], dim=-1)

    # ------------------------------------------------------------------ forward

    def forward(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hm = heatmaps.float()
        finite = torch.abs(hm) < float("inf")
        clean = torch.where(finite, hm, 0.0)
        n_flat = self.h * self.w
        flat = clean.reshape(-1, self.k, n_flat)
        idx = torch.argmax(flat, dim=2, keepdim=True)  # [N, K, 1] int64, first maximum
        peak = torch.amax(flat, dim=2, keepdim=True)
        low = torch.amin(flat, dim=2, keepdim=True)
        all_finite = torch.amin(finite.reshape(-1, self.k, n_flat).to(torch.float32), dim=2, keepdim=True) > 0.5
        valid = all_finite & (peak > low)
        scores = torch.where(valid, peak, 0.0)[..., 0]
        xy = torch.stack([self.x_table[idx[..., 0]], self.y_table[idx[..., 0]]], dim=-1)
        if self.method == "quarter":
            xy = xy + self._quarter(flat, idx)
        elif self.method == "dark":
            xy = xy + self._dark(clean, peak, idx)
        return xy, scores

    def heatmap_to_crop(self, xy: torch.Tensor) -> torch.Tensor:
        """crop = stride * heatmap + (stride - 1) / 2 (the codec's formula)."""
        return xy * float(self.stride) + (self.stride - 1) / 2.0
