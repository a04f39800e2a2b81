"""Engine manifests without TensorRT: creation from (fake) environment facts, atomic writing,
the sha256 checks of plan and ONNX, and the compatibility messages."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest

from ctd_runtime.artifacts import manifest_path
from ctd_runtime.backends.cuda_buffers import GpuFacts
from ctd_runtime.engine import manifest as em
from ctd_runtime.engine.environment import EngineEnvironment
from ctd_runtime.errors import CtdError

ORIN = EngineEnvironment("10.3.0.30", GpuFacts("Orin", "8.7", "12.6", "12.6"))


def _meta_map():
    return {"ctd.precision": "fp16", "ctd.decode": "dark", "ctd.run_id": "r1", "other.key": "x"}


def _manifest(tmp_path, env=ORIN, plan_bytes=b"engine-bytes"):
    onnx_path = tmp_path / "model.fp16.onnx"
    if not onnx_path.exists():
        onnx_path.write_bytes(b"onnx-bytes")
    profile = {"image": {"min": [1, 32, 32, 3], "opt": [1, 1080, 1440, 3], "max": [4, 4096, 4096, 3]},
               "crop": {"min": [1, 2, 3], "opt": [1, 2, 3], "max": [4, 2, 3]}}
    return em.make_manifest(
        plan_path=tmp_path / "model.plan", plan_bytes=plan_bytes, onnx_path=onnx_path, ctd_metadata=_meta_map(),
        precision="fp16", strongly_typed=True, builder_flags=[], environment=env, profile=profile,
        workspace_mb=1024, timing_cache=None, build_seconds=12.3456,
        built_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), notes=["why"],
    )


def test_manifest_from_fake_facts_round_trips(tmp_path):
    m = _manifest(tmp_path)
    assert m.plan_file == "model.plan" and m.onnx_file == "model.fp16.onnx"
    assert m.plan_sha256 == hashlib.sha256(b"engine-bytes").hexdigest()
    assert m.onnx_sha256 == hashlib.sha256(b"onnx-bytes").hexdigest()
    assert m.build_mode == "strongly-typed" and m.build_seconds == 12.346
    assert m.built_at == "2026-01-02T03:04:05+00:00"
    assert m.ctd_metadata == {"ctd.precision": "fp16", "ctd.decode": "dark", "ctd.run_id": "r1"}
    d = m.to_dict()
    assert d["environment"] == {"tensorrt_version": "10.3.0.30", "gpu_name": "Orin", "compute_capability": "8.7",
                                "cuda_runtime_version": "12.6", "cuda_driver_version": "12.6"}
    assert em.EngineManifest.from_dict(json.loads(json.dumps(d))) == m


def test_write_engine_writes_plan_and_manifest(tmp_path):
    m = _manifest(tmp_path)
    plan, mpath = em.write_engine(tmp_path / "model.plan", b"engine-bytes", m)
    assert plan.read_bytes() == b"engine-bytes" and mpath == tmp_path / "model.plan.json"
    assert em.read_manifest(plan) == m
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.fp16.onnx", "model.plan", "model.plan.json"]
    with pytest.raises(ValueError):
        em.write_engine(tmp_path / "model.plan", b"other bytes", m)


def test_onnx_sha256_check(tmp_path):
    m = _manifest(tmp_path)
    em.check_onnx_matches(m, tmp_path / "model.fp16.onnx")
    (tmp_path / "model.fp16.onnx").write_bytes(b"retrained")
    with pytest.raises(CtdError, match="another ONNX file.*model.fp16.onnx.*rebuild"):
        em.check_onnx_matches(m, tmp_path / "model.fp16.onnx", tmp_path / "model.plan")


def test_engine_is_current(tmp_path):
    m = _manifest(tmp_path)
    plan = tmp_path / "model.plan"
    onnx_path = tmp_path / "model.fp16.onnx"
    assert not em.engine_is_current(plan, onnx_path, ORIN)
    em.write_engine(plan, b"engine-bytes", m)
    assert em.engine_is_current(plan, onnx_path, ORIN)
    other = EngineEnvironment("10.12.0.36", ORIN.gpu)
    assert not em.engine_is_current(plan, onnx_path, other)
    plan.write_bytes(b"tampered")
    assert not em.engine_is_current(plan, onnx_path, ORIN)


@pytest.mark.parametrize(
    "current, words",
    [
        (EngineEnvironment("10.12.0.36", ORIN.gpu), ["TensorRT 10.3.0.30", "TensorRT 10.12.0.36"]),
        (EngineEnvironment("10.3.0.30", GpuFacts("NVIDIA GeForce RTX 3060", "8.6", "12.6", "12.8")),
         ["Orin (compute capability 8.7)", "NVIDIA GeForce RTX 3060 (compute capability 8.6)"]),
        (EngineEnvironment("10.3.0.30", GpuFacts("Jetson AGX Orin", "8.7", "12.6", "12.6")),
         ["built for Orin", "has Jetson AGX Orin"]),
    ],
)
def test_compatibility_messages(tmp_path, current, words):
    m = _manifest(tmp_path)
    with pytest.raises(CtdError) as e:
        em.check_engine_compatible(m, current, tmp_path / "model.plan")
    msg = str(e.value)
    assert str(tmp_path / "model.plan") in msg and "ctd build-engine" in msg and "model.fp16.onnx" in msg
    for w in words:
        assert w in msg


def test_same_machine_is_compatible(tmp_path):
    m = _manifest(tmp_path)
    newer_driver = EngineEnvironment("10.3.0.30", GpuFacts("Orin", "8.7", "12.6", "12.8"))
    em.check_engine_compatible(m, newer_driver, tmp_path / "model.plan")  # CUDA versions are not compared
    em.check_engine_compatible(m, EngineEnvironment("10.3.0", ORIN.gpu), tmp_path / "model.plan")


def test_missing_or_bad_manifest(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"x")
    with pytest.raises(CtdError, match="no engine manifest model.plan.json.*ctd build-engine"):
        em.read_manifest(plan)
    manifest_path(plan).write_text("{not json")
    with pytest.raises(CtdError, match="model.plan.json.*cannot read"):
        em.read_manifest(plan)
    manifest_path(plan).write_text(json.dumps({"plan_file": "model.plan"}))
    with pytest.raises(CtdError, match="not a valid engine manifest"):
        em.read_manifest(plan)
    d = _manifest(tmp_path).to_dict()
    d["format"] = 99
    manifest_path(plan).write_text(json.dumps(d))
    with pytest.raises(CtdError, match="newer than this ctd"):
        em.read_manifest(plan)
