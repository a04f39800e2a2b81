"""The TensorRT backend: runs a `model.plan` engine after checking its `model.plan.json` manifest
(`ctd_runtime.engine.manifest`) against this machine's TensorRT and GPU. `ctd build-engine`
(`ctd_runtime.engine.build`) writes plan and manifest.

TensorRT and the CUDA binding are imported in `open()`, never at import time. Written against the
TensorRT 10 and 11 Python APIs (I/O tensors by name: `set_input_shape`, `set_tensor_address`,
`execute_async_v3`; the names are checked against the real bindings by
tests/runtime/test_tensorrt_api.py); it holds no torch. What `open` acquires (the CUDA binding,
its stream, device buffers) is released by `close`, and by `open` itself when it fails halfway.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from ctd_runtime.artifacts import manifest_path
from ctd_runtime.backends.base import BaseBackend
from ctd_runtime.backends.cuda_buffers import DeviceBuffer, load_cuda_api
from ctd_runtime.engine.build import INPUT_NAMES
from ctd_runtime.engine.environment import current_environment, import_tensorrt
from ctd_runtime.engine.manifest import EngineManifest, check_engine_compatible, read_manifest
from ctd_runtime.errors import CtdError
from ctd_runtime.model_meta import ModelMetadata

OUTPUT_NAMES: tuple[str, str] = ("landmarks", "scores")


# ---------------------------------------------------------------------------- backend


def _profile_range(profile: dict[str, dict[str, list[int]]], name: str) -> tuple[list[int], list[int]] | None:
    entry = profile.get(name)
    if not entry:
        return None
    return list(entry["min"]), list(entry["max"])


class TensorRTBackend(BaseBackend):
    """`TensorRTBackend("model.plan")`: the backend protocol on a TensorRT engine."""

    name = "tensorrt"

    def __init__(self, path: str | Path, cuda: str | None = None, device: int = 0, verify_plan: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.cuda = cuda
        self.device = int(device)
        self.verify_plan = verify_plan
        self.manifest: EngineManifest | None = None
        self._trt: Any = None
        self._api: Any = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._buffers: dict[str, DeviceBuffer] = {}
        self._inputs: list[str] = []
        self._outputs: list[str] = []

    def _open(self) -> ModelMetadata:
        if not self.path.is_file():
            raise CtdError("engine plan not found", path=self.path)
        manifest = read_manifest(self.path)
        meta = manifest.metadata(where=manifest_path(self.path))
        trt = import_tensorrt()
        self._api = load_cuda_api(self.cuda)
        try:
            self._load(trt, manifest)
        except BaseException:
            self._close()
            raise
        self.manifest = manifest
        return meta

    def _load(self, trt: Any, manifest: EngineManifest) -> None:
        """Check the plan against its manifest and this machine, deserialise it, create the
        execution context, the stream and the buffers (released by `_close`)."""
        check_engine_compatible(manifest, current_environment(trt, self._api, self.device), self.path)
        data = self.path.read_bytes()
        if self.verify_plan and hashlib.sha256(data).hexdigest() != manifest.plan_sha256:
            raise CtdError(
                f"the plan does not match its manifest {manifest_path(self.path).name} (sha256 differs): "
                "it was replaced or damaged; rebuild it with `ctd build-engine`",
                path=self.path,
            )
        self._trt = trt
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise CtdError("TensorRT could not deserialise the engine (see its log above)", path=self.path)
        self._context = engine.create_execution_context()
        if self._context is None:
            raise CtdError("TensorRT could not create an execution context (out of GPU memory?)", path=self.path)
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
        if sorted(inputs) != sorted(INPUT_NAMES):
            raise CtdError(f"engine inputs are {inputs}, expected {list(INPUT_NAMES)} (a fused ctd graph)", path=self.path)
        missing = [o for o in OUTPUT_NAMES if o not in outputs]
        if missing:
            raise CtdError(f"engine has no output {missing[0]!r} (outputs: {outputs})", path=self.path)
        self._inputs, self._outputs = inputs, outputs
        self._stream = self._api.stream_create()
        self._buffers = {name: DeviceBuffer(self._api) for name in inputs + outputs}

    def _check_profile(self, name: str, shape: tuple[int, ...]) -> None:
        rng = _profile_range(self.manifest.profile, name) if self.manifest else None
        if rng is None:
            return
        lo, hi = rng
        if len(lo) != len(shape) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
            raise CtdError(
                f"{name} of shape {list(shape)} is outside the engine's optimisation profile "
                f"(min {lo}, max {hi}); rebuild with a wider profile (ctd build-engine --max-height/--max-width/--max-batch)",
                path=self.path,
            )

    def _run(self, image: np.ndarray, crop: np.ndarray) -> dict[str, np.ndarray]:
        trt, api, engine, context, stream = self._trt, self._api, self._engine, self._context, self._stream
        feeds = {"image": image, "crop": crop}
        for name, arr in feeds.items():
            self._check_profile(name, arr.shape)
            want = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if arr.dtype != want:
                arr = feeds[name] = np.ascontiguousarray(arr, dtype=want)
            if not context.set_input_shape(name, tuple(int(s) for s in arr.shape)):
                raise CtdError(f"TensorRT refused input shape {list(arr.shape)} for {name}", path=self.path)
        hosts: dict[str, np.ndarray] = {}
        for name in self._outputs:
            shape = tuple(int(s) for s in context.get_tensor_shape(name))
            hosts[name] = np.empty(shape, dtype=np.dtype(trt.nptype(engine.get_tensor_dtype(name))))
        for name, arr in list(feeds.items()) + list(hosts.items()):
            ptr = self._buffers[name].ensure(arr.nbytes)
            context.set_tensor_address(name, ptr)
        for name, arr in feeds.items():
            api.memcpy_htod_async(self._buffers[name].ptr, arr, stream)
        if not context.execute_async_v3(api.stream_handle(stream)):
            raise CtdError("TensorRT execution failed (see its log above)", path=self.path)
        for name, arr in hosts.items():
            api.memcpy_dtoh_async(arr, self._buffers[name].ptr, stream)
        api.stream_synchronize(stream)
        return {name: arr.astype(np.float32, copy=False) for name, arr in hosts.items()}

    def _close(self) -> None:
        """Release in reverse order of acquisition: buffers, stream, TensorRT objects, then the
        CUDA binding (pycuda pops its context here); each at most once."""
        api, self._api = self._api, None
        try:
            for buf in self._buffers.values():
                buf.free()
            self._buffers = {}
            if self._stream is not None and api is not None:
                stream, self._stream = self._stream, None
                api.stream_destroy(stream)
        finally:
            self._stream = None
            self._context = self._engine = self._runtime = None
            if api is not None:
                api.close()
