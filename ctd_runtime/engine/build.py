"""Building a TensorRT engine from a fused ctd ONNX file: `model.plan` + `model.plan.json`, on the
machine that will run it (an engine is tied to one TensorRT version and one GPU).

Which network TensorRT gets, and how precision is chosen, depends on its version
(`choose_build_plan`, a pure function of the version string and the ONNX precision):

    ONNX \\ TensorRT   10.0 - 10.11                    10.12 - 10.x                11 and newer
    fp16              strongly typed (flag)           strongly typed (flag)        strongly typed (always)
    fp32 (for fp16)   weakly typed + BuilderFlag.FP16 -> model.fp16.onnx, strongly typed (flag / always)
    int8 (QDQ)        weakly typed + INT8 + FP16      strongly typed (explicit quantisation)
    fp32 (--precision fp32)  strongly typed, FP32 throughout

TensorRT 10.12 deprecated weak typing (the precision builder flags) and 11 removed it: 11.x's
`BuilderFlag` has no FP16 or INT8, every network is strongly typed and
`NetworkDefinitionCreationFlag.STRONGLY_TYPED` is deprecated and ignored, so it is set on 10.x
only. There the precision comes from the graph's types, which is what model.fp16.onnx (network
in FP16 between explicit Casts, warp and decode in FP32) and model.int8.onnx (Q/DQ) carry.
The names each branch uses are checked against the real bindings (tests/runtime/test_tensorrt_api.py).

TensorRT is imported lazily, after the arguments are checked; the ONNX metadata is read through
ONNX Runtime, so neither torch nor onnx is needed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ctd_runtime.artifacts import ONNX_PRECISIONS, onnx_variant, plan_path as default_plan_path
from ctd_runtime.atomic import write_bytes_atomic
from ctd_runtime.backends.ort_session import open_session
from ctd_runtime.engine.environment import current_environment, import_tensorrt
from ctd_runtime.engine.manifest import EngineManifest, make_manifest, write_engine
from ctd_runtime.errors import CtdError
from ctd_runtime.model_meta import ModelMetadata, session_metadata_map

STRONGLY_TYPED_FROM = (10, 12)  # weak typing deprecated in 10.12 ...
ALWAYS_STRONGLY_TYPED_FROM = (11, 0)  # ... and removed in 11, where the STRONGLY_TYPED flag is ignored
INPUT_NAMES: tuple[str, str] = ("image", "crop")

Log = Callable[[str], None]


# ---------------------------------------------------------------------------- the plan of a build


def parse_version(version: str) -> tuple[int, int]:
    """(major, minor) of a TensorRT version string such as "10.12.0.36"."""
    parts = str(version).strip().split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise CtdError(f"cannot read the TensorRT version {version!r}") from None


def check_precision(precision: str | None) -> None:
    """CtdError for an engine precision ctd cannot build (fp8, bf16, ...); None means the default."""
    if precision is not None and precision not in ONNX_PRECISIONS:
        raise CtdError(f"unknown engine precision {precision!r}; choose from {', '.join(ONNX_PRECISIONS)}")


@dataclass(frozen=True)
class BuildPlan:
    """How to build: from which ONNX precision, strongly typed or not, with which builder flags
    (`trt.BuilderFlag` members) and network creation flags (`trt.NetworkDefinitionCreationFlag`)."""

    engine_precision: str
    onnx_precision: str
    strongly_typed: bool
    builder_flags: tuple[str, ...]
    reason: str
    network_flags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["builder_flags"] = list(self.builder_flags)
        d["network_flags"] = list(self.network_flags)
        return d


def choose_build_plan(trt_version: str, onnx_precision: str, precision: str | None = None) -> BuildPlan:
    """The build for TensorRT `trt_version` given an ONNX file of `onnx_precision` (fp32 / fp16 /
    int8), aiming at engine `precision` (default: fp16 for an fp32 or fp16 file, int8 for int8).
    `onnx_precision` of the plan may differ from the one given: build_engine then uses the sibling
    file of that precision."""
    version = parse_version(trt_version)
    if version[0] < 10:
        raise CtdError(f"TensorRT {trt_version} is too old: ctd needs TensorRT 10 or newer")
    if onnx_precision not in ONNX_PRECISIONS:
        raise CtdError(f"unknown ONNX precision {onnx_precision!r}; expected one of {', '.join(ONNX_PRECISIONS)}")
    check_precision(precision)
    target = precision or ("int8" if onnx_precision == "int8" else "fp16")
    engine, source, strong, flags, reason = _precision_choice(version, onnx_precision, target)
    network_flags = ("STRONGLY_TYPED",) if strong and version < ALWAYS_STRONGLY_TYPED_FROM else ()
    return BuildPlan(engine, source, strong, flags, reason, network_flags)


def _precision_choice(
    version: tuple[int, int], onnx_precision: str, target: str
) -> tuple[str, str, bool, tuple[str, ...], str]:
    """(engine precision, ONNX precision to build from, strongly typed, builder flags, reason)."""
    strong = version >= STRONGLY_TYPED_FROM
    major, minor = version
    if target == "int8":
        if onnx_precision != "int8":
            raise CtdError("an INT8 engine is built from the Q/DQ model (model.int8.onnx, written by `ctd export`), "
                           f"not from an {onnx_precision} file")
        if strong:
            return "int8", "int8", True, (), "Q/DQ graph, strongly typed (explicit quantisation)"
        return ("int8", "int8", False, ("INT8", "FP16"),
                "Q/DQ graph, weakly typed: INT8 for the Q/DQ layers, FP16 for the others")
    if target == "fp32":
        if onnx_precision != "fp32":
            raise CtdError(f"an FP32 engine is built from the FP32 model, not from an {onnx_precision} file")
        return "fp32", "fp32", True, (), "FP32 graph, strongly typed: FP32 throughout"
    if onnx_precision == "int8":
        raise CtdError("an FP16 engine is built from model.onnx or model.fp16.onnx, not from the INT8 model")
    if onnx_precision == "fp16":
        return "fp16", "fp16", True, (), "FP16 graph, strongly typed: precision from the graph's types"
    if strong:
        return ("fp16", "fp16", True, (),
                f"TensorRT {major}.{minor} builds strongly typed (weak typing deprecated in 10.12): from the FP16 graph")
    return "fp16", "fp32", False, ("FP16",), f"TensorRT {major}.{minor}: FP32 graph, weakly typed with the FP16 builder flag"


# ---------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class ShapeProfile:
    """The optimisation profile: ranges of batch N and image height H / width W (uint8 [N,H,W,3]);
    the crop input follows the batch ([N,2,3]). `opt` is what TensorRT tunes for."""

    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 4
    min_height: int = 32
    opt_height: int = 1080
    max_height: int = 4096
    min_width: int = 32
    opt_width: int = 1440
    max_width: int = 4096

    def check(self) -> None:
        for what in ("batch", "height", "width"):
            lo, opt, hi = (getattr(self, f"{k}_{what}") for k in ("min", "opt", "max"))
            if lo < 1 or not lo <= opt <= hi:
                raise CtdError(f"profile {what}: need 1 <= min <= opt <= max, got {lo}, {opt}, {hi}")

    def shapes(self) -> dict[str, dict[str, list[int]]]:
        """{input: {"min": shape, "opt": shape, "max": shape}} for image and crop."""
        self.check()
        out: dict[str, dict[str, list[int]]] = {"image": {}, "crop": {}}
        for k in ("min", "opt", "max"):
            n = getattr(self, f"{k}_batch")
            out["image"][k] = [n, getattr(self, f"{k}_height"), getattr(self, f"{k}_width"), 3]
            out["crop"][k] = [n, 2, 3]
        return out

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


# ---------------------------------------------------------------------------- which ONNX file


def check_build_arguments(onnx_path: str | Path, profile: ShapeProfile, workspace_mb: int,
                          precision: str | None) -> None:
    """Everything that can be wrong with a build's arguments, checked before TensorRT is imported."""
    profile.check()
    if workspace_mb <= 0:
        raise CtdError(f"workspace must be positive, not {workspace_mb} MB")
    check_precision(precision)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise CtdError("ONNX file not found" if not onnx_path.exists() else "ONNX path is not a file", path=onnx_path)


def read_ctd_metadata(onnx_path: Path) -> tuple[ModelMetadata, dict[str, str]]:
    """The file's checked ctd metadata and its whole `ctd.*` map (with the conversion details,
    ctd.fp16 / ctd.int8, that the manifest keeps); through ONNX Runtime, no graph rewriting."""
    raw = session_metadata_map(open_session(onnx_path, optimization="disable"))
    return ModelMetadata.from_map(raw, where=onnx_path), {k: v for k, v in raw.items() if k.startswith("ctd.")}


def refuse_onnx_runtime_only_int8(meta_map: dict[str, str], onnx_path: Path) -> None:
    """CtdError for a Q/DQ model quantised for ONNX Runtime only (asymmetric uint8 activations):
    TensorRT takes zero-point-0 int8 alone, and would fail deep in its parser."""
    import json

    try:
        details = json.loads(meta_map.get("ctd.int8", "{}"))
    except json.JSONDecodeError:
        raise CtdError("the model's ctd.int8 metadata is not valid JSON", path=onnx_path) from None
    config = details if isinstance(details, dict) else {}  # the INT8 export writes its config flat
    if config.get("tensorrt_compatible") is False:
        raise CtdError(
            f"this INT8 model has {config.get('activation_type', 'uint8')} activations for ONNX Runtime only "
            "(ctd export --int8-activations uint8); TensorRT takes symmetric int8: export with "
            "--int8-activations int8", path=onnx_path,
        )


def resolve_onnx(
    onnx_path: str | Path, trt_version: str, precision: str | None = None, log: Log | None = None
) -> tuple[Path, BuildPlan, dict[str, str]]:
    """(the ONNX file to build from, the build plan, its ctd.* metadata map): the given file, or
    its model.fp16.onnx sibling where the plan needs the FP16 graph (TensorRT >= 10.12)."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise CtdError("ONNX file not found", path=onnx_path)
    meta, meta_map = read_ctd_metadata(onnx_path)
    refuse_onnx_runtime_only_int8(meta_map, onnx_path)
    plan = choose_build_plan(trt_version, meta.precision, precision)
    if plan.onnx_precision != meta.precision:
        other = onnx_variant(onnx_path, plan.onnx_precision)
        if not other.is_file():
            raise CtdError(
                f"{plan.reason}, but {other.name} is not there: write it first "
                "(`ctd export` writes it with the FP16 precision)",
                path=onnx_path,
            )
        if log:
            log(f"using {other.name}: {plan.reason}")
        onnx_path = other
        meta, meta_map = read_ctd_metadata(onnx_path)
    return onnx_path, plan, meta_map


# ---------------------------------------------------------------------------- build


def format_parser_errors(parser: Any) -> list[str]:
    """One line per ONNX parser error: node name and operator where TensorRT gives them."""
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        desc = str(err.desc()) if hasattr(err, "desc") else str(err)
        node_name = err.node_name() if hasattr(err, "node_name") else ""
        op = err.node_operator() if hasattr(err, "node_operator") else ""
        index = err.node() if hasattr(err, "node") else -1
        where = node_name or (f"node #{index}" if isinstance(index, int) and index >= 0 else "graph")
        if op:
            where += f" ({op})"
        lines.append(f"{where}: {desc}")
    return lines


def parse_network(trt: Any, builder: Any, logger: Any, plan: BuildPlan, onnx_path: Path) -> tuple[Any, Any]:
    """(network, parser) of the ONNX file, the network created with the plan's network flags. The
    parser owns weights the network refers to: keep it alive until the engine is built."""
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        lines = format_parser_errors(parser) or ["(no error detail from the parser)"]
        raise CtdError("TensorRT cannot parse the ONNX graph:\n  " + "\n  ".join(lines), path=onnx_path)
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if sorted(names) != sorted(INPUT_NAMES):
        raise CtdError(f"network inputs are {names}, expected {sorted(INPUT_NAMES)} (a fused ctd graph)", path=onnx_path)
    return network, parser


def builder_config(trt: Any, builder: Any, plan: BuildPlan, shapes: dict[str, dict[str, list[int]]],
                   workspace_mb: int, cache_path: Path | None) -> Any:
    """The builder configuration: workspace limit, the plan's builder flags, the optimisation
    profile, and the timing cache read from `cache_path` where it exists."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    for name, s in shapes.items():
        profile.set_shape(name, s["min"], s["opt"], s["max"])
    config.add_optimization_profile(profile)
    if cache_path is not None:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    return config


def build_engine(
    onnx_path: str | Path,
    plan_path: str | Path | None = None,
    profile: ShapeProfile | None = None,
    workspace_mb: int = 2048,
    timing_cache_path: str | Path | None = None,
    precision: str | None = None,
    verbose: bool = False,
    *,
    trt: Any = None,
    cuda_api: Any = None,
    log: Log | None = None,
) -> EngineManifest:
    """Build and write `plan_path` (default beside the ONNX: model.plan) and its manifest; returns
    the manifest. `trt` and `cuda_api` replace the imported modules (tests)."""
    profile = profile or ShapeProfile()
    check_build_arguments(onnx_path, profile, workspace_mb, precision)
    trt = trt if trt is not None else import_tensorrt()
    say = log or (lambda msg: None)
    onnx_path, plan, meta = resolve_onnx(onnx_path, str(trt.__version__), precision, say)
    plan_path = Path(plan_path) if plan_path is not None else default_plan_path(onnx_path)
    environment = current_environment(trt, cuda_api)
    shapes = profile.shapes()
    cache_path = Path(timing_cache_path) if timing_cache_path is not None else None

    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, parser = parse_network(trt, builder, logger, plan, onnx_path)
    config = builder_config(trt, builder, plan, shapes, workspace_mb, cache_path)
    say(f"building {plan.engine_precision} engine from {onnx_path.name} ({plan.reason})")
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    del parser  # held until here: it owns weights the network refers to
    if serialized is None:
        raise CtdError("TensorRT could not build the engine (see its log above)", path=onnx_path)
    plan_bytes = bytes(memoryview(serialized))
    if cache_path is not None:
        write_bytes_atomic(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))

    manifest = make_manifest(
        plan_path=plan_path, plan_bytes=plan_bytes, onnx_path=onnx_path, ctd_metadata=meta,
        precision=plan.engine_precision, strongly_typed=plan.strongly_typed, builder_flags=plan.builder_flags,
        environment=environment, profile=shapes, workspace_mb=workspace_mb, timing_cache=cache_path,
        build_seconds=seconds, notes=[plan.reason],
    )
    write_engine(plan_path, plan_bytes, manifest)
    return manifest
