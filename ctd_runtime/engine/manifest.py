"""`model.plan.json`, the manifest beside every engine: its format, reading and writing, and the
checks that an engine fits this machine and the ONNX file it claims to come from.

An engine is a build for one TensorRT version and one GPU model: the manifest records both (plus
CUDA runtime and driver versions, the source ONNX's sha256 and ctd metadata, the optimisation
profile, precision and build flags), and `check_engine_compatible` refuses a plan built for
another TensorRT or GPU with a message naming the plan and both sides, instead of TensorRT's
deserialisation error. Plan and manifest are each written to a temporary name and renamed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ctd_runtime
from ctd_runtime.artifacts import manifest_path
from ctd_runtime.atomic import write_bytes_atomic, write_json_atomic
from ctd_runtime.engine.environment import EngineEnvironment
from ctd_runtime.errors import CtdError
from ctd_runtime.model_meta import ModelMetadata

MANIFEST_FORMAT = 1

__all__ = [
    "MANIFEST_FORMAT",
    "EngineEnvironment",
    "EngineManifest",
    "check_engine_compatible",
    "check_onnx_matches",
    "describe",
    "engine_is_current",
    "make_manifest",
    "read_manifest",
    "sha256_file",
    "write_engine",
]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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
