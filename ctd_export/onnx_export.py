"""`ctd export`: a run dir -> DIR/model.onnx (fused or raw, with ctd metadata) behind a parity gate.

    export_run(run_dir, out_dir, options) -> ExportResult

1. check the output folder (not a file) and remove what a killed export left there
   (`ctd_runtime.atomic.remove_stale_temps`);
2. load the run (`ctd_train.checkpoint.load_run`: CtdError for an unreadable checkpoint or one
   from another ctd version or, given `options.schema`, another schema);
3. build the fused graph (`FusedLandmarkModel`) or take the plain predictor (`raw`), its head's
   deconvolutions written as `options.head_op` says (`ctd_export.subpixel`), export it with
   the TorchScript exporter (opset 17, dynamic batch and image size, constant folding), fix the
   static output shapes, add the `ctd.*` metadata (and `ctd_export.head_op`), run onnx.checker
   and the TensorRT operator check (`op_support.check_graph_ops`);
4. write it under a temporary name in DIR, run the parity gate on it (PyTorch vs ONNX Runtime on
   validation images; the gate graph also outputs the heatmaps, see `ctd_export.parity`) and
   rename it to model.onnx only when every judged landmark is within tolerance;
5. run the steps in order, each with an `ExportContext`, adding files to `result.artifacts` and
   entries to `result.reports`: model.fp16.onnx and model.int8.onnx as `options.precisions` asks
   (fused graphs only), with `options.engine` model.plan (TensorRT, from model.fp16.onnx, gated
   like model.onnx: `ctd_export.engine_step`), then `options.post_steps`;
6. export_config.json is rewritten after model.onnx and after every step (also a failed one):
   it lists what is written (with each file's SHA-256) and which steps are pending, done or
   failed, never what was only planned.

A failure before step 4 ends leaves nothing behind (a folder this call created is removed again);
with `options.engine` a missing TensorRT is reported before anything is exported. A folder that
already holds this export's model.onnx (same run and options, same bytes) is completed without
`force`: only the steps it lacks are run (`ctd_export.resume`); another export's model.onnx is
refused. Each step prints as it starts and ends through `log`; long loops report to `progress`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

import ctd_runtime
from ctd_runtime.artifacts import ONNX_PRECISIONS
from ctd_export.progress import timed_step
from ctd_export.resume import (STEP_ARTIFACTS, check_existing_model, derived_files, file_sha256, read_previous_config,
                               same_bytes, step_done)
from ctd_runtime.atomic import atomic_path, remove_stale_temps, write_json_atomic
from ctd_runtime.codec import DECODE_METHODS
from ctd_runtime.errors import CtdError
from ctd_runtime.model_meta import ModelMetadata, version_major

MODEL_FILE = "model.onnx"
HEAD_OPS = ("convtranspose", "subpixel", "subpixel2x2")  # how the head's deconvolutions are written (subpixel.py)
# metadata key of the head op: outside the runtime's ctd.* keys, which conversions rewrite, so the
# FP16/INT8 variants carry it over as it is
HEAD_OP_KEY = "ctd_export.head_op"
EXPORT_CONFIG_FILE = "export_config.json"
TIMING_CACHE_FILE = "timing.cache"
DEFAULT_OPSET = 17
EXPORTERS = ("torchscript", "dynamo")

PostStep = Callable[["ExportContext"], None]


@dataclass
class ExportOptions:
    """How to export; `to_dict` is what export_config.json records."""

    decode: str | None = None          # None: the run's own decode method
    heatmaps: bool = False             # fused graph also outputs the heatmaps
    raw: bool = False                  # plain predictor: normalised NCHW `input` -> `heatmaps`
    tolerance_px: float = 0.1          # parity gate, source pixels, FP32
    heatmap_tolerance: float = 0.01    # parity gate: heatmaps, fraction of their magnitude
    images: str | None = None          # folder of validation images (default: the run's val split; a final fit's train split)
    max_images: int = 16               # crops the parity gate compares
    which: str = "best"                # checkpoint: best | last
    schema: str | None = None          # refuse a run trained for another schema
    opset: int = DEFAULT_OPSET
    exporter: str = "torchscript"      # torchscript (dynamo=False) | dynamo
    head_op: str = "convtranspose"     # the head's deconvolutions as: convtranspose | subpixel | subpixel2x2
    force: bool = False                # overwrite an existing model.onnx
    threads: int | None = None         # CPU threads of the parity run (torch and ONNX Runtime)
    precisions: tuple[str, ...] = ONNX_PRECISIONS  # ONNX files of a fused export (a raw one: model.onnx only)
    calibration: str = "minmax"        # INT8 calibration: minmax | entropy | percentile
    calibration_images: int = 64       # training images the INT8 calibration sees
    int8_activations: str = "int8"     # int8: symmetric, TensorRT-ready | uint8: asymmetric, ONNX Runtime CPU only
    engine: bool = False               # also model.plan (TensorRT FP16 from model.fp16.onnx), gated
    engine_profile: Any = None         # ctd_runtime.engine.build.ShapeProfile; None: its defaults
    workspace_mb: int = 2048           # TensorRT builder workspace
    timing_cache: str | None = TIMING_CACHE_FILE  # TensorRT timing cache, relative to DIR; None: none
    post_steps: list[PostStep] = field(default_factory=list)  # run after the precision and engine steps

    def check(self) -> None:
        if self.decode is not None and self.decode not in DECODE_METHODS:
            raise CtdError(f"unknown decode {self.decode!r}; choose from {', '.join(DECODE_METHODS)}")
        if self.raw and self.heatmaps:
            raise CtdError("--raw exports heatmaps only; --heatmaps applies to the fused graph")
        if not (self.tolerance_px > 0 and np.isfinite(self.tolerance_px)):  # inf would pass any graph
            raise CtdError(f"tolerance must be a finite number > 0 px, not {self.tolerance_px}")
        if not (self.heatmap_tolerance > 0 and np.isfinite(self.heatmap_tolerance)):
            raise CtdError(f"heatmap tolerance must be a finite number > 0, not {self.heatmap_tolerance}")
        if self.max_images < 1:
            raise CtdError(f"max_images must be at least 1, not {self.max_images}")
        if self.which not in ("best", "last"):
            raise CtdError(f"which checkpoint: best or last, not {self.which!r}")
        if self.exporter not in EXPORTERS:
            raise CtdError(f"unknown exporter {self.exporter!r}; choose from {', '.join(EXPORTERS)}")
        if self.head_op not in HEAD_OPS:
            raise CtdError(f"unknown head op {self.head_op!r}; choose from {', '.join(HEAD_OPS)}")
        if not 17 <= self.opset <= 20:
            raise CtdError(f"opset {self.opset} outside 17..20 (GridSample needs 16+, TensorRT 10 reads up to 20)")
        unknown = [p for p in self.precisions if p not in ONNX_PRECISIONS]
        if unknown:
            raise CtdError(f"unknown precision {unknown[0]!r}; choose from {', '.join(ONNX_PRECISIONS)}")
        if self.engine and self.raw:
            raise CtdError("the engine is built from the fused graph: --engine does not go with --raw")
        if self.workspace_mb <= 0:
            raise CtdError(f"workspace must be positive, not {self.workspace_mb} MB")
        if "int8" in self.written_precisions():
            self.int8_config().check()

    def written_precisions(self) -> tuple[str, ...]:
        """The ONNX files this export writes, by precision: fp32 (model.onnx) always; for a fused
        graph also those of `precisions`, and fp16 where the engine is built from it."""
        if self.raw:
            return ("fp32",)
        wanted = set(self.precisions) | ({"fp16"} if self.engine else set())
        return tuple(p for p in ONNX_PRECISIONS if p == "fp32" or p in wanted)

    def int8_config(self) -> Any:
        """The `ctd_export.int8.Int8Config` of the INT8 step."""
        from ctd_export.int8 import Int8Config

        return Int8Config(method=self.calibration, num_images=self.calibration_images,
                          activation_type=self.int8_activations,
                          tensorrt_compatible=self.int8_activations == "int8")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["post_steps"] = [getattr(s, "__name__", type(s).__name__) for s in self.post_steps]
        return d


@dataclass
class ExportResult:
    """What an export wrote and measured."""

    out_dir: Path
    model_path: Path
    config_path: Path
    metadata: ModelMetadata
    parity: Any                         # ParityReport
    options: ExportOptions
    run_dir: Path
    parity_source: str
    ops: dict[str, int]
    artifacts: dict[str, Path] = field(default_factory=dict)
    reports: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, str] = field(default_factory=dict)   # step -> pending | done | failed
    complete: bool = False                                 # every step done

    def to_dict(self) -> dict[str, Any]:
        """What export_config.json holds: the options asked for, and what is written (artifacts,
        with the SHA-256 of each file) and what is not yet (steps)."""
        return {
            "ctd_version": ctd_runtime.__version__,
            "run_dir": str(self.run_dir),
            "run_id": self.metadata.run_id,
            "model": self.model_path.name,
            "graph": self.metadata.graph,
            "decode": self.metadata.decode,
            "precision": self.metadata.precision,
            "outputs": list(self.metadata.outputs),
            "options": self.options.to_dict(),
            "parity": {**self.parity.to_dict(), "source": self.parity_source},
            "ops": self.ops,
            "artifacts": {k: str(Path(v).name) for k, v in self.artifacts.items()},
            "files": {Path(v).name: file_sha256(v) for v in self.artifacts.values() if Path(v).is_file()},
            "steps": self.steps,
            "complete": self.complete,
            "reports": self.reports,
        }


@dataclass
class ExportContext:
    """Handed to each step: the loaded run, the options, the result so far, the parity images and
    affines (uint8 BGR, [N, 2, 3]) with their PyTorch reference so a step can gate its own
    conversion, and the gate graph (the written graph plus a `heatmaps` output, with metadata; an
    onnx.ModelProto) whose heatmaps let `check_parity` tell unstable decodes from real differences."""

    run: Any
    options: ExportOptions
    result: ExportResult
    images: list[np.ndarray]
    crops: np.ndarray
    gate_model: Any = None
    reference: Any = None               # ctd_export.parity.TorchReference of images and crops
    log: Callable[[str], None] | None = None  # progress lines (the engine build's)
    progress: Callable[[str, int, int], None] | None = None  # (label, done, total) of a long loop


# ---------------------------------------------------------------------------------------------
# graph building and export


def export_predictor(run: Any, head_op: str = "convtranspose") -> Any:
    """The run's predictor as the graph is exported (eval mode, CPU): itself, or for another
    `head_op` a copy with its deconvolutions rewritten (`ctd_export.subpixel`; the run's own
    predictor stays the parity gate's PyTorch reference)."""
    predictor = run.predictor.cpu().eval()
    if head_op == "convtranspose":
        return predictor
    from ctd_export.subpixel import rewritten_head

    return rewritten_head(predictor, head_op)


def build_fused_model(run: Any, decode: str, with_heatmaps: bool = False, head_op: str = "convtranspose"):
    """The run's predictor wrapped into the fused graph (eval mode, CPU), its head written as
    `head_op` says (`export_predictor`)."""
    from ctd_export.fused import FusedLandmarkModel

    predictor = export_predictor(run, head_op)
    return FusedLandmarkModel(
        predictor, run.normalization, run.codec, decode, run.input_size, with_heatmaps,
        num_landmarks=run.schema.num_landmarks,
    ).eval()


def _set_output_shape(model: Any, name: str, dims: list[int | str]) -> None:
    for vi in model.graph.output:
        if vi.name == name:
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            for d in dims:
                dim = shape.dim.add()
                if isinstance(d, str):
                    dim.dim_param = d
                else:
                    dim.dim_value = int(d)
            return
    raise CtdError(f"exported graph has no output {name!r}")


def _io_spec(module: Any, graph: str, input_size: int) -> tuple[tuple, list[str], list[str], dict[str, dict[int, str]]]:
    """(example inputs, input names, output names, dynamic axes) of the graph to export."""
    import torch

    if graph == "fused":
        example = (torch.zeros(2, input_size + 24, input_size + 40, 3, dtype=torch.uint8),
                   torch.tensor([[[1.0, 0.0, 8.0], [0.0, 1.0, 4.0]]] * 2))
        with torch.no_grad():
            n_out = len(module(*example))
        input_names = ["image", "crop"]
        output_names = ["landmarks", "scores", "heatmaps"][:n_out]
        dynamic_axes: dict[str, dict[int, str]] = {
            "image": {0: "batch", 1: "height", 2: "width"}, "crop": {0: "batch"},
        }
    else:
        example = (torch.zeros(2, 3, input_size, input_size),)
        input_names, output_names = ["input"], ["heatmaps"]
        dynamic_axes = {"input": {0: "batch"}}
    for name in output_names:
        dynamic_axes[name] = {0: "batch"}
    return example, input_names, output_names, dynamic_axes


def _run_exporter(module: Any, graph: str, spec: tuple, opset: int, exporter: str) -> Any:
    """The torch exporter's onnx.ModelProto (CtdError naming the exporter when it fails)."""
    import onnx
    import torch

    example, input_names, output_names, dynamic_axes = spec
    with tempfile.TemporaryDirectory(prefix="ctd-export-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = os.path.join(tmp, "model.onnx")
        try:
            if exporter == "torchscript":
                torch.onnx.export(
                    module, example, path, input_names=input_names, output_names=output_names,
                    dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False,
                )
                return onnx.load(path)
            from torch.export import Dim

            batch = Dim("batch", min=1, max=1024)
            if graph == "fused":
                shapes: Any = ({0: batch, 1: Dim("height", min=2), 2: Dim("width", min=2)}, {0: batch})
            else:
                shapes = ({0: batch},)
            program = torch.onnx.export(
                module, example, input_names=input_names, output_names=output_names,
                dynamic_shapes=shapes, opset_version=max(opset, 18), dynamo=True,
            )
            return program.model_proto
        except CtdError:
            raise
        except Exception as e:  # exporter failures are many types; say which step failed
            raise CtdError(f"ONNX export ({exporter}) failed: {type(e).__name__}: {str(e).splitlines()[0]}") from e


def export_onnx_model(
    module: Any,
    graph: str,
    num_landmarks: int,
    input_size: int,
    heatmap_size: int,
    opset: int = DEFAULT_OPSET,
    exporter: str = "torchscript",
) -> Any:
    """torch module -> checked onnx.ModelProto (no metadata yet).

    fused: inputs image uint8 [N, H, W, 3], crop float32 [N, 2, 3]; outputs landmarks [N, K, 2],
    scores [N, K] (+ heatmaps [N, K, h, h] if the module returns three values).
    raw: input float32 [N, 3, S, S] -> heatmaps [N, K, h, h].
    """
    import onnx

    module = module.eval()
    spec = _io_spec(module, graph, input_size)
    model = _run_exporter(module, graph, spec, opset, exporter)
    if graph == "fused":
        _set_output_shape(model, "landmarks", ["batch", num_landmarks, 2])
        _set_output_shape(model, "scores", ["batch", num_landmarks])
    if "heatmaps" in spec[2]:
        _set_output_shape(model, "heatmaps", ["batch", num_landmarks, heatmap_size, heatmap_size])
    model.producer_name = "ctd"
    model.producer_version = ctd_runtime.__version__
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise CtdError(f"the exported graph does not pass onnx.checker: {str(e).splitlines()[0]}") from e
    return model


def without_output(model: Any, name: str) -> Any:
    """A copy of the model without the graph output `name` (the tensor stays, internal)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    keep = [o for o in copy.graph.output if o.name != name]
    del copy.graph.output[:]
    copy.graph.output.extend(keep)
    return copy


# ---------------------------------------------------------------------------------------------
# the pipeline


def _check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse a file as output folder, and (without `force`) a model.onnx that no export_config.json
    vouches for; whether a vouched-for one is this export's is decided once the run is loaded."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CtdError("output path exists and is not a folder", path=out_dir)
    if not force and (out_dir / MODEL_FILE).exists() and read_previous_config(out_dir / EXPORT_CONFIG_FILE) is None:
        raise CtdError(f"already holds a model.onnx without the {EXPORT_CONFIG_FILE} of its export; use --force "
                       "to overwrite it", path=out_dir)


def _check_run(run: Any, options: ExportOptions) -> None:
    try:
        if version_major(run.ctd_version) != version_major(ctd_runtime.__version__):
            raise CtdError(
                f"the run was trained with ctd {run.ctd_version}, this is ctd {ctd_runtime.__version__}: "
                "export it with the ctd version that trained it", path=run.run_dir,
            )
    except ValueError:
        raise CtdError(f"the run's ctd version {run.ctd_version!r} is not a version number", path=run.run_dir) from None
    if options.schema is not None:
        from ctd_runtime.schema import get_schema

        want = get_schema(options.schema)
        if want.landmark_differences(run.schema):
            raise CtdError(
                f"the run is for schema {run.schema.name!r} ({run.schema.num_landmarks} landmarks), "
                f"not {want.name!r} ({want.num_landmarks} landmarks)", path=run.run_dir,
            )


def _graphs(run: Any, options: ExportOptions, decode: str, graph: str) -> tuple[Any, Any, Any, ModelMetadata]:
    """(gate graph, its metadata, the graph to write, its metadata). The gate graph also outputs
    the heatmaps (see ctd_export.parity); the written graph drops that output unless it was asked
    for (nothing else differs)."""
    import onnx

    from ctd_export.metadata import metadata_for_run, set_metadata, set_metadata_props
    from ctd_export.op_support import check_graph_ops

    if graph == "fused":
        try:
            module = build_fused_model(run, decode, with_heatmaps=True, head_op=options.head_op)
        except ValueError as e:
            raise CtdError(f"cannot build the fused graph: {e}", path=run.run_dir) from None
    else:
        module = export_predictor(run, options.head_op)
    gate_model = export_onnx_model(module, graph, run.schema.num_landmarks, run.input_size,
                                   run.codec.heatmap_size, options.opset, options.exporter)
    gate_meta = metadata_for_run(run, decode, graph, with_heatmaps=True)
    set_metadata(gate_model, gate_meta)
    set_metadata_props(gate_model, {HEAD_OP_KEY: options.head_op})
    meta = metadata_for_run(run, decode, graph, options.heatmaps)
    model = gate_model
    if graph == "fused" and not options.heatmaps:
        model = set_metadata(without_output(gate_model, "heatmaps"), meta)
        onnx.checker.check_model(model)
    problems = check_graph_ops(model) if graph == "fused" else []
    if problems:
        raise CtdError("the exported graph is not TensorRT-clean: " + "; ".join(problems[:5]))
    return gate_model, gate_meta, model, meta


def _write_gated(run: Any, out_dir: Path, gate: tuple[Any, ModelMetadata], model: Any, reference: Any,
                 options: ExportOptions, keep_existing: bool = False) -> Any:
    """Write model.onnx only when the gate graph passes the parity gate; the ParityReport. A
    failure leaves nothing (and removes the folder if this export created it). With
    `keep_existing` the folder's model.onnx, already checked to be exactly `model` (a rerun
    completing an export), is gated and left as it is."""
    import onnx

    from ctd_export.parity import check_parity

    gate_model, gate_meta = gate
    created = not out_dir.exists()
    try:
        with atomic_path(out_dir / MODEL_FILE) as tmp:
            onnx.save(gate_model, str(tmp))
            report = check_parity(run, tmp, reference.images, reference.crops, options.tolerance_px, options.threads,
                                  metadata=gate_meta, heatmap_tolerance=options.heatmap_tolerance,
                                  reference=reference)
            if not report.passed:
                detail = f"; {'; '.join(report.notes)}" if report.notes else ""
                raise CtdError(
                    f"parity gate failed: ONNX Runtime and PyTorch landmarks differ by max {report.max_px:.4g} px, "
                    f"mean {report.mean_px:.4g} px (worst landmark {report.worst_landmark}; tolerance "
                    f"{options.tolerance_px:g} px, {report.num_images} crops, decode {reference.decode}){detail}; "
                    "nothing was written",
                    path=out_dir,
                )
            if keep_existing:
                raise _KeepExisting()
            if model is not gate_model:
                onnx.save(model, str(tmp))
    except _KeepExisting:
        pass
    except BaseException:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    report.model = MODEL_FILE
    return report


class _KeepExisting(Exception):
    """Leaves `atomic_path` without renaming its temporary over the existing model.onnx."""


def export_steps(options: ExportOptions) -> list[tuple[str, PostStep]]:
    """The named steps after model.onnx, in order: fp16, int8 (as `written_precisions` says),
    engine, then `options.post_steps` (named after their functions)."""
    steps: list[tuple[str, PostStep]] = []
    written = options.written_precisions()
    if "fp16" in written:
        from ctd_export.fp16 import fp16_post_step

        steps.append(("fp16", fp16_post_step))
    if "int8" in written:
        from ctd_export.int8 import int8_post_step

        steps.append(("int8", int8_post_step(options.int8_config())))
    if options.engine:
        from ctd_export.engine_step import engine_post_step

        steps.append(("engine", engine_post_step))
    return steps + [(getattr(s, "__name__", type(s).__name__), s) for s in options.post_steps]


STEP_TITLES = {"fp16": "FP16 variant (conversion, ONNX Runtime and torch half comparisons)",
               "int8": "INT8 variant (calibration on training images, quantisation, comparison)",
               "engine": "TensorRT engine (build and parity gate)"}


def export_loaded_run(run: Any, out_dir: str | Path, options: ExportOptions | None = None,
                      validation: tuple[list[np.ndarray], np.ndarray, str] | None = None,
                      log: Callable[[str], None] | None = None,
                      progress: Callable[[str, int, int], None] | None = None) -> ExportResult:
    """Export an already loaded run (a `LoadedRun` or anything with its fields); see the module
    docstring. `validation` overrides the parity images (images, affines, description); `log`
    gets a line as each step starts and ends (and the steps' own lines), `progress(label, done,
    total)` the long loops (INT8 calibration)."""
    from ctd_export.op_support import used_ops
    from ctd_export.parity import torch_reference

    options = options or ExportOptions()
    options.check()
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, options.force)
    _check_run(run, options)
    if options.engine:
        from ctd_export.engine_step import require_tensorrt

        require_tensorrt()
    remove_stale_temps(out_dir)  # what a killed export left
    decode = options.decode or run.decode
    graph = "raw" if options.raw else "fused"
    previous = _resumable(out_dir, run, options, decode, graph)
    if validation is None:
        from ctd_export.validation_images import validation_set

        validation = validation_set(run, options.images, options.max_images)
    images, crops, source = validation
    with timed_step(log, "fp32", f"{graph} graph: ONNX export, onnx.checker, TensorRT operator check"):
        gate_model, gate_meta, model, meta = _graphs(run, options, decode, graph)
        if previous is not None:  # the model.onnx to keep must be exactly this graph
            same_bytes(out_dir / MODEL_FILE, model.SerializeToString())
    with timed_step(log, "parity", f"PyTorch vs ONNX Runtime on {len(images)} crops ({source})"):
        reference = torch_reference(run, images, crops, decode)
        report = _write_gated(run, out_dir, (gate_model, gate_meta), model, reference, options,
                              keep_existing=previous is not None)
    if previous is None:
        for stale in derived_files(out_dir / MODEL_FILE):  # made from the model.onnx just replaced
            stale.unlink(missing_ok=True)
    elif log is not None:
        log(f"fp32: {MODEL_FILE} is already this export's; completing the steps still missing")
    result = ExportResult(
        out_dir=out_dir, model_path=out_dir / MODEL_FILE, config_path=out_dir / EXPORT_CONFIG_FILE, metadata=meta,
        parity=report, options=options, run_dir=Path(run.run_dir), parity_source=source, ops=used_ops(model),
        artifacts={"onnx": out_dir / MODEL_FILE},
    )
    context = ExportContext(run=run, options=options, result=result, images=reference.images, crops=reference.crops,
                            gate_model=gate_model, reference=reference, log=log, progress=progress)
    _run_steps(context, export_steps(options), previous)
    return result


def _resumable(out_dir: Path, run: Any, options: ExportOptions, decode: str, graph: str) -> dict[str, Any] | None:
    """The previous export_config.json when the folder's model.onnx is (by its metadata) this
    export's and may be kept; None for a fresh export (`force`, or no model.onnx); CtdError for
    a model.onnx of another export."""
    model = out_dir / MODEL_FILE
    if options.force or not model.exists():
        return None
    outputs = ("heatmaps",) if graph == "raw" else ("landmarks", "scores") + (("heatmaps",) if options.heatmaps else ())
    check_existing_model(model, str(run.run_id), decode, graph, outputs)
    return read_previous_config(out_dir / EXPORT_CONFIG_FILE) or {}


def _run_steps(context: ExportContext, steps: list[tuple[str, PostStep]], previous: dict[str, Any] | None) -> None:
    """Each step in turn, export_config.json rewritten after model.onnx and after every step (so it
    lists what is on disk, also when a step fails or the process is killed); a step an earlier
    export into the folder completed with the same options is taken from its config."""
    result = context.result
    result.steps = {name: "pending" for name, _ in steps}
    _write_config(result)
    options = result.options.to_dict()
    for name, step in steps:
        if step_done(previous, name, options, result.out_dir):
            _take_over(result, previous, name)
            if context.log is not None:
                context.log(f"{name}: already written by the previous export ({_listed(previous, name)}), kept")
            continue
        try:
            with timed_step(context.log, name, STEP_TITLES.get(name, f"step {name}")):
                step(context)
        except BaseException:
            result.steps[name] = "failed"
            _write_config(result)
            raise
        result.steps[name] = "done"
        _write_config(result)
    result.complete = True
    _write_config(result)


def _take_over(result: ExportResult, previous: dict[str, Any], name: str) -> None:
    for key in STEP_ARTIFACTS[name]:
        result.artifacts[key] = result.out_dir / previous["artifacts"][key]
    if name == "engine" and "timing_cache" in previous.get("artifacts", {}):
        result.artifacts["timing_cache"] = result.out_dir / previous["artifacts"]["timing_cache"]
    result.reports[name] = previous["reports"][name]
    result.steps[name] = "done"


def _listed(previous: dict[str, Any], name: str) -> str:
    return ", ".join(previous["artifacts"][k] for k in STEP_ARTIFACTS[name])


def _write_config(result: ExportResult) -> None:
    write_json_atomic(result.config_path, result.to_dict())


def export_run(run_dir: str | Path, out_dir: str | Path, options: ExportOptions | None = None,
               log: Callable[[str], None] | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> ExportResult:
    """Load a run dir's checkpoint and export it (see the module docstring)."""
    options = options or ExportOptions()
    options.check()  # before torch is imported: a wrong option is named on any install
    _check_out_dir(Path(out_dir), options.force)
    if options.engine:  # before loading anything: TensorRT is missing on most machines
        from ctd_export.engine_step import require_tensorrt

        require_tensorrt()
    if options.threads is not None:  # the PyTorch side of the parity run, like ONNX Runtime's
        import torch

        torch.set_num_threads(options.threads)
    expected = None
    if options.schema is not None:
        from ctd_runtime.schema import get_schema

        expected = get_schema(options.schema)
    from ctd_train.checkpoint import load_run

    with timed_step(log, "checkpoint", f"loading the {options.which} checkpoint of {run_dir}"):
        run = load_run(run_dir, which=options.which, expected_schema=expected)  # type: ignore[arg-type]
    if log is not None:
        log(f"run {run.run_id}, epoch {run.epoch}: {run.checkpoint_path}")
    return export_loaded_run(run, out_dir, options, log=log, progress=progress)
