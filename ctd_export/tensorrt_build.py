"""Building a TensorRT engine from a fused ctd ONNX file: `model.plan` + `model.plan.json`.

Which network TensorRT gets, and how precision is chosen, depends on its version
(`choose_build_plan`, a pure function of the version string and the ONNX precision):

    ONNX \\ TensorRT   10.0 - 10.11                         >= 10.12 (and 11)
    fp16              strongly typed                        strongly typed
    fp32 (for fp16)   weakly typed + BuilderFlag.FP16       -> the sibling model.fp16.onnx, strongly typed
    int8 (QDQ)        weakly typed + INT8 + FP16 flags      strongly typed (explicit quantisation)
    fp32 (--precision fp32)  strongly typed, FP32 throughout

TensorRT 10.12 deprecated weak typing (the precision builder flags) and 11 removed it: there the
precision comes from the graph's types, which is what model.fp16.onnx (ctd_export.fp16: network
in FP16 between explicit Casts, warp and decode in FP32) and model.int8.onnx (Q/DQ) carry.

Written against the TensorRT 10 Python API (`trt.Builder`, `create_network(flags)`,
`trt.OnnxParser.parse_from_file`, `create_builder_config`, `set_memory_pool_limit`,
optimisation profiles, timing cache, `build_serialized_network`), imported lazily; it needs
neither torch nor onnx, so it runs on the station, where the engine must be built.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ctd_export.engine_manifest import EngineManifest, make_manifest, write_engine
from ctd_runtime.atomic import write_bytes_atomic
from ctd_runtime.backends.tensorrt_backend import EngineEnvironment, current_environment, import_tensorrt
from ctd_runtime.errors import CtdError

STRONGLY_TYPED_FROM = (10, 12)  # weak typing deprecated in 10.12, removed in 11
PRECISIONS = ("fp16", "int8", "fp32")


# ---------------------------------------------------------------------------- the plan of a build


def parse_version(version: str) -> tuple[int, int]:
    """(major, minor) of a TensorRT version string such as "10.12.0.36"."""
    parts = str(version).strip().split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise CtdError(f"cannot read the TensorRT version {version!r}") from None


@dataclass(frozen=True)
class BuildPlan:
    """How to build: from which ONNX precision, strongly typed or not, with which builder flags."""

    engine_precision: str
    onnx_precision: str
    strongly_typed: bool
    builder_flags: tuple[str, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["builder_flags"] = list(self.builder_flags)
        return d


def choose_build_plan(trt_version: str, onnx_precision: str, precision: str | None = None) -> BuildPlan:
    """The build for TensorRT `trt_version` given an ONNX file of `onnx_precision` (fp32 / fp16 /
    int8), aiming at engine `precision` (default: fp16 for an fp32 or fp16 file, int8 for int8).
    `onnx_precision` of the plan may differ from the one given: build_engine then uses the sibling
    file of that precision."""
    major, minor = parse_version(trt_version)
    if major < 10:
        raise CtdError(f"TensorRT {trt_version} is too old: ctd needs TensorRT 10 or newer")
    if onnx_precision not in PRECISIONS:
        raise CtdError(f"unknown ONNX precision {onnx_precision!r}; expected one of {', '.join(PRECISIONS)}")
    target = precision or ("int8" if onnx_precision == "int8" else "fp16")
    if target not in PRECISIONS:
        raise CtdError(f"unknown engine precision {target!r}; choose from {', '.join(PRECISIONS)}")
    strong = (major, minor) >= STRONGLY_TYPED_FROM
    if target == "int8":
        if onnx_precision != "int8":
            raise CtdError("an INT8 engine is built from the Q/DQ model (model.int8.onnx, ctd_export.int8), "
                           f"not from an {onnx_precision} file")
        if strong:
            return BuildPlan("int8", "int8", True, (), "Q/DQ graph, strongly typed (explicit quantisation)")
        return BuildPlan("int8", "int8", False, ("INT8", "FP16"),
                         "Q/DQ graph, weakly typed: INT8 for the Q/DQ layers, FP16 for the others")
    if target == "fp32":
        if onnx_precision != "fp32":
            raise CtdError(f"an FP32 engine is built from the FP32 model, not from an {onnx_precision} file")
        return BuildPlan("fp32", "fp32", True, (), "FP32 graph, strongly typed: FP32 throughout")
    # fp16
    if onnx_precision == "int8":
        raise CtdError("an FP16 engine is built from model.onnx or model.fp16.onnx, not from the INT8 model")
    if onnx_precision == "fp16":
        return BuildPlan("fp16", "fp16", True, (), "FP16 graph, strongly typed: precision from the graph's types")
    if strong:
        return BuildPlan("fp16", "fp16", True, (),
                         f"TensorRT {major}.{minor} builds strongly typed (weak typing deprecated in 10.12): "
                         "from the FP16 graph")
    return BuildPlan("fp16", "fp32", False, ("FP16",),
                     f"TensorRT {major}.{minor}: FP32 graph, weakly typed with the FP16 builder flag")


def sibling_path(onnx_path: str | Path, precision: str) -> Path:
    """model.onnx / model.fp16.onnx / model.int8.onnx of the same export, for `precision`."""
    p = Path(onnx_path)
    name = p.name
    for suffix in (".fp16.onnx", ".int8.onnx", ".onnx"):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            break
    else:
        stem = p.stem
    return p.with_name(stem + (".onnx" if precision == "fp32" else f".{precision}.onnx"))


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


def read_onnx_metadata(onnx_path: Path) -> dict[str, str]:
    """The ONNX file's metadata map (all keys), checked as ctd metadata; through ONNX Runtime."""
    import onnxruntime as ort

    from ctd_runtime.model_meta import ModelMetadata, session_metadata_map

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT's own exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CtdError(f"cannot load the ONNX model: {first}", path=onnx_path) from None
    meta = session_metadata_map(sess)
    ModelMetadata.from_map(meta, where=onnx_path)
    return meta


def resolve_onnx(
    onnx_path: str | Path, trt_version: str, precision: str | None = None, log: Callable[[str], None] | None = None
) -> tuple[Path, BuildPlan, dict[str, str]]:
    """(the ONNX file to build from, the build plan, its metadata): the given file, or its
    model.fp16.onnx sibling where the plan needs the FP16 graph (TensorRT >= 10.12)."""
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise CtdError("ONNX file not found", path=onnx_path)
    meta = read_onnx_metadata(onnx_path)
    plan = choose_build_plan(trt_version, meta["ctd.precision"], precision)
    if plan.onnx_precision != meta["ctd.precision"]:
        other = sibling_path(onnx_path, plan.onnx_precision)
        if not other.is_file():
            raise CtdError(
                f"{plan.reason}, but {other.name} is not there: write it first "
                "(ctd_export.fp16.convert_fp16, or `ctd export` with FP16)",
                path=onnx_path,
            )
        if log:
            log(f"using {other.name}: {plan.reason}")
        onnx_path = other
        meta = read_onnx_metadata(onnx_path)
    return onnx_path, plan, meta


def default_plan_path(onnx_path: str | Path) -> Path:
    """model.onnx / model.fp16.onnx -> model.plan; model.int8.onnx -> model.int8.plan."""
    p = Path(onnx_path)
    name = p.name
    if name.endswith(".int8.onnx"):
        return p.with_name(name[: -len(".int8.onnx")] + ".int8.plan")
    for suffix in (".fp16.onnx", ".onnx"):
        if name.endswith(suffix):
            return p.with_name(name[: -len(suffix)] + ".plan")
    return p.with_name(name + ".plan")


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
    log: Callable[[str], None] | None = None,
) -> EngineManifest:
    """Build and write `plan_path` (default beside the ONNX: model.plan) and its manifest; returns
    the manifest. `trt` and `cuda_api` replace the imported modules (tests)."""
    profile = profile or ShapeProfile()
    shapes = profile.shapes()
    if workspace_mb <= 0:
        raise CtdError(f"workspace must be positive, not {workspace_mb} MB")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise CtdError("ONNX file not found", path=onnx_path)
    trt = trt if trt is not None else import_tensorrt()
    say = log or (lambda msg: None)
    onnx_path, plan, meta = resolve_onnx(onnx_path, str(trt.__version__), precision, say)
    plan_path = Path(plan_path) if plan_path is not None else default_plan_path(onnx_path)
    environment = current_environment(trt, cuda_api)

    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        lines = format_parser_errors(parser) or ["(no error detail from the parser)"]
        raise CtdError("TensorRT cannot parse the ONNX graph:\n  " + "\n  ".join(lines), path=onnx_path)
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if sorted(names) != sorted(shapes):
        raise CtdError(f"network inputs are {names}, expected {sorted(shapes)} (a fused ctd graph)", path=onnx_path)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for flag in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    opt_profile = builder.create_optimization_profile()
    for name, s in shapes.items():
        opt_profile.set_shape(name, s["min"], s["opt"], s["max"])
    config.add_optimization_profile(opt_profile)
    cache_path = Path(timing_cache_path) if timing_cache_path is not None else None
    if cache_path is not None:
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    say(f"building {plan.engine_precision} engine from {onnx_path.name} ({plan.reason})")
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise CtdError("TensorRT could not build the engine (see its log above)", path=onnx_path)
    plan_bytes = bytes(memoryview(serialized))
    if cache_path is not None:
        write_bytes_atomic(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))

    manifest = make_manifest(
        plan_path=plan_path,
        plan_bytes=plan_bytes,
        onnx_path=onnx_path,
        ctd_metadata=meta,
        precision=plan.engine_precision,
        strongly_typed=plan.strongly_typed,
        builder_flags=plan.builder_flags,
        environment=environment,
        profile=shapes,
        workspace_mb=workspace_mb,
        timing_cache=cache_path,
        build_seconds=seconds,
        notes=[plan.reason],
    )
    write_engine(plan_path, plan_bytes, manifest)
    return manifest


def environment_or_none() -> EngineEnvironment | None:
    """This machine's TensorRT/GPU facts, or None where TensorRT or CUDA is missing."""
    try:
        return current_environment()
    except CtdError:
        return None
