"""The TensorRT names our code uses, checked against the real bindings rather than our fakes.

The bindings wheel of each version below (`tensorrt-cu12-bindings`, ~1.2 MB, `pip download
--no-deps`, cached in ~/.cache/ctd-test/tensorrt-wheels) is read without importing it
(tests/runtime/_trt_bindings.py); the uses come from our source by AST
(tests/runtime/_trt_usage.py). Checked:

- every name the engine build and the backend use on every path exists in every version ctd
  supports (10.0 to 11.x), enum members as members of their own enum;
- each version branch of the build plan uses only flags its version has: the FP16/INT8 builder
  flags below 10.12, `NetworkDefinitionCreationFlag.STRONGLY_TYPED` on 10.x, nothing on 11
  (whose `BuilderFlag` has no FP16 or INT8 and where STRONGLY_TYPED is deprecated and ignored);
- the fakes the other tests use offer only methods the real API has.

Skipped, not failed, when the wheels cannot be downloaded (offline).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from ctd_runtime.artifacts import ONNX_PRECISIONS
from ctd_runtime.engine.build import choose_build_plan
from ctd_runtime.errors import CtdError
from tests.runtime._trt_bindings import Bindings, download_wheel, read_bindings
from tests.runtime._trt_usage import Use, collect_uses

pytestmark = pytest.mark.trt_api

REPO = Path(__file__).resolve().parents[2]
SOURCES = (REPO / "ctd_runtime" / "engine" / "build.py", REPO / "ctd_runtime" / "backends" / "tensorrt_backend.py")
# the oldest ctd supports, the last weakly typed, the first strongly typed 10.x, the newest
VERSIONS = ("10.0.1", "10.11.0.33", "10.12.0.36", "11.4.0.106")
NEWEST = VERSIONS[-1]


def _cache_dir() -> Path:
    if "CTD_TEST_CACHE" in os.environ:
        return Path(os.environ["CTD_TEST_CACHE"]) / "tensorrt-wheels"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ctd-test" / "tensorrt-wheels"


@pytest.fixture(scope="module")
def bindings() -> dict[str, Bindings]:
    out = {}
    for version in VERSIONS:
        wheel = download_wheel(version, _cache_dir())
        if wheel is None:
            pytest.skip(f"cannot download tensorrt-cu12-bindings=={version} (offline?)")
        out[version] = read_bindings(wheel)
        assert out[version].version == version
    return out


def unresolved(b: Bindings, use: Use) -> str | None:
    """The part of `use` that TensorRT `b` does not define, or None."""
    rest = use.chain
    if use.on_module:
        head = use.chain[0]
        if not b.has_module_attr(head):
            return f"tensorrt.{head}"
        if len(use.chain) >= 2:
            member = use.chain[1]
            if head in b.enums:
                known = b.enums[head]
            elif head == "Logger" and b.logger_severities:  # __init__.py copies the severities onto Logger
                known = b.enums["Severity"]
            else:
                known = b.identifiers
            if member not in known:
                return f"tensorrt.{head}.{member}"
        rest = use.chain[2:]
    missing = [name for name in rest if name not in b.identifiers]
    return ".".join(missing) or None


def our_uses() -> list[Use]:
    return [u for path in SOURCES for u in collect_uses(path)]


# ---------------------------------------------------------------------------- the reader


def test_the_reader_sees_the_api_change_between_10_and_11(bindings):
    old, new = bindings["10.11.0.33"], bindings[NEWEST]
    assert {"FP16", "INT8", "BF16", "TF32"} <= old.enum("BuilderFlag")
    assert "TF32" in new.enum("BuilderFlag") and not {"FP16", "INT8", "BF16"} & new.enum("BuilderFlag")
    assert {"EXPLICIT_BATCH", "STRONGLY_TYPED"} <= old.enum("NetworkDefinitionCreationFlag")
    assert new.enum("NetworkDefinitionCreationFlag") >= {"STRONGLY_TYPED"}
    assert "EXPLICIT_BATCH" not in new.enum("NetworkDefinitionCreationFlag")
    for b in bindings.values():
        assert b.enum("TensorIOMode") == {"NONE", "INPUT", "OUTPUT"}
        assert {"WARNING", "VERBOSE"} <= b.enum("Severity") and b.logger_severities
        assert {"INT8", "HALF", "FLOAT", "UINT8"} <= b.enum("DataType")  # INT8 lives in the tail of "UINT8"
        assert {"Builder", "Runtime", "OnnxParser", "execute_async_v3", "nptype", "__version__"} <= (
            b.identifiers | b.module_names)
        assert "execute_async_v2" not in b.identifiers and "num_bindings" not in b.identifiers  # gone in 10.0


def test_the_check_catches_a_name_of_the_wrong_version(bindings, tmp_path):
    src = tmp_path / "weak.py"
    src.write_text(
        "def build(trt):\n"
        "    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))\n"
        "    config = builder.create_builder_config()\n"
        "    config.set_flag(trt.BuilderFlag.FP16)\n"
        "    config.set_flag(trt.BuilderFlag.STRIP_PLAN)\n"
        "    builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))\n"
        "    return config.set_int8_calibrator_typo\n"
    )
    uses = collect_uses(src)
    by_version = {v: sorted(filter(None, (unresolved(bindings[v], u) for u in uses))) for v in ("10.11.0.33", NEWEST)}
    assert by_version["10.11.0.33"] == ["set_int8_calibrator_typo"]
    assert by_version[NEWEST] == ["set_int8_calibrator_typo", "tensorrt.BuilderFlag.FP16",
                                  "tensorrt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH"]


# ---------------------------------------------------------------------------- our code


def test_our_uses_are_collected():
    uses = our_uses()
    chains = {(u.on_module, u.chain) for u in uses}
    expected = {
        (True, ("Builder",)), (True, ("OnnxParser",)), (True, ("MemoryPoolType", "WORKSPACE")),
        (True, ("Logger", "WARNING")), (True, ("TensorIOMode", "INPUT")), (True, ("nptype",)),
        (False, ("create_network",)), (False, ("set_timing_cache",)), (False, ("get_input", "name")),
        (False, ("get_timing_cache", "serialize")), (False, ("node_operator",)), (False, ("execute_async_v3",)),
        (False, ("set_tensor_address",)), (False, ("deserialize_cuda_engine",)),
    }
    assert expected <= chains, sorted(expected - chains)
    assert len(chains) >= 40


@pytest.mark.parametrize("version", VERSIONS)
def test_every_name_we_use_exists_in_every_supported_version(bindings, version):
    b = bindings[version]
    missing = [f"{unresolved(b, u)}  <- {u}" for u in our_uses() if unresolved(b, u)]
    assert not missing, f"TensorRT {version} does not define:\n  " + "\n  ".join(missing)


def _plans(version: str):
    for onnx_precision in ONNX_PRECISIONS:
        for target in (None, *ONNX_PRECISIONS):
            try:
                yield onnx_precision, target, choose_build_plan(version, onnx_precision, target)
            except CtdError:
                continue  # a refused combination (an INT8 engine from an FP32 file) uses no API


@pytest.mark.parametrize("version", VERSIONS)
def test_each_build_branch_uses_only_the_flags_of_its_version(bindings, version):
    b = bindings[version]
    plans = list(_plans(version))
    assert len(plans) >= 4
    for onnx_precision, target, plan in plans:
        where = f"TensorRT {version}, {onnx_precision} ONNX -> {target or 'default'}"
        assert set(plan.builder_flags) <= b.enum("BuilderFlag"), where
        assert set(plan.network_flags) <= b.enum("NetworkDefinitionCreationFlag"), where
        assert plan.strongly_typed == (not plan.builder_flags), where


def test_weak_typing_below_10_12_and_never_on_11(bindings):
    weak = {(p.onnx_precision, p.builder_flags) for _, _, p in _plans("10.11.0.33") if not p.strongly_typed}
    assert weak == {("fp32", ("FP16",)), ("int8", ("INT8", "FP16"))}
    for version in ("10.12.0.36", "11.0.0.114", NEWEST):
        assert all(p.strongly_typed and not p.builder_flags for _, _, p in _plans(version)), version
    for _, _, p in _plans(NEWEST):  # strongly typed is all 11 knows; its STRONGLY_TYPED flag is ignored
        assert not {"FP16", "INT8"} & set(p.builder_flags) and p.network_flags == ()
    assert not {"FP16", "INT8"} & bindings[NEWEST].enum("BuilderFlag")


# ---------------------------------------------------------------------------- the fakes


def _fake_methods(path: Path, factory: str) -> set[str]:
    """Public method names of the classes a fake-TensorRT factory function defines."""
    tree = ast.parse(path.read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == factory)
    return {
        m.name for c in ast.walk(fn) if isinstance(c, ast.ClassDef)
        for m in c.body if isinstance(m, ast.FunctionDef) and not m.name.startswith("_")
    }


@pytest.mark.parametrize("test_file, factory", [("test_engine_build.py", "fake_trt"),
                                                ("test_tensorrt_backend.py", "make_fake_trt")])
def test_the_fakes_offer_only_real_methods(bindings, test_file, factory):
    methods = _fake_methods(Path(__file__).with_name(test_file), factory)
    assert len(methods) >= 5
    assert sorted(m for m in methods if m not in bindings[NEWEST].identifiers) == []
