"""Backends that run exported ctd models: one protocol (`base.Backend`), one module per runtime.

`create_backend(path)` picks the backend from the file (`.onnx`: ONNX Runtime, `.plan`: TensorRT); backends are
imported lazily so a station without TensorRT never imports it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ctd_runtime.backends.base import Backend, BaseBackend, prepare_inputs
from ctd_runtime.errors import CtdError

# name -> "module:Class"; other backends (TensorRT) add themselves here
BACKENDS: dict[str, str] = {
    "onnxruntime": "ctd_runtime.backends.onnxruntime_backend:OnnxRuntimeBackend",
    "tensorrt": "ctd_runtime.backends.tensorrt_backend:TensorRTBackend",
}
# file suffix -> backend name
SUFFIXES: dict[str, str] = {".onnx": "onnxruntime", ".plan": "tensorrt", ".engine": "tensorrt"}


def backend_class(name: str) -> type:
    """The backend class registered under `name` (imported on first use)."""
    if name not in BACKENDS:
        raise CtdError(f"unknown backend {name!r}; choose from {', '.join(sorted(BACKENDS))}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create_backend(path: str | Path, backend: str | None = None, **options: Any) -> BaseBackend:
    """A backend for the model file (not opened yet); `backend` overrides the choice by suffix."""
    path = Path(path)
    name = backend or SUFFIXES.get(path.suffix.lower())
    if name is None:
        raise CtdError(
            f"cannot tell which backend runs {path.suffix or 'a file without suffix'!r} files; "
            f"known: {', '.join(sorted(SUFFIXES))}",
            path=path,
        )
    return backend_class(name)(path, **options)


__all__ = ["BACKENDS", "Backend", "BaseBackend", "backend_class", "create_backend", "prepare_inputs"]
