"""The TensorRT backend and its CUDA layer without a GPU: manifest checks at open, the
missing-tensorrt message, cuda-python's (err, value) checking, buffers, the run wiring (shapes,
dtypes, tensor addresses, copies, profile limits) against fake TensorRT and CUDA that keep
"device memory" in a dict, and the release of everything open acquires (pycuda's context popped
and released once, buffers freed, stream destroyed), also when open fails halfway.
With TensorRT: tests/runtime/test_engine_build.py."""

from __future__ import annotations

import enum
import hashlib
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from ctd_runtime.backends import cuda_buffers as cb
from ctd_runtime.backends import tensorrt_backend as tb
from ctd_runtime.artifacts import manifest_path
from ctd_runtime.backends.cuda_buffers import GpuFacts
from ctd_runtime.engine.environment import EngineEnvironment
from ctd_runtime.engine.manifest import EngineManifest
from ctd_runtime.errors import CtdError
from ctd_runtime.normalization import Normalization
from ctd_runtime.model_meta import ModelMetadata
from ctd_runtime.schema import LandmarkSchema

GPU = GpuFacts("Orin", "8.7", "12.6", "12.6")
K = 3


def _meta_map():
    schema = LandmarkSchema("t", ("a", "b", "c"), (0, 1, 2), pfl_pair=(0, 1))
    import ctd_runtime

    return ModelMetadata(ctd_runtime.__version__, schema, 64, Normalization("BGR", (0, 0, 0), (1, 1, 1)), "argmax",
                         "fp16", "fused", 4, 1.5, "run", ("landmarks", "scores")).to_map()


def _write_plan(tmp_path, plan=b"PLAN", trt_version="10.3.0", gpu=GPU):
    path = tmp_path / "model.plan"
    path.write_bytes(plan)
    manifest = EngineManifest(
        plan_file="model.plan", plan_sha256=hashlib.sha256(plan).hexdigest(), onnx_file="model.fp16.onnx",
        onnx_sha256="0" * 64, precision="fp16", build_mode="strongly-typed", builder_flags=[],
        environment=EngineEnvironment(trt_version, gpu),
        profile={"image": {"min": [1, 8, 8, 3], "opt": [1, 64, 64, 3], "max": [2, 200, 200, 3]},
                 "crop": {"min": [1, 2, 3], "opt": [1, 2, 3], "max": [2, 2, 3]}},
        workspace_mb=64, timing_cache=None, build_seconds=1.0, built_at="2026-01-01T00:00:00+00:00",
        ctd_version="0.1.0", ctd_metadata=_meta_map())
    manifest_path(path).write_text(json.dumps(manifest.to_dict()))
    return path


# ---------------------------------------------------------------------------- fake CUDA + TensorRT


class FakeCuda:
    """Device memory is a dict ptr -> bytearray."""

    name = "fake"

    def __init__(self, stream_fails: bool = False):
        self.mem: dict[int, bytearray] = {}
        self.next = 4096
        self.freed: list[int] = []
        self.streams: list[str] = []
        self.destroyed: list[str] = []
        self.closed = 0
        self.stream_fails = stream_fails

    def malloc(self, nbytes):
        ptr, self.next = self.next, self.next + nbytes + 256
        self.mem[ptr] = bytearray(nbytes)
        return ptr

    def free(self, ptr):
        self.freed.append(ptr)
        del self.mem[ptr]

    def memcpy_htod_async(self, dst, src, stream):
        self.mem[dst][: src.nbytes] = src.tobytes()

    def memcpy_dtoh_async(self, dst, src, stream):
        dst.reshape(-1).view(np.uint8)[:] = np.frombuffer(bytes(self.mem[src][: dst.nbytes]), np.uint8)

    def stream_create(self):
        if self.stream_fails:
            raise CtdError("CUDA error in cudaStreamCreate: cudaErrorMemoryAllocation")
        self.streams.append("stream")
        return "stream"

    def stream_synchronize(self, stream):
        pass

    def stream_destroy(self, stream):
        self.destroyed.append(stream)

    def close(self):
        self.closed += 1

    def stream_handle(self, stream):
        return 7

    def gpu_facts(self, device=0):
        return GPU


class DataType(enum.Enum):
    UINT8 = np.uint8
    FLOAT = np.float32


def make_fake_trt(api: FakeCuda, version="10.3.0", names=("image", "crop", "landmarks", "scores")):
    """An 'engine' whose landmarks are the crop translation + k, scores the image mean."""

    class Engine:
        num_io_tensors = len(names)

        def get_tensor_name(self, i):
            return names[i]

        def get_tensor_mode(self, name):
            return "in" if name in ("image", "crop") else "out"

        def get_tensor_dtype(self, name):
            return DataType.UINT8 if name == "image" else DataType.FLOAT

        def create_execution_context(self):
            return Context()

    class Context:
        def __init__(self):
            self.shapes, self.addr = {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            n = self.shapes["image"][0]
            return (n, K, 2) if name == "landmarks" else (n, K)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            assert stream == 7
            n, h, w, _ = self.shapes["image"]
            img = np.frombuffer(bytes(api.mem[self.addr["image"]][: n * h * w * 3]), np.uint8).reshape(n, h, w, 3)
            crop = np.frombuffer(bytes(api.mem[self.addr["crop"]][: n * 24]), np.float32).reshape(n, 2, 3)
            lm = np.repeat(crop[:, None, :, 2], K, axis=1) + np.arange(K, dtype=np.float32)[None, :, None]
            sc = np.repeat(img.reshape(n, -1).mean(1, dtype=np.float32)[:, None], K, axis=1)
            api.mem[self.addr["landmarks"]][: lm.nbytes] = lm.astype(np.float32).tobytes()
            api.mem[self.addr["scores"]][: sc.nbytes] = sc.astype(np.float32).tobytes()
            return True

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine() if data == b"PLAN" else None

    return SimpleNamespace(
        __version__=version, Logger=type("Logger", (), {"WARNING": 1, "__init__": lambda self, level: None}),
        Runtime=Runtime,
        TensorIOMode=SimpleNamespace(INPUT="in"), nptype=lambda dt: dt.value,
    )


@pytest.fixture
def fakes(monkeypatch):
    api = FakeCuda()
    trt = make_fake_trt(api)
    monkeypatch.setattr(tb, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(tb, "load_cuda_api", lambda prefer=None: api)
    return api, trt


def test_run_wiring_against_fakes(tmp_path, fakes):
    api, _ = fakes
    plan = _write_plan(tmp_path)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (2, 40, 50, 3), dtype=np.uint8)
    crop = np.array([[[1, 0, 5], [0, 1, 6]], [[1, 0, 7], [0, 1, 8]]], np.float32)
    with tb.TensorRTBackend(plan) as be:
        assert be.metadata.precision == "fp16" and be.metadata.schema.name == "t"
        lm, sc = be.run(img, crop)
        assert lm.dtype == np.float32 and lm.shape == (2, K, 2)
        assert np.allclose(lm[1, 2], [7 + 2, 8 + 2]) and np.allclose(sc[0], img[0].mean(), rtol=1e-5)
        one_lm, one_sc = be.run(img[0], crop[0])  # single image: [K, 2], [K]
        assert one_lm.shape == (K, 2) and np.allclose(one_lm, lm[0])
        with pytest.raises(CtdError, match=r"image of shape \[1, 300, 50, 3\] is outside the engine's optimisation profile"):
            be.run(np.zeros((300, 50, 3), np.uint8), crop[0])
        allocated = sorted(api.mem)
        assert api.closed == 0
    assert sorted(api.freed) == allocated and api.destroyed == ["stream"] and api.closed == 1
    be.close()  # a second close releases nothing twice
    assert api.destroyed == ["stream"] and api.closed == 1 and sorted(api.freed) == allocated


def test_open_checks_the_manifest_against_this_machine(tmp_path, fakes):
    plan = _write_plan(tmp_path, trt_version="10.12.0")
    with pytest.raises(CtdError, match="TensorRT 10.12.0, this machine has TensorRT 10.3.0"):
        tb.TensorRTBackend(plan).open()
    plan = _write_plan(tmp_path, gpu=GpuFacts("NVIDIA A100", "8.0", "12.6", "12.6"))
    with pytest.raises(CtdError, match=r"built for NVIDIA A100 \(compute capability 8.0\), this machine has Orin"):
        tb.TensorRTBackend(plan).open()


def test_open_refuses_a_replaced_plan(tmp_path, fakes):
    plan = _write_plan(tmp_path)
    plan.write_bytes(b"OTHER")
    with pytest.raises(CtdError, match="does not match its manifest"):
        tb.TensorRTBackend(plan).open()


def test_open_without_manifest_or_tensorrt(tmp_path, monkeypatch):
    plan = tmp_path / "model.plan"
    with pytest.raises(CtdError, match="engine plan not found"):
        tb.TensorRTBackend(plan).open()
    plan.write_bytes(b"PLAN")
    with pytest.raises(CtdError, match="no engine manifest"):
        tb.TensorRTBackend(plan).open()
    plan = _write_plan(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(CtdError, match=r"TensorRT is not installed: pip install 'ctd\[tensorrt\]'"):
        tb.TensorRTBackend(plan).open()


def _failing_open(tmp_path, monkeypatch, *, plan=b"PLAN", trt_version="10.3.0", names=None, stream_fails=False):
    """(api, backend) after an open that failed with a CtdError."""
    api = FakeCuda(stream_fails=stream_fails)
    trt = make_fake_trt(api) if names is None else make_fake_trt(api, names=names)
    monkeypatch.setattr(tb, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(tb, "load_cuda_api", lambda prefer=None: api)
    be = tb.TensorRTBackend(_write_plan(tmp_path, plan=plan, trt_version=trt_version))
    with pytest.raises(CtdError):
        be.open()
    return api, be


@pytest.mark.parametrize(
    "case",
    [
        dict(trt_version="10.12.0"),  # built for another TensorRT
        dict(plan=b"BROKEN"),  # TensorRT cannot deserialise it
        dict(names=("image", "landmarks", "scores")),  # not a fused ctd graph
        dict(stream_fails=True),  # CUDA fails at the last step
    ],
)
def test_open_failing_halfway_releases_the_cuda_binding_once(tmp_path, monkeypatch, case):
    api, be = _failing_open(tmp_path, monkeypatch, **case)
    assert api.closed == 1 and api.mem == {} and api.destroyed == api.streams
    assert not be.is_open and be._api is None and be._engine is None
    be.close()
    assert api.closed == 1


# ---------------------------------------------------------------------------- cuda layer


class FakeErr(enum.Enum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2


def fake_cudart():
    return SimpleNamespace(
        cudaError_t=FakeErr,
        cudaGetErrorString=lambda err: (FakeErr.cudaSuccess, b"out of memory"),
        cudaMalloc=lambda n: (FakeErr.cudaErrorMemoryAllocation, 0) if n > 100 else (FakeErr.cudaSuccess, 1234),
        cudaFree=lambda p: (FakeErr.cudaSuccess,),
        cudaRuntimeGetVersion=lambda: (FakeErr.cudaSuccess, 12060),
        cudaDriverGetVersion=lambda: (FakeErr.cudaSuccess, 12080),
        cudaGetDeviceProperties=lambda d: (FakeErr.cudaSuccess, SimpleNamespace(name=b"Orin\0\0", major=8, minor=7)),
    )


def test_cuda_python_error_tuples():
    api = cb.CudaPythonApi(fake_cudart())
    assert api.malloc(10) == 1234
    with pytest.raises(CtdError, match="CUDA error in cudaMalloc: cudaErrorMemoryAllocation: out of memory"):
        api.malloc(1000)
    assert api.check((FakeErr.cudaSuccess,), "x") is None
    assert api.check((FakeErr.cudaSuccess, 1, 2), "x") == (1, 2)
    assert api.gpu_facts() == GpuFacts("Orin", "8.7", "12.6", "12.8")
    assert api.stream_handle(SimpleNamespace(getPtr=lambda: 99)) == 99


def test_device_buffer_grows_and_frees():
    api = FakeCuda()
    with cb.DeviceBuffer(api) as buf:
        p1 = buf.ensure(100)
        assert buf.ensure(50) == p1 and buf.nbytes == 100
        p2 = buf.ensure(500)
        assert p2 != p1 and api.freed == [p1]
    assert api.freed == [p1, p2] and buf.ptr == 0


def test_load_cuda_api_without_bindings(monkeypatch):
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(CtdError, match="no CUDA Python binding found.*ctd\\[tensorrt\\]"):
        cb.load_cuda_api()
    with pytest.raises(CtdError, match="unknown CUDA binding"):
        cb.load_cuda_api("cupy")


def test_cuda_version_string():
    assert cb.cuda_version_string(12060) == "12.6" and cb.cuda_version_string(11080) == "11.8"


# ---------------------------------------------------------------------------- releasing the binding


def fake_pycuda(log: list, push_fails: bool = False):
    """pycuda.driver as PyCudaApi uses it; every acquire and release lands in `log`."""

    class Error(Exception):
        pass

    class Context:
        def push(self):
            log.append("push")
            if push_fails:
                raise Error("cuCtxPushCurrent failed: invalid device context")

        def pop(self):  # pycuda: a static method popping the current context
            log.append("pop")

        def detach(self):
            log.append("detach")

    class Device:
        def __init__(self, n):
            self.n = n

        def retain_primary_context(self):
            log.append("retain")
            return Context()

        def compute_capability(self):
            return (8, 7)

        def name(self):
            return "Orin"

    class Alloc:
        def __init__(self, ptr):
            self.ptr = ptr

        def __int__(self):
            return self.ptr

        def free(self):
            log.append(("free", self.ptr))

    ptrs = iter(range(1000, 10**6, 100))
    return SimpleNamespace(
        Error=Error, init=lambda: log.append("init"), Device=Device, mem_alloc=lambda n: Alloc(next(ptrs)),
        Stream=lambda: SimpleNamespace(handle=5, synchronize=lambda: None),
        get_version=lambda: (12, 6, 0), get_driver_version=lambda: 12080,
    )


def test_pycuda_close_frees_pops_and_releases_once():
    log: list = []
    api = cb.PyCudaApi(driver=fake_pycuda(log))
    assert log == ["init", "retain", "push"]
    p1, p2 = api.malloc(10), api.malloc(20)
    api.free(p1)
    api.close()
    assert log == ["init", "retain", "push", ("free", p1), ("free", p2), "pop", "detach"]
    api.close()
    assert log.count("pop") == 1 and log.count("detach") == 1


def test_pycuda_failed_push_releases_the_retained_context():
    log: list = []
    with pytest.raises(CtdError, match="CUDA error in Context.push: cuCtxPushCurrent failed"):
        cb.PyCudaApi(driver=fake_pycuda(log, push_fails=True))
    assert log == ["init", "retain", "push", "detach"]


def test_cuda_python_close_holds_nothing():
    with cb.CudaPythonApi(fake_cudart()) as api:
        assert api.malloc(10) == 1234
    api.close()  # no-op, twice as well


@pytest.mark.parametrize("opens", [True, False])
def test_backend_on_pycuda_pops_the_context_exactly_once(tmp_path, monkeypatch, opens):
    log: list = []
    trt = make_fake_trt(FakeCuda())
    monkeypatch.setattr(tb, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(tb, "load_cuda_api", lambda prefer=None: cb.PyCudaApi(driver=fake_pycuda(log)))
    be = tb.TensorRTBackend(_write_plan(tmp_path, trt_version="10.3.0" if opens else "10.8.0"))
    if opens:
        with be:
            assert be.is_open and log.count("pop") == 0
    else:
        with pytest.raises(CtdError, match="TensorRT 10.8.0, this machine has TensorRT 10.3.0"):
            be.open()
    be.close()
    assert log.count("push") == log.count("pop") == log.count("detach") == 1


def test_current_environment_closes_the_binding_it_loaded(monkeypatch):
    from ctd_runtime.engine import environment

    log: list = []
    monkeypatch.setattr(environment, "load_cuda_api", lambda: cb.PyCudaApi(driver=fake_pycuda(log)))
    env = environment.current_environment(SimpleNamespace(__version__="10.3.0.26"))
    assert env == EngineEnvironment("10.3.0.26", GpuFacts("Orin", "8.7", "12.6", "12.8"))
    assert log[-2:] == ["pop", "detach"]
    api = FakeCuda()
    environment.current_environment(SimpleNamespace(__version__="10.3.0.26"), api)
    assert api.closed == 0  # the caller's binding stays open
