"""FP16 arithmetic in torch: the fused module with its predictor in half precision, the twin of
model.fp16.onnx whose arithmetic ONNX Runtime's CPU provider does not do (it runs FP16 Conv in
FP32 between Casts), so the FP16 report can say what FP16 itself costs."""

from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np

from ctd_export.calibration import Sample


def half_precision_fused(fused: Any) -> Any:
    """A copy of a `FusedLandmarkModel` whose predictor computes in FP16 (weights and activations
    half, casts at its input and output) while warp, normalisation and decode stay FP32: the same
    split as model.fp16.onnx."""
    import torch
    from torch import nn

    class _Half(nn.Module):
        def __init__(self, predictor: nn.Module) -> None:
            super().__init__()
            self.inner = predictor.half()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.half()).float()

    twin = copy.deepcopy(fused).eval()
    twin.predictor = _Half(twin.predictor)
    return twin


def run_torch(fused: Any, samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray]:
    """A fused torch module on the samples, one by one: (landmarks [N,K,2], scores [N,K])."""
    import torch

    lms, scs = [], []
    with torch.no_grad():
        for image, crop in samples:
            lm, sc = fused(torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(crop)))[:2]
            lms.append(lm.float().numpy())
            scs.append(sc.float().numpy())
    return np.concatenate(lms), np.concatenate(scs)
