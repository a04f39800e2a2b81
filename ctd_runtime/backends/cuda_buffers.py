"""A tiny CUDA layer for the TensorRT backend: device buffers, one stream, async copies, and the
facts of the GPU (name, compute capability, runtime and driver versions).

Two implementations behind one surface, chosen lazily (nothing CUDA is imported before use):

- cuda-python: `cuda.bindings.runtime` (cuda-python >= 12.6 layout), else the older `cuda.cudart`.
  Every call returns a tuple whose first item is a `cudaError_t`; `check` turns a non-success
  into a CtdError with CUDA's own message and hands back the remaining values.
- pycuda: `pycuda.driver` on the device's primary context (the context the CUDA runtime and
  TensorRT use), so both see the same allocations.

    api = load_cuda_api()                 # or load_cuda_api("pycuda")
    stream = api.stream_create()
    buf = DeviceBuffer(api, nbytes)       # grows with `ensure(nbytes)`
    api.memcpy_htod_async(buf.ptr, host_array, stream)
    ...; api.stream_synchronize(stream)
    buf.free(); api.stream_destroy(stream); api.close()   # close: what the binding itself holds

`close` releases what the API object acquired for itself: pycuda's pushed and retained primary
context (popped and released exactly once, after freeing allocations still held); a no-op for
cuda-python, whose runtime API holds nothing per object.

Host arrays must be C-contiguous numpy arrays; copies from pageable memory are staged by the
driver (correct, a little slower than pinned memory, which this layer does not need).
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from ctd_runtime.errors import CtdError

IMPLEMENTATIONS: tuple[str, ...] = ("cuda-python", "pycuda")
INSTALL_HINT = "pip install 'ctd[tensorrt]' (cuda-python) or pip install pycuda, on a machine with an NVIDIA GPU"


@dataclass(frozen=True)
class GpuFacts:
    """What an engine is tied to: the GPU model and the CUDA versions around it."""

    gpu_name: str
    compute_capability: str  # "8.7"
    cuda_runtime_version: str  # "12.6"
    cuda_driver_version: str  # "12.8" (the newest CUDA the driver supports)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def cuda_version_string(version: int) -> str:
    """CUDA's integer version (1000 * major + 10 * minor) as "major.minor": 12060 -> "12.6"."""
    v = int(version)
    return f"{v // 1000}.{(v % 1000) // 10}"


class CudaApi(Protocol):
    name: str

    def malloc(self, nbytes: int) -> int: ...
    def free(self, ptr: int) -> None: ...
    def memcpy_htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None: ...
    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None: ...
    def stream_create(self) -> Any: ...
    def stream_synchronize(self, stream: Any) -> None: ...
    def stream_destroy(self, stream: Any) -> None: ...
    def stream_handle(self, stream: Any) -> int: ...
    def gpu_facts(self, device: int = 0) -> GpuFacts: ...
    def close(self) -> None: ...


# ---------------------------------------------------------------------------- cuda-python


def _import_cudart() -> Any:
    """cuda-python's runtime module: `cuda.bindings.runtime`, else the older `cuda.cudart`."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("cuda-python is not installed")


class CudaPythonApi:
    """The CUDA runtime through cuda-python."""

    name = "cuda-python"

    def __init__(self, cudart: Any | None = None) -> None:
        self.rt = cudart if cudart is not None else _import_cudart()
        self._success = self.rt.cudaError_t.cudaSuccess

    def check(self, result: Any, what: str) -> Any:
        """cuda-python's (err, *values) -> values (None, one value or a tuple); CtdError on error."""
        if isinstance(result, tuple):
            err, values = result[0], result[1:]
        else:
            err, values = result, ()
        if err != self._success:
            message = ""
            try:
                got = self.rt.cudaGetErrorString(err)
                text = got[1] if isinstance(got, tuple) else got
                message = text.decode() if isinstance(text, bytes) else str(text)
            except Exception:  # noqa: BLE001 - the message is a courtesy
                pass
            name = getattr(err, "name", str(err))
            raise CtdError(f"CUDA error in {what}: {name}{': ' + message if message else ''}")
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def malloc(self, nbytes: int) -> int:
        return int(self.check(self.rt.cudaMalloc(int(nbytes)), "cudaMalloc"))

    def free(self, ptr: int) -> None:
        self.check(self.rt.cudaFree(ptr), "cudaFree")

    def memcpy_htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.check(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream), "cudaMemcpyAsync (H2D)")

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.check(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream), "cudaMemcpyAsync (D2H)")

    def stream_create(self) -> Any:
        return self.check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def stream_synchronize(self, stream: Any) -> None:
        self.check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def stream_destroy(self, stream: Any) -> None:
        self.check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def stream_handle(self, stream: Any) -> int:
        if hasattr(stream, "getPtr"):
            return int(stream.getPtr())
        return int(stream)

    def gpu_facts(self, device: int = 0) -> GpuFacts:
        props = self.check(self.rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
        name = props.name
        name = name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)
        return GpuFacts(
            gpu_name=name.strip(),
            compute_capability=f"{props.major}.{props.minor}",
            cuda_runtime_version=cuda_version_string(self.check(self.rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")),
            cuda_driver_version=cuda_version_string(self.check(self.rt.cudaDriverGetVersion(), "cudaDriverGetVersion")),
        )

    def close(self) -> None:
        """Nothing to release: the runtime API's primary context belongs to the process."""

    def __enter__(self) -> "CudaPythonApi":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------- pycuda


class PyCudaApi:
    """The CUDA driver API through pycuda, on device `device`'s primary context."""

    name = "pycuda"

    def __init__(self, device: int = 0, driver: Any | None = None) -> None:
        if driver is None:
            driver = importlib.import_module("pycuda.driver")
        self.drv = driver
        self._allocations: dict[int, Any] = {}
        self._pushed = False
        self.context: Any = None
        self._call("init", self.drv.init)
        self.device = self._call("Device", self.drv.Device, device)
        context = self._call("retain_primary_context", self.device.retain_primary_context)
        try:
            self._call("Context.push", context.push)
        except Exception:
            context.detach()  # release the retain: nothing else would
            raise
        self.context, self._pushed = context, True

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self.drv.Error as e:
            raise CtdError(f"CUDA error in {what}: {e}") from None

    def malloc(self, nbytes: int) -> int:
        alloc = self._call("mem_alloc", self.drv.mem_alloc, int(nbytes))
        ptr = int(alloc)
        self._allocations[ptr] = alloc
        return ptr

    def free(self, ptr: int) -> None:
        alloc = self._allocations.pop(int(ptr), None)
        if alloc is not None:
            self._call("free", alloc.free)

    def memcpy_htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self._call("memcpy_htod_async", self.drv.memcpy_htod_async, dst, src, stream)

    def memcpy_dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        self._call("memcpy_dtoh_async", self.drv.memcpy_dtoh_async, dst, src, stream)

    def stream_create(self) -> Any:
        return self._call("Stream", self.drv.Stream)

    def stream_synchronize(self, stream: Any) -> None:
        self._call("Stream.synchronize", stream.synchronize)

    def stream_destroy(self, stream: Any) -> None:
        pass  # pycuda frees the stream with the object

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def gpu_facts(self, device: int = 0) -> GpuFacts:
        dev = self.drv.Device(device)
        major, minor = dev.compute_capability()
        runtime = self.drv.get_version()  # the CUDA toolkit pycuda was built against, (12, 6, 0)
        return GpuFacts(
            gpu_name=str(dev.name()).strip(),
            compute_capability=f"{major}.{minor}",
            cuda_runtime_version=f"{runtime[0]}.{runtime[1]}",
            cuda_driver_version=cuda_version_string(self.drv.get_driver_version()),
        )

    def close(self) -> None:
        """Free allocations still held, pop the context pushed in __init__ and release the
        retained primary context, each once; a second close does nothing."""
        if self.context is None:
            return
        context, self.context = self.context, None
        for alloc in self._allocations.values():
            try:
                alloc.free()
            except Exception:  # noqa: BLE001 - freeing on the way out is best effort
                pass
        self._allocations = {}
        try:
            if self._pushed:
                self._pushed = False
                self._call("Context.pop", context.pop)
        finally:
            self._call("Context.detach", context.detach)

    def __enter__(self) -> "PyCudaApi":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------- choice


def load_cuda_api(prefer: str | None = None) -> CudaApi:
    """cuda-python when importable (or `prefer`red), else pycuda; CtdError when neither is."""
    if prefer is not None and prefer not in IMPLEMENTATIONS:
        raise CtdError(f"unknown CUDA binding {prefer!r}; choose from {', '.join(IMPLEMENTATIONS)}")
    order = [prefer] if prefer else list(IMPLEMENTATIONS)
    errors = []
    for name in order:
        try:
            return CudaPythonApi() if name == "cuda-python" else PyCudaApi()
        except ImportError as e:
            errors.append(f"{name}: {e}")
    raise CtdError(f"no CUDA Python binding found ({'; '.join(errors)}): {INSTALL_HINT}")


class DeviceBuffer:
    """A device allocation that grows on demand (never shrinks) and frees itself on close."""

    def __init__(self, api: CudaApi, nbytes: int = 0) -> None:
        self.api = api
        self.ptr = 0
        self.nbytes = 0
        if nbytes:
            self.ensure(nbytes)

    def ensure(self, nbytes: int) -> int:
        """A pointer to at least `nbytes` bytes (reallocating when the buffer is smaller)."""
        nbytes = max(int(nbytes), 1)
        if nbytes > self.nbytes:
            self.free()
            self.ptr = self.api.malloc(nbytes)
            self.nbytes = nbytes
        return self.ptr

    def free(self) -> None:
        if self.ptr:
            self.api.free(self.ptr)
        self.ptr = 0
        self.nbytes = 0

    def __enter__(self) -> "DeviceBuffer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.free()
