"""Writing TensorRT engines with their manifests: `model.plan` + `model.plan.json`, each atomically.

The manifest's format, reading and the compatibility check live in the runtime
(`ctd_runtime.backends.tensorrt_backend`), which the station imports without this package;
this module makes manifests from the facts of a build and checks them against ONNX files.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from pathlib import Path
from typing import Any

import ctd_runtime
from ctd_runtime.atomic import write_bytes_atomic, write_json_atomic
from ctd_runtime.backends.tensorrt_backend import (
    EngineEnvironment,
    EngineManifest,
    check_engine_compatible,
    manifest_path,
    read_manifest,
    sha256_file,
)
from ctd_runtime.errors import CtdError

__all__ = [
    "EngineEnvironment",
    "EngineManifest",
    "check_engine_compatible",
    "check_onnx_matches",
    "engine_is_current",
    "make_manifest",
    "manifest_path",
    "read_manifest",
    "sha256_file",
    "write_engine",
]


def make_manifest(
    *,
    plan_path: str | Path,
    plan_bytes: bytes,
    onnx_path: str | Path,
    ctd_metadata: dict[str, str],
    precision: str,
    strongly_typed: bool,
    builder_flags: list[str] | tuple[str, ...],
    environment: EngineEnvironment,
    profile: dict[str, dict[str, list[int]]],
    workspace_mb: int,
    timing_cache: str | Path | None,
    build_seconds: float,
    built_at: _dt.datetime | None = None,
    notes: list[str] | None = None,
    onnx_sha256: str | None = None,
) -> EngineManifest:
    """The manifest of a fresh build (the ONNX file is hashed unless `onnx_sha256` is given)."""
    built_at = built_at or _dt.datetime.now(_dt.timezone.utc)
    return EngineManifest(
        plan_file=Path(plan_path).name,
        plan_sha256=hashlib.sha256(plan_bytes).hexdigest(),
        onnx_file=Path(onnx_path).name,
        onnx_sha256=onnx_sha256 or sha256_file(onnx_path),
        precision=precision,
        build_mode="strongly-typed" if strongly_typed else "weakly-typed",
        builder_flags=list(builder_flags),
        environment=environment,
        profile={k: {kk: [int(x) for x in vv] for kk, vv in v.items()} for k, v in profile.items()},
        workspace_mb=int(workspace_mb),
        timing_cache=None if timing_cache is None else str(timing_cache),
        build_seconds=round(float(build_seconds), 3),
        built_at=built_at.isoformat(timespec="seconds"),
        ctd_version=ctd_runtime.__version__,
        ctd_metadata={k: v for k, v in ctd_metadata.items() if k.startswith("ctd.")},
        notes=list(notes or []),
    )


def write_engine(plan_path: str | Path, plan_bytes: bytes, manifest: EngineManifest) -> tuple[Path, Path]:
    """Write the plan, then its manifest, each to a temporary name and renamed. A process killed
    between the two leaves a plan whose sha256 its (old or missing) manifest does not confirm,
    which the backend refuses."""
    plan_path = Path(plan_path)
    if manifest.plan_sha256 != hashlib.sha256(plan_bytes).hexdigest():
        raise ValueError("manifest plan_sha256 does not match the plan bytes")
    write_bytes_atomic(plan_path, plan_bytes)
    mpath = manifest_path(plan_path)
    write_json_atomic(mpath, manifest.to_dict())
    return plan_path, mpath


def check_onnx_matches(manifest: EngineManifest, onnx_path: str | Path, plan_path: str | Path | None = None) -> None:
    """CtdError when `onnx_path` is not the file the engine was built from (sha256)."""
    got = sha256_file(onnx_path)
    if got != manifest.onnx_sha256:
        where = plan_path if plan_path is not None else manifest.plan_file
        raise CtdError(
            f"engine was built from another ONNX file: {manifest.onnx_file} had sha256 {manifest.onnx_sha256[:12]}..., "
            f"{Path(onnx_path).name} has {got[:12]}...; rebuild the engine with `ctd build-engine`",
            path=where,
        )


def engine_is_current(plan_path: str | Path, onnx_path: str | Path, environment: EngineEnvironment) -> bool:
    """True when the plan exists, matches its manifest, was built from this ONNX file and fits
    this machine: `ctd build-engine` can then skip the build."""
    plan_path = Path(plan_path)
    if not plan_path.is_file():
        return False
    try:
        manifest = read_manifest(plan_path)
        check_engine_compatible(manifest, environment, plan_path)
        check_onnx_matches(manifest, onnx_path, plan_path)
    except CtdError:
        return False
    return sha256_file(plan_path) == manifest.plan_sha256


def describe(manifest: EngineManifest) -> dict[str, Any]:
    """A flat summary for printing."""
    env = manifest.environment
    return {
        "plan": manifest.plan_file,
        "onnx": manifest.onnx_file,
        "precision": manifest.precision,
        "build": manifest.build_mode + (f" + {','.join(manifest.builder_flags)}" if manifest.builder_flags else ""),
        "tensorrt": env.tensorrt_version,
        "gpu": f"{env.gpu.gpu_name} (sm {env.gpu.compute_capability})",
        "cuda": f"runtime {env.gpu.cuda_runtime_version}, driver {env.gpu.cuda_driver_version}",
        "build_seconds": manifest.build_seconds,
    }
