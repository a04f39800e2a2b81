"""A backend wrapper that records each call: the Landmarker runs it like any backend, and the
harness reads how long each pass took, how many images it held, and the wrapped backend's own
sub-stages (`stage_seconds`, e.g. the eager pipeline's numpy decode)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ctd_runtime.backends import BaseBackend
from ctd_runtime.model_meta import ModelMetadata


@dataclass
class Call:
    seconds: float
    images: int
    stages: dict[str, float] = field(default_factory=dict)


class TimedBackend(BaseBackend):
    """`TimedBackend(opened_backend)`: the same backend; `calls` lists every run since `reset()`."""

    def __init__(self, inner: BaseBackend) -> None:
        super().__init__()
        self.inner = inner
        self.name = inner.name
        self.calls: list[Call] = []

    @property
    def manifest(self) -> Any:  # the Landmarker reads a TensorRT engine's batch profile from it
        return getattr(self.inner, "manifest", None)

    def reset(self) -> None:
        self.calls = []

    def _open(self) -> ModelMetadata:
        return self.inner.open().metadata

    def _run(self, image: np.ndarray, crop: np.ndarray) -> dict[str, np.ndarray]:
        stages = getattr(self.inner, "stage_seconds", None)
        before = dict(stages) if isinstance(stages, dict) else {}
        t0 = time.perf_counter()
        out = self.inner._run(image, crop)  # inputs were checked by our run_outputs
        seconds = time.perf_counter() - t0
        after = getattr(self.inner, "stage_seconds", None) or {}
        delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
        self.calls.append(Call(seconds, int(image.shape[0]), delta))
        return out

    def _close(self) -> None:
        self.inner.close()
