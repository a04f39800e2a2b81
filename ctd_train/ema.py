"""An exponential moving average of the predictor's weights (`TrainConfig.ema_decay`), the
averaging MMPose's EMAHook and timm's ModelEmaV3 apply: validation, checkpoints and export see the
average, training steps the raw weights.

Why: with 60-90 labelled images the raw weights move a lot from step to step, and picking the best
epoch on 30 validation images picks a lucky step too; the average is smoother on both counts. The
decay warms up as (1 + n) / (10 + n) (timm's), so the first epochs are not dominated by the
untrained head the average starts from. Built on torch's AveragedModel; buffers (BatchNorm running
statistics) are averaged too, integer buffers copied.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel

RAW_KEY = "raw_predictor"   # checkpoint_last.pt's training state: the raw weights, for resuming
COUNT_KEY = "ema_updates"


def warmed_decay(decay: float, updates: int) -> float:
    """The decay of the `updates`-th update: `decay`, capped at (1 + n) / (10 + n) early on."""
    return min(float(decay), (1.0 + updates) / (10.0 + updates))


def _ema_multi_avg_fn(decay: float):
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():   # num_batches_tracked and the like: follow the model
            torch._foreach_copy_(averaged, current)
            return
        d = warmed_decay(decay, int(n_averaged))
        torch._foreach_lerp_(averaged, current, 1.0 - d)
    return update


class WeightAverage:
    """The moving average of one module; `module` is the averaged copy to validate and save."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), not {decay}")
        self.decay = float(decay)
        self._avg = AveragedModel(model, multi_avg_fn=_ema_multi_avg_fn(self.decay), use_buffers=True)
        self._avg.eval()

    @property
    def module(self) -> torch.nn.Module:
        return self._avg.module

    @property
    def updates(self) -> int:
        return int(self._avg.n_averaged)

    def update(self, model: torch.nn.Module) -> None:
        """Fold the model's current weights in (call after every optimizer step)."""
        self._avg.update_parameters(model)

    def training_state(self, model: torch.nn.Module) -> dict[str, Any]:
        """What checkpoint_last.pt needs beside the averaged weights to resume exactly."""
        return {RAW_KEY: model.state_dict(), COUNT_KEY: self.updates}

    def restore(self, model: torch.nn.Module, averaged_state: dict[str, Any], training: dict[str, Any]) -> None:
        """Resume: the averaged weights into the average, the raw ones into `model`. KeyError when
        the checkpoint was written without an average."""
        model.load_state_dict(training[RAW_KEY])
        self.module.load_state_dict(averaged_state)
        self._avg.n_averaged.fill_(int(training[COUNT_KEY]))
