"""How a model of reduced precision is judged against its FP32 original: one table for the
export's parity gate (against PyTorch) and the station's engine check
(ctd_runtime.engine.check, ONNX Runtime reference), so the two can never disagree."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gate:
    """The `statistic` ("max" or "mean") of the judged landmark distances must be within
    `tolerance_px` source pixels."""

    statistic: str
    tolerance_px: float


# Reduced precision moves near-tie decodes by whole heatmap pixels (README, 30 test images of the
# CTD-Com model against FP32: model.fp16.onnx 0.022 px mean but 5.5 px max, model.int8.onnx
# 0.58 / 6.2 px), so FP16 and INT8 are judged by their mean distance, FP32 by the largest.
REDUCED_PRECISION_GATES: dict[str, Gate] = {"fp16": Gate("mean", 0.1), "int8": Gate("mean", 1.0)}


def gate_for(precision: str, tolerance_px: float = 0.1) -> Gate:
    """The gate of a model of `precision`; FP32's tolerance is `tolerance_px`."""
    return REDUCED_PRECISION_GATES.get(precision, Gate("max", float(tolerance_px)))
