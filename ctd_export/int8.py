"""INT8 variant of the fused graph: static QDQ quantisation of the network with ONNX Runtime,
calibrated on training images; the warp, normalisation and decode stay FP32.

    model.onnx ─ quant_pre_process (shape inference, basic optimisation: BN folded into Conv) ─
    quantize_static(QDQ, per-channel symmetric INT8 weights, INT8 activations, calibration on
    crops around the ground truth of training images) ─ FP32 biases back ─▶ model.int8.onnx

Which operators are quantised is a measured choice (docs/int8.md): on the x86 CPU here,
quantising the deconvolution head (ConvTranspose) costs more in Quantize/Dequantize than it
saves, so the default quantises Conv only and leaves the deconvolutions in FP32; grouped
(depthwise) convolutions and the last heatmap layer stay FP32 too, for accuracy.

The default file serves both ONNX Runtime CPU and TensorRT explicit quantisation: TensorRT takes
only symmetric INT8 (zero point 0) Q/DQ, so activations are symmetric `int8`, and it rejects a
DequantizeLinear of an INT32 bias, so the quantiser's INT32 biases are turned back into FP32
initializers (ONNX Runtime >= 1.21 requantises such biases itself when it fuses Q/DQ + Conv into
QLinearConv). `activation_type="uint8"` (asymmetric) is for ONNX Runtime only and is refused
with `tensorrt_compatible=True`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from ctd_export.calibration import (FusedCalibrationReader, Sample, as_ort_reader, calibrate, parity_samples,
                                   run_config_samples)
from ctd_export.metadata import load_checked_model, read_metadata_props, set_metadata_props, write_converted_metadata
from ctd_export.network_region import PREDICTOR_SCOPE, ensure_node_names, network_region, output_layers
from ctd_runtime.artifacts import onnx_variant
from ctd_runtime.atomic import atomic_path, temp_dir
from ctd_runtime.errors import CtdError

CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")
ACTIVATION_TYPES: tuple[str, ...] = ("int8", "uint8")
DEFAULT_OP_TYPES: tuple[str, ...] = ("Conv",)  # measured; see docs/int8.md


@dataclass
class Int8Config:
    """How to quantise; saved (with the calibration facts) in the model's `ctd.int8` metadata."""

    method: str = "minmax"
    op_types: tuple[str, ...] = DEFAULT_OP_TYPES  # ("all",): every type the quantiser knows
    per_channel: bool = True
    # 7-bit weights: ONNX Runtime's x86 INT8 kernels without VNNI (AVX2, AVX-512 without VNNI)
    # multiply with VPMADDUBSW, whose 16-bit sums saturate on full-range weights. Measured on an
    # AVX2-only AMD EPYC: the tiny test model's ME moved 0.40 PFL without it, 0.00 with it. A
    # station's CPU is not the exporting machine's, so the file is made safe for both.
    reduce_range: bool = True
    skip_depthwise: bool = True  # grouped (depthwise) Conv stays FP32: measured, docs/int8.md
    activation_type: str = "int8"
    tensorrt_compatible: bool = True
    num_images: int = 64
    percentile: float = 99.999
    preprocess: bool = True
    scope: str = PREDICTOR_SCOPE
    seed: int = 0

    def check(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise CtdError(f"unknown calibration method {self.method!r}; choose from {', '.join(CALIBRATION_METHODS)}")
        if self.activation_type not in ACTIVATION_TYPES:
            raise CtdError(f"unknown activation type {self.activation_type!r}; choose from {', '.join(ACTIVATION_TYPES)}")
        if self.tensorrt_compatible and self.activation_type != "int8":
            raise CtdError("TensorRT takes only symmetric int8 activations: use activation_type int8, "
                           "or tensorrt_compatible=False for an ONNX Runtime-only model")
        if not self.op_types:
            raise CtdError("no operator types to quantise")
        if self.num_images <= 0:
            raise CtdError(f"num_images must be positive, not {self.num_images}")
        if not 0 < self.percentile <= 100:
            raise CtdError(f"percentile must be in (0, 100], not {self.percentile}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["op_types"] = list(self.op_types)
        return d


# ---------------------------------------------------------------------------- quantisation


@dataclass
class Int8Result:
    """What `quantize_int8` wrote and how."""

    path: Path
    source: Path
    config: Int8Config
    num_calibration_images: int
    quantized_nodes: int
    quantized_op_counts: dict[str, int]
    excluded_nodes: int
    float_biases: int
    onnxruntime_version: str
    calibration_source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"], d["source"] = str(self.path), str(self.source)
        d["config"] = self.config.to_dict()
        return d


def _preprocess(src: Path, dst: Path) -> bool:
    """quant_pre_process; with symbolic shape inference when it works on the graph. True if written."""
    from onnxruntime.quantization import quant_pre_process

    for skip_symbolic in (False, True):
        try:
            quant_pre_process(str(src), str(dst), skip_symbolic_shape=skip_symbolic, skip_optimization=False)
            return True
        except Exception:  # noqa: BLE001 - symbolic shape inference fails on some graphs; retry without
            continue
    return False


def float_biases(model) -> int:
    """Replace DequantizeLinear nodes of INT32 initializers (quantised biases) by FP32 initializers
    holding the dequantised values (TensorRT takes no INT32 DequantizeLinear). Returns how many."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    remove, replace = [], {}
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        q = inits[node.input[0]]
        if q.data_type != onnx.TensorProto.INT32:
            continue
        values = numpy_helper.to_array(q).astype(np.float64)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        zp = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if len(node.input) > 2 and node.input[2] else 0.0
        real = ((values - zp) * scale).astype(np.float32)
        replace[node.output[0]] = numpy_helper.from_array(real, name=node.output[0])
        remove.append(node)
    if not remove:
        return 0
    for node in remove:
        graph.node.remove(node)
    graph.initializer.extend(replace.values())
    used = {t for n in graph.node for t in n.input}
    for t in list(graph.initializer):
        if t.name not in used and t.name not in {o.name for o in graph.output}:
            graph.initializer.remove(t)
    return len(remove)


def grouped_convolutions(model, region: Sequence[str]) -> list[str]:
    """Conv nodes of `region` with group > 1 (depthwise in MobileNets). Their per-channel
    weights have 9 values each and their activations wide ranges: quantised, they moved
    landmarks of a MobileNet student by tens of pixels (docs/int8.md); they are cheap in FP32."""
    inside = set(region)
    out = []
    for n in model.graph.node:
        if n.op_type == "Conv" and n.name in inside:
            if any(a.name == "group" and a.i > 1 for a in n.attribute):
                out.append(n.name)
    return out


def _quantized_ops(model) -> dict[str, int]:
    """Operator types fed by a DequantizeLinear on their weight input (what was quantised)."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    dq_weights = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits}
    counts: dict[str, int] = {}
    for n in graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 1 and n.input[1] in dq_weights:
            counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def _prepared(model: onnx.ModelProto, tmp: Path, config: Int8Config) -> tuple[Path, onnx.ModelProto]:
    """(the file the quantiser reads, its model): `model` with named nodes, through
    quant_pre_process where `config.preprocess` and it succeeds."""
    named = tmp / "named.onnx"
    onnx.save(model, str(named))
    work = named
    if config.preprocess and _preprocess(named, tmp / "pre.onnx"):
        work = tmp / "pre.onnx"
    pre = onnx.load(str(work))
    ensure_node_names(pre.graph)
    onnx.save(pre, str(work))
    return work, pre


def excluded_nodes(pre: onnx.ModelProto, region: Sequence[str], config: Int8Config, src: Path) -> list[str]:
    """Names of the nodes the quantiser must leave FP32: everything outside the network (the
    region found again from the nodes that survived pre-processing), its output layers and,
    with `skip_depthwise`, its grouped convolutions."""
    present = {n.name for n in pre.graph.node}
    seeds = [n for n in region if n in present]
    if not seeds:
        raise CtdError("the network's nodes did not survive pre-processing; retry with preprocess=False", path=src)
    network, _ = network_region(pre, seeds=seeds)
    skipped = set(output_layers(pre, network))
    if config.skip_depthwise:
        skipped |= set(grouped_convolutions(pre, network))
    keep = set(network) - skipped
    return [n.name for n in pre.graph.node if n.name not in keep]


def _op_types(config: Int8Config) -> list[str]:
    """The operator types quantised, and calibrated: `config.op_types`, or for ("all",) every type
    ONNX Runtime's quantiser knows (as `quantize_static` expands an empty list)."""
    if "all" not in config.op_types:
        return list(config.op_types)
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QLinearOpsRegistry) | set(QDQRegistry))


def _takes_ranges() -> bool:
    """Whether this onnxruntime's quantize_static takes precomputed ranges (`calibration_cache_path`)."""
    import inspect

    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def _quantize_static(work: Path, out: Path, samples: Sequence[Sample], input_names: Sequence[str],
                     exclude: Sequence[str], config: Int8Config,
                     on_sample: Callable[[int, int], None] | None = None, threads: int | None = None) -> onnx.ModelProto:
    """ONNX Runtime's static QDQ quantisation of `work` into `out`, calibrated on `samples`
    (`on_sample(done, total)` follows the calibration). Where onnxruntime takes precomputed ranges,
    the calibration runs on a session of ours (`calibration.calibrate`: graph optimisation on,
    `threads`, no spinning), else inside quantize_static."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.method]
    reader = FusedCalibrationReader(samples, input_names, on_sample)
    op_types = _op_types(config)
    if _takes_ranges():
        from onnxruntime.quantization.calibrate import save_tensors_data

        cache = out.parent / "ranges.json"
        save_tensors_data(calibrate(work, reader, config.method, op_types, out.parent, config.percentile, threads), cache)
        calibration: dict[str, Any] = {"calibration_data_reader": None, "calibration_cache_path": str(cache)}
    else:
        calibration = {"calibration_data_reader": as_ort_reader(reader)}
    quantize_static(
        str(work),
        str(out),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=op_types,
        per_channel=config.per_channel,
        reduce_range=config.reduce_range,
        activation_type=QuantType.QInt8 if config.activation_type == "int8" else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude),
        calibrate_method=method,
        extra_options={
            "ActivationSymmetric": config.activation_type == "int8",
            "WeightSymmetric": True,
            "CalibPercentile": config.percentile,
        },
        **calibration,
    )
    return onnx.load(str(out))


def quantize_int8(
    src: str | Path,
    samples: Sequence[Sample],
    dst: str | Path | None = None,
    config: Int8Config | None = None,
    calibration_source: str = "",
    on_sample: Callable[[int, int], None] | None = None,
    threads: int | None = None,
) -> Int8Result:
    """Write the INT8 QDQ variant of the FP32 fused ONNX `src` (default model.int8.onnx beside
    it), atomically, calibrated on `samples` (`on_sample(done, total)` follows the calibration,
    run with `threads` intra-op threads; None: every core);
    `ctd.precision=int8`, details in `ctd.int8`. The work files live in a temporary folder
    beside `dst` (ctd_runtime.atomic.temp_dir), so a killed export's are found and removed."""
    import onnxruntime

    config = config or Int8Config()
    config.check()
    src = Path(src)
    dst = onnx_variant(src, "int8") if dst is None else Path(dst)
    model, meta = load_checked_model(src, "fp32")
    region, how = network_region(model, config.scope)
    samples = list(samples)[: config.num_images]
    with temp_dir(dst.parent, dst.name) as tmp:
        work, pre = _prepared(model, tmp, config)
        exclude = excluded_nodes(pre, region, config, src)
        qmodel = _quantize_static(work, tmp / "int8.onnx", samples, [i.name for i in model.graph.input],
                                  exclude, config, on_sample, threads)
    n_float_biases = float_biases(qmodel) if config.tensorrt_compatible else 0
    counts = _quantized_ops(qmodel)  # after float_biases: a bias DQ is not a quantised operator
    result = Int8Result(
        path=dst,
        source=src,
        config=config,
        num_calibration_images=len(samples),
        quantized_nodes=sum(counts.values()),
        quantized_op_counts=counts,
        excluded_nodes=len(exclude),
        float_biases=n_float_biases,
        onnxruntime_version=onnxruntime.__version__,
        calibration_source=calibration_source,
        extra={"region_method": how},
    )
    _write_int8(qmodel, model, meta, result)
    return result


def _write_int8(qmodel: onnx.ModelProto, source: onnx.ModelProto, meta: Any, result: Int8Result) -> None:
    """Write the quantised model atomically with the source's metadata, `ctd.precision=int8` and
    the quantisation details in `ctd.int8`."""
    details = dict(
        result.config.to_dict(),
        num_calibration_images=result.num_calibration_images,
        calibration_source=result.calibration_source,
        region_method=result.extra["region_method"],
        quantized_op_counts=result.quantized_op_counts,
        excluded_nodes=result.excluded_nodes,
        float_biases=result.float_biases,
        onnxruntime=result.onnxruntime_version,
        source=result.source.name,
    )
    del qmodel.metadata_props[:]
    set_metadata_props(qmodel, read_metadata_props(source))  # ctd.* and any other keys of the source
    write_converted_metadata(qmodel, meta, "int8", "ctd.int8", details)
    onnx.checker.check_model(qmodel)
    with atomic_path(result.path) as tmp_path:
        onnx.save(qmodel, str(tmp_path))


def int8_post_step(config: Int8Config | None = None):
    """An `ExportOptions.post_steps` entry writing model.int8.onnx beside model.onnx, calibrated
    on the run's training images, and reporting its landmark differences on the parity crops."""
    config = config or Int8Config()

    def int8_step(context) -> None:
        from ctd_export.precision_compare import compare_models

        result = context.result
        samples = run_config_samples(context.run, config.num_images, config.seed)
        progress = getattr(context, "progress", None)
        threads = getattr(getattr(context, "options", None), "threads", None)  # ExportOptions.threads
        res = quantize_int8(result.model_path, samples, config=config,
                            calibration_source=f"training split of run {context.run.run_id}",
                            on_sample=None if progress is None else lambda i, n: progress("int8 calibration", i, n),
                            threads=threads)
        parity = parity_samples(context.images, context.crops)
        result.artifacts["int8"] = res.path
        result.reports["int8"] = {
            "quantization": res.to_dict(),
            "onnxruntime_vs_fp32": compare_models(result.model_path, res.path, parity).to_dict(),
        }

    return int8_step
