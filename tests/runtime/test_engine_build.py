"""The TensorRT build without TensorRT: the version-dependent build plan (pure), profiles, file
naming, the missing-tensorrt error, the argument checks of `ctd build-engine` before TensorRT is
imported, and the whole `build_engine` flow against a fake `tensorrt` module that records the API
calls (the names the fake offers are checked against the real bindings in test_tensorrt_api.py).
With TensorRT (marker `tensorrt`): build, run, compare with ONNX Runtime."""

from __future__ import annotations

import importlib.util
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from ctd_export import fp16, int8
from ctd_runtime.artifacts import manifest_path, onnx_variant, plan_path
from ctd_runtime.backends.cuda_buffers import GpuFacts
from ctd_runtime.engine import build as tb
from ctd_runtime.engine.manifest import read_manifest
from ctd_runtime.errors import CtdError
from tests.export._tiny_fused import export_fused, sample_set, trained_predictor


@pytest.mark.parametrize(
    "version, onnx_prec, target, expect",
    [
        ("10.0.1.6", "fp32", None, ("fp16", "fp32", False, ("FP16",), ())),
        ("10.11.0.33", "fp32", None, ("fp16", "fp32", False, ("FP16",), ())),
        ("10.12.0.36", "fp32", None, ("fp16", "fp16", True, (), ("STRONGLY_TYPED",))),
        ("11.0.0.1", "fp32", None, ("fp16", "fp16", True, (), ())),
        ("10.3.0", "fp16", None, ("fp16", "fp16", True, (), ("STRONGLY_TYPED",))),
        ("10.14.1", "fp16", None, ("fp16", "fp16", True, (), ("STRONGLY_TYPED",))),
        ("10.8.0", "int8", None, ("int8", "int8", False, ("INT8", "FP16"), ())),
        ("10.12.0", "int8", None, ("int8", "int8", True, (), ("STRONGLY_TYPED",))),
        ("11.4.0", "int8", "int8", ("int8", "int8", True, (), ())),
        ("10.8.0", "fp32", "fp32", ("fp32", "fp32", True, (), ("STRONGLY_TYPED",))),
        ("10.13.0", "fp32", "fp32", ("fp32", "fp32", True, (), ("STRONGLY_TYPED",))),
        ("11.4.0.106", "fp32", "fp32", ("fp32", "fp32", True, (), ())),
    ],
)
def test_build_plan_is_a_function_of_the_version(version, onnx_prec, target, expect):
    p = tb.choose_build_plan(version, onnx_prec, target)
    assert (p.engine_precision, p.onnx_precision, p.strongly_typed, p.builder_flags, p.network_flags) == expect
    assert p.reason


@pytest.mark.parametrize(
    "version, onnx_prec, target, match",
    [
        ("8.6.1", "fp16", None, "too old"),
        ("abc", "fp16", None, "cannot read the TensorRT version"),
        ("10.12", "fp32", "int8", "Q/DQ model"),
        ("10.12", "int8", "fp16", "not from the INT8 model"),
        ("10.12", "fp16", "fp32", "FP32 engine is built from the FP32 model"),
        ("10.12", "fp16", "bf16", "unknown engine precision"),
        ("11.4", "fp16", "fp8", "unknown engine precision 'fp8'"),
    ],
)
def test_build_plan_refusals(version, onnx_prec, target, match):
    with pytest.raises(CtdError, match=match):
        tb.choose_build_plan(version, onnx_prec, target)


def test_file_names(tmp_path):
    assert onnx_variant(tmp_path / "model.onnx", "fp16") == tmp_path / "model.fp16.onnx"
    assert onnx_variant(tmp_path / "model.fp16.onnx", "fp32") == tmp_path / "model.onnx"
    assert onnx_variant(tmp_path / "a.int8.onnx", "fp16") == tmp_path / "a.fp16.onnx"
    assert plan_path(tmp_path / "model.onnx") == tmp_path / "model.plan"
    assert plan_path(tmp_path / "model.fp16.onnx") == tmp_path / "model.plan"
    assert plan_path(tmp_path / "model.int8.onnx") == tmp_path / "model.int8.plan"


def test_shape_profile():
    s = tb.ShapeProfile(1, 2, 8, 64, 480, 2000, 64, 640, 3000).shapes()
    assert s["image"] == {"min": [1, 64, 64, 3], "opt": [2, 480, 640, 3], "max": [8, 2000, 3000, 3]}
    assert s["crop"] == {"min": [1, 2, 3], "opt": [2, 2, 3], "max": [8, 2, 3]}
    with pytest.raises(CtdError, match="profile height"):
        tb.ShapeProfile(min_height=500, opt_height=400).check()
    with pytest.raises(CtdError, match="profile batch"):
        tb.ShapeProfile(min_batch=0).check()


def test_missing_tensorrt_says_how_to_install_after_the_arguments(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    path = export_fused(trained_predictor(), tmp_path / "model.onnx")
    with pytest.raises(CtdError, match=r"TensorRT is not installed: pip install 'ctd\[tensorrt\]' on a machine with an NVIDIA GPU"):
        tb.build_engine(path)
    with pytest.raises(CtdError, match="none.onnx: ONNX file not found"):
        tb.build_engine(tmp_path / "none.onnx")
    with pytest.raises(CtdError, match="unknown engine precision 'fp8'"):
        tb.build_engine(path, precision="fp8")
    with pytest.raises(CtdError, match="workspace must be positive"):
        tb.build_engine(path, workspace_mb=0)
    with pytest.raises(CtdError, match="profile width"):
        tb.build_engine(path, profile=tb.ShapeProfile(max_width=16))


# ---------------------------------------------------------------------------- a fake tensorrt


class _Enum:
    def __init__(self, **values):
        self.__dict__.update(values)


def fake_trt(version: str, parse_ok: bool = True, calls: list | None = None):
    calls = calls if calls is not None else []

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.num_inputs = 2

        def get_input(self, i):
            return SimpleNamespace(name=("image", "crop")[i])

    class ParserError:
        def desc(self):
            return "unsupported GridSample mode"

        def node_name(self):
            return "/GridSample"

        def node_operator(self):
            return "GridSample"

        def node(self):
            return 42

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = 0 if parse_ok else 1

        def parse_from_file(self, path):
            calls.append(("parse", path))
            return parse_ok

        def get_error(self, i):
            return ParserError()

    class Cache:
        def serialize(self):
            return b"timing-cache"

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls.append(("pool", pool, size))

        def set_flag(self, flag):
            calls.append(("flag", flag))

        def add_optimization_profile(self, p):
            calls.append(("profile", dict(p.shapes)))

        def create_timing_cache(self, data):
            calls.append(("cache_in", bytes(data)))
            return Cache()

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_cache", ignore_mismatch))

        def get_timing_cache(self):
            return Cache()

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (list(lo), list(opt), list(hi))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls.append(("network", flags))
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"PLAN:" + str(network.flags).encode()

    weak_flags = {} if int(version.split(".")[0]) >= 11 else {"FP16": "FP16", "INT8": "INT8"}  # gone in 11
    return SimpleNamespace(
        __version__=version,
        Logger=type("Logger", (), {"WARNING": 1, "VERBOSE": 0, "__init__": lambda self, level: None}),
        Builder=Builder, OnnxParser=OnnxParser,
        NetworkDefinitionCreationFlag=_Enum(STRONGLY_TYPED=1),
        BuilderFlag=_Enum(TF32="TF32", **weak_flags),
        MemoryPoolType=_Enum(WORKSPACE="WORKSPACE"),
    ), calls


class FakeCuda:
    name = "fake"

    def gpu_facts(self, device=0):
        return GpuFacts("Orin", "8.7", "12.6", "12.6")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("trt")
    src = export_fused(trained_predictor(), root / "model.onnx")
    return root, src


def test_build_engine_strongly_typed_on_10_12(export_dir, tmp_path):
    root, src = export_dir
    fp16.convert_fp16(src)
    trt, calls = fake_trt("10.12.0.36")
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old-cache")
    logs = []
    m = tb.build_engine(src, tmp_path / "model.plan", tb.ShapeProfile(max_batch=2), workspace_mb=512,
                        timing_cache_path=cache, trt=trt, cuda_api=FakeCuda(), log=logs.append)
    assert ("parse", str(root / "model.fp16.onnx")) in calls  # the FP16 sibling
    assert ("network", 1 << 1) in calls and not [c for c in calls if c[0] == "flag"]
    assert ("pool", "WORKSPACE", 512 << 20) in calls
    assert ("cache_in", b"old-cache") in calls and ("set_cache", False) in calls
    prof = next(c[1] for c in calls if c[0] == "profile")
    assert prof["image"] == ([1, 32, 32, 3], [1, 1080, 1440, 3], [2, 4096, 4096, 3])
    assert cache.read_bytes() == b"timing-cache"
    assert (tmp_path / "model.plan").read_bytes() == b"PLAN:2"
    assert m == read_manifest(tmp_path / "model.plan")
    assert (m.precision, m.build_mode, m.builder_flags, m.onnx_file) == ("fp16", "strongly-typed", [], "model.fp16.onnx")
    assert m.ctd_metadata["ctd.precision"] == "fp16" and m.environment.gpu.gpu_name == "Orin"
    assert m.profile["crop"]["max"] == [2, 2, 3] and m.workspace_mb == 512
    assert any("model.fp16.onnx" in line for line in logs)


def test_build_engine_on_11_is_strongly_typed_without_the_deprecated_flag(export_dir, tmp_path):
    root, src = export_dir
    fp16.convert_fp16(src)
    trt, calls = fake_trt("11.4.0.106")
    m = tb.build_engine(src, tmp_path / "model.plan", trt=trt, cuda_api=FakeCuda())
    assert ("parse", str(root / "model.fp16.onnx")) in calls
    assert ("network", 0) in calls and not [c for c in calls if c[0] == "flag"]
    assert (m.precision, m.build_mode, m.builder_flags) == ("fp16", "strongly-typed", [])
    assert m.environment.tensorrt_version == "11.4.0.106"
    assert "ctd.fp16" in m.ctd_metadata  # the conversion details travel into the manifest


def test_build_engine_fp16_flag_before_10_12(export_dir, tmp_path):
    _, src = export_dir
    trt, calls = fake_trt("10.8.0.43")
    m = tb.build_engine(src, tmp_path / "m.plan", trt=trt, cuda_api=FakeCuda())
    assert ("network", 0) in calls and ("flag", "FP16") in calls
    assert (m.build_mode, m.builder_flags, m.onnx_file) == ("weakly-typed", ["FP16"], "model.onnx")
    assert manifest_path(tmp_path / "m.plan").is_file() and m.timing_cache is None


def test_build_engine_int8_explicit_quantisation(export_dir, tmp_path):
    _, src = export_dir
    q = int8.quantize_int8(src, sample_set(6, seed=3)[0], tmp_path / "model.int8.onnx")
    trt, calls = fake_trt("10.4.0")
    m = tb.build_engine(q.path, trt=trt, cuda_api=FakeCuda())
    assert ("flag", "INT8") in calls and ("flag", "FP16") in calls
    assert m.plan_file == "model.int8.plan" and m.precision == "int8"


def test_onnx_runtime_only_int8_is_refused_before_tensorrt_parses_it(export_dir, tmp_path):
    """A uint8-activation model (ctd export --int8-activations uint8) is for ONNX Runtime CPU only."""
    _, src = export_dir
    cfg = int8.Int8Config(activation_type="uint8", tensorrt_compatible=False)
    q = int8.quantize_int8(src, sample_set(6, seed=3)[0], tmp_path / "model.int8.onnx", cfg)
    trt, calls = fake_trt("10.12.0")
    with pytest.raises(CtdError, match="uint8 activations for ONNX Runtime only.*--int8-activations int8") as e:
        tb.build_engine(q.path, trt=trt, cuda_api=FakeCuda())
    assert str(q.path) in str(e.value) and ("network", 0) not in calls
    assert not (tmp_path / "model.int8.plan").exists()


def test_parser_errors_name_the_nodes(export_dir, tmp_path):
    _, src = export_dir
    trt, _ = fake_trt("10.8.0", parse_ok=False)
    with pytest.raises(CtdError, match=r"cannot parse the ONNX graph:\n  /GridSample \(GridSample\): unsupported"):
        tb.build_engine(src, tmp_path / "x.plan", trt=trt, cuda_api=FakeCuda())
    assert not (tmp_path / "x.plan").exists()


def test_missing_fp16_sibling_is_explained(tmp_path):
    src = export_fused(trained_predictor(), tmp_path / "model.onnx")
    trt, _ = fake_trt("10.12.0")
    with pytest.raises(CtdError, match="model.fp16.onnx is not there"):
        tb.build_engine(src, trt=trt, cuda_api=FakeCuda())


# ---------------------------------------------------------------------------- real TensorRT

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="tensorrt is not installed")
@pytest.mark.parametrize("variant", ["fp16", "int8"])
def test_build_run_and_compare_with_onnxruntime(tmp_path, variant):
    from ctd_runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from ctd_runtime.backends.tensorrt_backend import TensorRTBackend

    src = export_fused(trained_predictor(), tmp_path / "model.onnx", decode="dark")
    samples, _ = sample_set(8, seed=5)
    if variant == "fp16":
        onnx_path = fp16.convert_fp16(src).path
    else:
        onnx_path = int8.quantize_int8(src, sample_set(16, seed=9)[0]).path
    profile = tb.ShapeProfile(1, 1, 2, 32, 128, 256, 32, 128, 256)
    m = tb.build_engine(onnx_path, profile=profile, workspace_mb=256, timing_cache_path=tmp_path / "t.cache")
    with OnnxRuntimeBackend(src) as ref_backend:
        ref = np.stack([ref_backend.run(img, crop)[0][0] for img, crop in samples])
    with TensorRTBackend(tmp_path / m.plan_file) as be:
        assert be.metadata.precision == variant
        lm = np.stack([be.run(img, crop)[0][0] for img, crop in samples])
        batch = be.run(np.concatenate([samples[0][0]] * 2), np.concatenate([samples[0][1]] * 2))
    px = np.linalg.norm(lm.astype(np.float64) - ref, axis=-1)
    assert np.median(px) < (0.1 if variant == "fp16" else 0.5)
    assert np.allclose(batch[0][0], batch[0][1])


def test_build_engine_command_without_tensorrt(monkeypatch, tmp_path):
    import typer
    from typer.testing import CliRunner

    from ctd_runtime.cli import engine

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    app = typer.Typer()
    engine.register(app)

    @app.callback()
    def _root() -> None:
        """root"""

    path = export_fused(trained_predictor(), tmp_path / "model.onnx")
    runner = CliRunner()
    res = runner.invoke(app, ["build-engine", str(path), "--max-height", "2000"])
    assert isinstance(res.exception, CtdError) and "TensorRT is not installed" in str(res.exception)
    # argument errors come first, named as such, not as the missing TensorRT
    for args, message in [
        ([str(path), "--min-height", "900", "--opt-height", "800"], "profile height"),
        ([str(path), "--precision", "fp8"], "unknown engine precision 'fp8'"),
        ([str(tmp_path / "missing.onnx")], "missing.onnx: ONNX file not found"),
        ([str(tmp_path)], "ONNX path is not a file"),
    ]:
        res = runner.invoke(app, ["build-engine", *args])
        assert isinstance(res.exception, CtdError) and message in str(res.exception), (args, res.exception)
    bad = tmp_path / "junk.onnx"
    bad.write_bytes(b"not onnx")
    res = runner.invoke(app, ["build-engine", str(bad)])
    assert isinstance(res.exception, CtdError) and "cannot load the ONNX model" in str(res.exception)
    res = runner.invoke(app, ["build-engine", "--help"])
    assert res.exit_code == 0 and "--timing-cache" in res.output and "--workspace-mb" in res.output
