"""The stacked-hourglass baseline (Newell, Yang, Deng 2016), trained from scratch: a 7x7/2 stem,
residual bottleneck modules, max-pool to 1/4, then `num_stacks` hourglasses whose intermediate
heatmaps are remapped and added back to the features (intermediate supervision)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ctd_runtime.normalization import Normalization
from ctd_train.models.student import HEATMAP_STRIDE, resize_to_stride

# ImageNet mean/std on RGB 0..255 pixels: the hourglass has no teacher to inherit a normalisation from
HOURGLASS_NORMALIZATION = Normalization(
    "RGB", mean=(123.675, 116.28, 103.53), scale=(1 / 58.395, 1 / 57.12, 1 / 57.375)
)


class Residual(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-1x1 (cout/2), BN-ReLU-3x3, BN-ReLU-1x1 (cout), plus a
    1x1 projection shortcut when the channel count changes."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 2
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, mid, 1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1),
        )
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.skip(x)


class Hourglass(nn.Module):
    """One hourglass of `depth` levels: each level keeps a residual branch at its resolution and
    recurses at half resolution (max-pool 2x2), upsampled back (nearest) and added."""

    def __init__(self, depth: int, channels: int) -> None:
        super().__init__()
        self.up1 = Residual(channels, channels)
        self.low1 = Residual(channels, channels)
        self.low2: nn.Module = Hourglass(depth - 1, channels) if depth > 1 else Residual(channels, channels)
        self.low3 = Residual(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up1 = self.up1(x)
        low = self.low3(self.low2(self.low1(F.max_pool2d(x, 2, 2))))
        # upsample to up1's exact size (odd sizes lose a row/column at the max-pool)
        return up1 + F.interpolate(low, size=up1.shape[-2:], mode="nearest")


def _lin(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class StackedHourglass(nn.Module):
    """Normalised image [N, 3, H, W] -> heatmaps [N, K, H/4, W/4] of the last stack.

    Each hourglass halves its input `depth` times, so H/4 and W/4 must be at least 2**depth
    (64x64 input for depth 4; 256x256 in the paper's setting)."""

    def __init__(self, num_landmarks: int, num_stacks: int = 2, channels: int = 128, depth: int = 4) -> None:
        super().__init__()
        if num_stacks < 1 or depth < 1:
            raise ValueError("num_stacks and depth must be at least 1")
        self.num_landmarks = num_landmarks
        self.num_stacks = num_stacks
        self.stride = HEATMAP_STRIDE
        stem_ch = max(channels // 2, 1)
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem_ch, 7, stride=2, padding=3), nn.BatchNorm2d(stem_ch), nn.ReLU(inplace=True),
            Residual(stem_ch, channels), nn.MaxPool2d(2, 2),
            Residual(channels, channels), Residual(channels, channels),
        )
        self.hourglasses = nn.ModuleList(Hourglass(depth, channels) for _ in range(num_stacks))
        self.features = nn.ModuleList(
            nn.Sequential(Residual(channels, channels), _lin(channels, channels)) for _ in range(num_stacks)
        )
        self.heads = nn.ModuleList(nn.Conv2d(channels, num_landmarks, 1) for _ in range(num_stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(num_stacks - 1))
        self.merge_heatmaps = nn.ModuleList(nn.Conv2d(num_landmarks, channels, 1) for _ in range(num_stacks - 1))

    def stack_heatmaps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The heatmaps of every stack, first to last, each [N, K, H/4, W/4]."""
        y = self.stem(x)
        out = []
        for i in range(self.num_stacks):
            feats = self.features[i](self.hourglasses[i](y))
            hm = self.heads[i](feats)
            out.append(resize_to_stride(hm, x, self.stride))
            if i < self.num_stacks - 1:
                y = y + self.merge_features[i](feats) + self.merge_heatmaps[i](hm)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack_heatmaps(x)[-1]

    def forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        stacks = self.stack_heatmaps(x)
        return {"heatmaps": stacks[-1], "stack_heatmaps": stacks}
