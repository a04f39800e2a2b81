"""The two-stage fused graph: the face model, then the eye model on the fissure crop that the face
model's own corners give, in one graph with the same inputs and outputs as a one-stage model.

    image, crop ─ face FusedLandmarkModel ─ landmarks1 ─ fissure crop affine (PairAlignedCrop) ─┐
    image ──────────────────────────────────────────────── eye FusedLandmarkModel ◀────────────┘
    ─ landmarks1 with its eye points replaced by the eye model's ─▶ landmarks, scores

So a station still opens one file and runs one graph; only K x 3 floats come back. The crop
rule is `ctd_train.data.dataset.crop_box("pfl", ...)` (centred on the two corners, crop_scale x
their distance, turned level, the corner further left first) written with element-wise ops only,
like the rest of the fused graph (no MatMul: TensorRT would run it in TF32).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from ctd_export.fused import FusedLandmarkModel


class PairAlignedCrop(nn.Module):
    """Landmarks [N, K, 2] (source px) -> the fissure crop affines [N, 2, 3] (crop px -> source px)."""

    def __init__(self, pair: tuple[int, int], crop_scale: float, input_size: int) -> None:
        super().__init__()
        self.pair = (int(pair[0]), int(pair[1]))
        self.k = float(crop_scale) / float(input_size)
        self.mid = (input_size - 1) / 2.0

    def forward(self, landmarks: torch.Tensor) -> torch.Tensor:
        p, q = landmarks[:, self.pair[0]], landmarks[:, self.pair[1]]
        swap = p[:, 0:1] > q[:, 0:1]
        a, b = torch.where(swap, q, p), torch.where(swap, p, q)
        dx, dy = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
        cx, cy = (a[:, 0] + b[:, 0]) * 0.5, (a[:, 1] + b[:, 1]) * 0.5
        l00, l01, l10, l11 = self.k * dx, -self.k * dy, self.k * dy, self.k * dx
        ox = cx - (l00 + l01) * self.mid
        oy = cy - (l10 + l11) * self.mid
        row0 = torch.stack([l00, l01, ox], dim=-1)
        row1 = torch.stack([l10, l11, oy], dim=-1)
        return torch.stack([row0, row1], dim=1)


class CascadeFusedModel(nn.Module):
    """`forward(image, crop) -> (landmarks, scores)` of the face model's schema, its landmarks
    `replaced[i]` taken from the eye model's landmark `replaced_by[i]`."""

    def __init__(
        self,
        face: FusedLandmarkModel,
        eye: FusedLandmarkModel,
        pairs: Sequence[tuple[int, int]],
        pfl_pair: tuple[int, int],
        crop_scale: float,
    ) -> None:
        super().__init__()
        if face.with_heatmaps or eye.with_heatmaps:
            raise ValueError("the two-stage graph returns landmarks and scores only (no heatmaps)")
        self.face, self.eye = face, eye
        self.crop_rule = PairAlignedCrop(pfl_pair, crop_scale, eye.input_size)
        k1 = face.num_landmarks
        source = np.arange(k1)
        for i, j in pairs:
            if not (0 <= i < k1 and 0 <= j < eye.num_landmarks):
                raise ValueError(f"landmark pair {(i, j)} outside the schemas ({k1} and {eye.num_landmarks} points)")
            source[i] = k1 + j                      # index into cat([face, eye])
        self.register_buffer("gather", torch.from_numpy(source.astype(np.int64)), persistent=False)

    def forward(self, image: torch.Tensor, crop: torch.Tensor):
        lm1, sc1 = self.face(image, crop)
        lm2, sc2 = self.eye(image, self.crop_rule(lm1))
        landmarks = torch.index_select(torch.cat([lm1, lm2], dim=1), 1, self.gather)
        scores = torch.index_select(torch.cat([sc1, sc2], dim=1), 1, self.gather)
        return landmarks, scores
