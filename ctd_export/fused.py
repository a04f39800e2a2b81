"""The fused landmark model: uint8 BGR image + crop affine in, source-pixel landmarks + scores out.

One graph does what the station would otherwise do around the network in numpy/OpenCV:

    image uint8 [N, H, W, 3] BGR ─┐
    crop float32 [N, 2, 3] ───────┴─ bilinear warp to S x S (GridSample) ─ channel order, mean,
    scale ─ predictor ─ decode (argmax / quarter / DARK, `graph_decode`) ─ heatmap -> crop px ─
    crop px -> source px through the same affine ─▶ landmarks float32 [N, K, 2], scores [N, K]
                                                    (+ heatmaps [N, K, S/4, S/4] on request)

`crop` maps crop pixels (u, v) to source pixels (x, y), pixel-centre convention (DESIGN.md), which
is what `cv2.warpAffine(..., WARP_INVERSE_MAP)` takes. GridSample (align_corners=False, zeros
padding) reads source pixel x at the normalised coordinate g = (2x + 1) / W - 1.

With `round_warp` (the default) the warped crop is rounded to whole intensities (ONNX Round, half
to even), as the uint8 crop of the reference pipeline (`geometry.warp_to_crop`) is: OpenCV >= 4.11
interpolates uint8 images in float and rounds, so the network sees the same crop up to one level
on a few pixels in ten thousand (older OpenCV sampled at 1/32 px in fixed point: one level on more
pixels). Without it the crop is the unrounded bilinear value.

Coordinates are computed with element-wise Mul/Add, never MatMul: TensorRT runs MatMul in TF32 by
default (10-bit mantissa), which would cost up to 0.5 px on a 1000 px coordinate.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ctd_export.graph_decode import GraphDecoder
from ctd_runtime.codec import HeatmapCodec
from ctd_runtime.normalization import Normalization


def _heatmap_shape(predictor: nn.Module, input_size: int) -> tuple[int, int]:
    """(K, heatmap side) of the predictor, from one forward pass on a zero input (in eval mode,
    so no BatchNorm statistics change)."""
    param = next(iter(predictor.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = predictor.training
    predictor.eval()
    try:
        with torch.no_grad():
            out = predictor(torch.zeros(1, 3, input_size, input_size, device=device))
    finally:
        predictor.train(was_training)
    if out.ndim != 4 or out.shape[2] != out.shape[3]:
        raise ValueError(f"the predictor must give square heatmaps [N, K, h, h], got {tuple(out.shape)}")
    return int(out.shape[1]), int(out.shape[2])


class FusedLandmarkModel(nn.Module):
    """`forward(image, crop) -> (landmarks, scores[, heatmaps])`; see the module docstring."""

    def __init__(
        self,
        predictor: nn.Module,
        normalization: Normalization,
        codec: HeatmapCodec,
        decode: str,
        input_size: int,
        with_heatmaps: bool = False,
        *,
        num_landmarks: int | None = None,
        round_warp: bool = True,
    ):
        super().__init__()
        if int(input_size) != codec.input_size:
            raise ValueError(f"input_size {input_size} differs from the codec's {codec.input_size}")
        self.predictor = predictor
        self.input_size = int(input_size)
        self.with_heatmaps = bool(with_heatmaps)
        self.round_warp = bool(round_warp)
        k, hm_size = _heatmap_shape(predictor, self.input_size)
        if hm_size != codec.heatmap_size:
            raise ValueError(
                f"the predictor gives {hm_size}x{hm_size} heatmaps for {input_size}x{input_size} input, "
                f"the codec expects {codec.heatmap_size}x{codec.heatmap_size} (stride {codec.stride})"
            )
        if num_landmarks is not None and num_landmarks != k:
            raise ValueError(f"the predictor gives {k} heatmaps, not {num_landmarks} (schema)")
        self.num_landmarks = k
        self.decoder = GraphDecoder(codec, decode, k)
        s = self.input_size
        v, u = np.meshgrid(np.arange(s, dtype=np.float32), np.arange(s, dtype=np.float32), indexing="ij")
        self.register_buffer("grid_u", torch.from_numpy(u), persistent=False)  # [S, S]
        self.register_buffer("grid_v", torch.from_numpy(v), persistent=False)
        order = [2, 1, 0] if normalization.channel_order == "RGB" else [0, 1, 2]
        self.swap_channels = order != [0, 1, 2]
        self.register_buffer("channel_order", torch.tensor(order, dtype=torch.int64), persistent=False)
        self.register_buffer(
            "mean", torch.tensor(normalization.mean, dtype=torch.float32).reshape(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "scale", torch.tensor(normalization.scale, dtype=torch.float32).reshape(1, 3, 1, 1), persistent=False
        )

    # ------------------------------------------------------------------ pieces

    def _source_coords(self, crop: torch.Tensor) -> torch.Tensor:
        """Source pixel (x, y) of every crop pixel: [N, 2, S, S] (x = a00 u + a01 v + a02, ...)."""
        a = crop.float()[:, :, :, None, None]  # [N, 2, 3, 1, 1]
        return a[:, :, 0] * self.grid_u + a[:, :, 1] * self.grid_v + a[:, :, 2]

    def warp(self, image: torch.Tensor, crop: torch.Tensor) -> torch.Tensor:
        """uint8 [N, H, W, 3] BGR + affines -> float32 [N, 3, S, S] BGR crop, 0..255, black outside."""
        img = image.to(torch.float32).permute(0, 3, 1, 2)
        if torch.jit.is_tracing():  # a Shape op in the TorchScript export: H and W stay dynamic
            shape = torch._shape_as_tensor(image).to(torch.float32)
            height, width = shape[1], shape[2]
        else:  # eager, or symbolic sizes under torch.export
            height, width = image.shape[1], image.shape[2]
        xy = self._source_coords(crop)
        gx = (2.0 * xy[:, 0] + 1.0) / width - 1.0
        gy = (2.0 * xy[:, 1] + 1.0) / height - 1.0
        grid = torch.stack([gx, gy], dim=-1)
        out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.round_warp:
            out = torch.round(out)
        return out

    def normalize(self, crop_bgr: torch.Tensor) -> torch.Tensor:
        x = crop_bgr[:, self.channel_order] if self.swap_channels else crop_bgr
        return (x - self.mean) * self.scale

    def to_source(self, crop_xy: torch.Tensor, crop: torch.Tensor) -> torch.Tensor:
        """Crop pixels [N, K, 2] -> source pixels through the crop affines [N, 2, 3] (element-wise)."""
        a = crop.float()[:, None]  # [N, 1, 2, 3]
        return crop_xy[..., 0:1] * a[..., 0] + crop_xy[..., 1:2] * a[..., 1] + a[..., 2]

    # ------------------------------------------------------------------ forward

    def forward(self, image: torch.Tensor, crop: torch.Tensor):
        net_in = self.normalize(self.warp(image, crop))
        heatmaps = self.predictor(net_in)
        xy, scores = self.decoder(heatmaps)
        landmarks = self.to_source(self.decoder.heatmap_to_crop(xy), crop)
        if self.with_heatmaps:
            return landmarks, scores, heatmaps
        return landmarks, scores
