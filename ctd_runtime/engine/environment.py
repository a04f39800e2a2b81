"""Where an engine is built or run: the TensorRT version and the GPU facts, and the one lazy
import of `tensorrt` (a CtdError with the install hint where it is missing)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ctd_runtime.backends.cuda_buffers import GpuFacts, load_cuda_api
from ctd_runtime.errors import CtdError

TENSORRT_MISSING = "TensorRT is not installed: pip install 'ctd[tensorrt]' on a machine with an NVIDIA GPU"


def import_tensorrt() -> Any:
    """The tensorrt module, or a CtdError saying how to install it."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise CtdError(TENSORRT_MISSING) from None


@dataclass(frozen=True)
class EngineEnvironment:
    """What an engine is tied to: TensorRT version and the GPU facts."""

    tensorrt_version: str
    gpu: GpuFacts

    def to_dict(self) -> dict[str, Any]:
        return {"tensorrt_version": self.tensorrt_version, **self.gpu.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EngineEnvironment":
        return cls(
            tensorrt_version=str(d["tensorrt_version"]),
            gpu=GpuFacts(
                gpu_name=str(d["gpu_name"]),
                compute_capability=str(d["compute_capability"]),
                cuda_runtime_version=str(d["cuda_runtime_version"]),
                cuda_driver_version=str(d["cuda_driver_version"]),
            ),
        )


def current_environment(trt: Any = None, cuda_api: Any = None, device: int = 0) -> EngineEnvironment:
    """This machine's TensorRT version and GPU facts. A CUDA binding loaded here for the question
    is closed again (pycuda pushes a context); one passed in stays the caller's."""
    trt = trt if trt is not None else import_tensorrt()
    if cuda_api is not None:
        return EngineEnvironment(tensorrt_version=str(trt.__version__), gpu=cuda_api.gpu_facts(device))
    api = load_cuda_api()
    try:
        return EngineEnvironment(tensorrt_version=str(trt.__version__), gpu=api.gpu_facts(device))
    finally:
        api.close()
