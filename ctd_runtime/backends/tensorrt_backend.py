"""The TensorRT backend: runs a `model.plan` engine after checking its `model.plan.json` manifest
against this machine's TensorRT and GPU. Also the manifest itself (format, reading, the
compatibility check), since the station needs them without the export package.

An engine is a build for one TensorRT version and one GPU model: the manifest records both (plus
CUDA runtime and driver versions, the source ONNX's sha256 and ctd metadata, the optimisation
profile, precision and build flags), and `check_engine_compatible` refuses a plan built for
another TensorRT or GPU with a message naming the plan and both sides, instead of TensorRT's
deserialisation error. `ctd build-engine` (ctd_export.tensorrt_build) writes plan and manifest.

TensorRT and the CUDA binding are imported in `open()`, never at import time. Written against the
TensorRT 10 Python API (I/O tensors by name: `set_input_shape`, `set_tensor_address`,
`execute_async_v3`); it holds no torch.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctd_runtime.backends.base import BaseBackend
from ctd_runtime.backends.cuda_buffers import DeviceBuffer, GpuFacts, load_cuda_api
from ctd_runtime.errors import CtdError
from ctd_runtime.model_meta import ModelMetadata

TENSORRT_MISSING = "TensorRT is not installed: pip install 'ctd[tensorrt]' on a machine with an NVIDIA GPU"
MANIFEST_FORMAT = 1
INPUT_NAMES: tuple[str, str] = ("image", "crop")


def import_tensorrt() -> Any:
    """The tensorrt module, or a CtdError saying how to install it."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        raise CtdError(TENSORRT_MISSING) from None


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def manifest_path(plan_path: str | Path) -> Path:
    """model.plan -> model.plan.json."""
    p = Path(plan_path)
    return p.with_name(p.name + ".json")


# ---------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class EngineEnvironment:
    """Where an engine is built or run: TensorRT version and the GPU facts."""

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


@dataclass
class EngineManifest:
    """`model.plan.json`: what the engine is, what it was built from, where and how."""

    plan_file: str
    plan_sha256: str
    onnx_file: str
    onnx_sha256: str
    precision: str  # of the engine's network: fp16 | int8 | fp32
    build_mode: str  # strongly-typed | weakly-typed
    builder_flags: list[str]
    environment: EngineEnvironment
    profile: dict[str, dict[str, list[int]]]  # input -> {"min": [...], "opt": [...], "max": [...]}
    workspace_mb: int
    timing_cache: str | None
    build_seconds: float
    built_at: str
    ctd_version: str
    ctd_metadata: dict[str, str]  # the source ONNX's ctd.* map
    format: int = MANIFEST_FORMAT
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["environment"] = self.environment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str | Path | None = None) -> "EngineManifest":
        try:
            fmt = int(d.get("format", MANIFEST_FORMAT))
            if fmt > MANIFEST_FORMAT:
                raise CtdError(f"manifest format {fmt} is newer than this ctd reads ({MANIFEST_FORMAT}): upgrade ctd",
                               path=where)
            kw = dict(d)
            kw["environment"] = EngineEnvironment.from_dict(d["environment"])
            kw["builder_flags"] = list(d.get("builder_flags", []))
            kw["ctd_metadata"] = {str(k): str(v) for k, v in d["ctd_metadata"].items()}
            known = set(cls.__dataclass_fields__)
            return cls(**{k: v for k, v in kw.items() if k in known})
        except CtdError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CtdError(f"not a valid engine manifest ({type(e).__name__}: {e})", path=where) from None

    def metadata(self, where: str | Path | None = None) -> ModelMetadata:
        """The model's ctd metadata (that of the ONNX file the engine was built from)."""
        return ModelMetadata.from_map(self.ctd_metadata, where=where)


def read_manifest(plan_path: str | Path) -> EngineManifest:
    """The manifest next to a plan; CtdError naming the file when it is missing or invalid."""
    import json

    plan_path = Path(plan_path)
    path = manifest_path(plan_path)
    if not path.is_file():
        raise CtdError(
            f"no engine manifest {path.name} next to the plan: an engine without one cannot be checked "
            "against this GPU and TensorRT; rebuild it with `ctd build-engine`",
            path=plan_path,
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CtdError(f"cannot read the engine manifest ({e})", path=path) from None
    return EngineManifest.from_dict(data, where=path)


def _version_key(version: str, parts: int = 3) -> tuple[int, ...]:
    out = []
    for piece in str(version).split(".")[:parts]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        out.append(int(digits) if digits else 0)
    return tuple(out + [0] * (parts - len(out)))


def check_engine_compatible(manifest: EngineManifest, current: EngineEnvironment, plan_path: str | Path) -> None:
    """CtdError naming the plan and both sides when the engine was built for another TensorRT
    (major.minor.patch) or another GPU (compute capability or model name). CUDA versions are
    recorded but not compared: TensorRT checks those it depends on itself."""
    built = manifest.environment
    problems = []
    if _version_key(built.tensorrt_version) != _version_key(current.tensorrt_version):
        problems.append(
            f"it was built with TensorRT {built.tensorrt_version}, this machine has TensorRT {current.tensorrt_version}"
        )
    if built.gpu.compute_capability != current.gpu.compute_capability or built.gpu.gpu_name != current.gpu.gpu_name:
        problems.append(
            f"it was built for {built.gpu.gpu_name} (compute capability {built.gpu.compute_capability}), "
            f"this machine has {current.gpu.gpu_name} (compute capability {current.gpu.compute_capability})"
        )
    if problems:
        raise CtdError(
            "engine does not fit this machine: " + "; ".join(problems)
            + f". Rebuild it here from {manifest.onnx_file} with `ctd build-engine`",
            path=plan_path,
        )


def current_environment(trt: Any = None, cuda_api: Any = None, device: int = 0) -> EngineEnvironment:
    """This machine's TensorRT version and GPU facts (imports tensorrt and a CUDA binding)."""
    trt = trt if trt is not None else import_tensorrt()
    api = cuda_api if cuda_api is not None else load_cuda_api()
    return EngineEnvironment(tensorrt_version=str(trt.__version__), gpu=api.gpu_facts(device))


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
        api = load_cuda_api(self.cuda)
        check_engine_compatible(manifest, current_environment(trt, api, self.device), self.path)
        data = self.path.read_bytes()
        if self.verify_plan and hashlib.sha256(data).hexdigest() != manifest.plan_sha256:
            raise CtdError(
                f"the plan does not match its manifest {manifest_path(self.path).name} (sha256 differs): "
                "it was replaced or damaged; rebuild it with `ctd build-engine`",
                path=self.path,
            )
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise CtdError("TensorRT could not deserialise the engine (see its log above)", path=self.path)
        context = engine.create_execution_context()
        if context is None:
            raise CtdError("TensorRT could not create an execution context (out of GPU memory?)", path=self.path)
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(name)
        if sorted(inputs) != sorted(INPUT_NAMES):
            raise CtdError(f"engine inputs are {inputs}, expected {list(INPUT_NAMES)} (a fused ctd graph)", path=self.path)
        missing = [o for o in ("landmarks", "scores") if o not in outputs]
        if missing:
            raise CtdError(f"engine has no output {missing[0]!r} (outputs: {outputs})", path=self.path)
        self._trt, self._api, self._runtime, self._engine, self._context = trt, api, runtime, engine, context
        self._inputs, self._outputs = inputs, outputs
        self._stream = api.stream_create()
        self._buffers = {name: DeviceBuffer(api) for name in inputs + outputs}
        self.manifest = manifest
        return meta

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
        for buf in self._buffers.values():
            buf.free()
        self._buffers = {}
        if self._stream is not None and self._api is not None:
            self._api.stream_destroy(self._stream)
        self._stream = None
        self._context = self._engine = self._runtime = None
