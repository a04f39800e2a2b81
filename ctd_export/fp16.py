"""FP16 variant of the fused graph: the network in FP16, the warp, normalisation and decode in FP32,
with explicit Cast nodes where the two meet (what a TensorRT strongly typed build wants).

    image uint8, crop f32 ─ warp + normalise (f32) ─ Cast f16 ─ predictor (f16) ─ Cast f32 ─
    decode + crop affine (f32) ─▶ landmarks f32, scores f32

The network region (`ctd_export.network_region`) is cut out as a model of its own (onnx-ir's
`convenience.extract`), converted with onnxconverter-common (`convert_float_to_float16(
keep_io_types=True)`: it casts at the region's inputs and outputs and knows each operator's
FP32-only inputs), and spliced back in place of the FP32 nodes (onnx-ir: uses rewired, nodes
removed and added, `Graph.sort`). Converting the whole graph with a node block list instead
would also round the FP32 part's constants (mean, scale, crop tables) to FP16 and cast them back.

ONNX Runtime's CPU provider has no FP16 Conv / ConvTranspose kernels on x86: it runs such nodes in
FP32 between Casts it inserts itself. The weights are still rounded to FP16, and so are the
tensors between nodes that keep FP16, so `precision_compare.compare_models` measures the
rounding, not FP16 arithmetic (`ctd_export.torch_half` does that); see docs/tensorrt.md.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import onnx
import onnx_ir as ir

from ctd_export.metadata import load_checked_model, write_converted_metadata
from ctd_export.network_region import PREDICTOR_SCOPE, as_ir, region_boundary, region_nodes
from ctd_runtime.artifacts import onnx_variant
from ctd_runtime.atomic import atomic_path
from ctd_runtime.errors import CtdError

FP16_PREFIX = "ctd_fp16/"
_FLOAT16, _FLOAT = 10, 1  # onnx.TensorProto data types, the Cast `to` values


@dataclass
class Fp16Result:
    """What `convert_fp16` wrote and how."""

    path: Path
    source: Path
    region_method: str
    network_nodes: int
    other_nodes: int
    casts_to_fp16: int
    casts_to_fp32: int
    converter: str
    blocked_ops: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"], d["source"] = str(self.path), str(self.source)
        return d


def _typed_ir(model: onnx.ModelProto) -> ir.Model:
    """An onnx-ir copy of `model` whose values carry shape inference's types (the converter needs
    the region's inputs and outputs typed); the proto is not modified."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - fall back to the types the file declares
        inferred = onnx.ModelProto.FromString(model.SerializeToString())
    return as_ir(inferred)


def _region_model(model: ir.Model, entering: list[ir.Value], leaving: list[ir.Value]) -> onnx.ModelProto:
    """The region between `entering` and `leaving` as a model of its own (a copy)."""
    for values, where in ((entering, "entering"), (leaving, "leaving")):
        for v in values:
            if v.type is None:
                raise CtdError(f"cannot type tensor {v.name!r} {where} the network (shape inference failed)")
    sub = ir.convenience.extract(model.graph, entering, leaving)
    sub.name = "ctd_network"
    return ir.to_proto(ir.Model(sub, ir_version=model.ir_version, functions=list(model.functions.values())))


def _to_fp16(sub: onnx.ModelProto, blocked: list[str]) -> ir.Model:
    """The region converted by onnxconverter-common, as onnx-ir."""
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        # one warning per weight below FP16's smallest normal value: thousands of lines that
        # say only that tiny weights round to +-1e-7 (harmless; the accuracy check measures it)
        warnings.simplefilter("ignore", UserWarning)
        sub16 = float16.convert_float_to_float16(sub, keep_io_types=True, op_block_list=blocked,
                                                 disable_shape_infer=False)
    return ir.from_proto(sub16)


def _prefix_new_names(graph: ir.Graph, before: onnx.ModelProto) -> None:
    """Give the converter's new nodes and tensors the FP16_PREFIX, so they cannot collide with
    names outside the region (the region's inputs and outputs keep theirs)."""
    old_nodes = {n.name for n in before.graph.node}
    old_values = {t for n in before.graph.node for t in list(n.input) + list(n.output)}
    old_values |= {t.name for t in before.graph.initializer}
    old_values |= {v.name for v in list(graph.inputs) + list(graph.outputs)}

    def fresh(name: str | None) -> bool:
        return bool(name) and name not in old_values and not name.startswith(FP16_PREFIX)

    for node in graph:
        if node.name not in old_nodes:
            node.name = FP16_PREFIX + (node.name or node.op_type)
        for v in node.outputs:
            if fresh(v.name):
                v.name = FP16_PREFIX + v.name
    for name, v in list(graph.initializers.items()):
        if fresh(name):
            del graph.initializers[name]
            v.name = FP16_PREFIX + name
            graph.register_initializer(v)


def _splice(graph: ir.Graph, old: list[ir.Node], entering: list[ir.Value], leaving: list[ir.Value],
            sub: ir.Graph) -> None:
    """Replace the nodes `old` of `graph` by the nodes of `sub`, whose inputs and outputs are
    `entering` and `leaving` by name; FP32 weights only `old` used go, the FP16 ones come."""
    outer = {v.name: v for v in entering}
    for v in sub.inputs:
        v.replace_all_uses_with(outer[v.name])
    produced = {v.name: v for v in sub.outputs}
    new_nodes, weights = list(sub), list(sub.initializers.values())
    sub.outputs.clear()
    sub.initializers.clear()
    sub.remove(new_nodes)
    for v in leaving:
        v.replace_all_uses_with(produced[v.name], replace_graph_outputs=True)
    graph.remove(old, safe=True)
    for name, v in list(graph.initializers.items()):
        if not v.uses() and not v.is_graph_output():
            del graph.initializers[name]
    for v in weights:
        if v.name in graph.initializers:  # an FP32 weight the outer part shares: the region gets its own
            v.name = FP16_PREFIX + v.name
        graph.register_initializer(v)
    graph.extend(new_nodes)
    graph.sort()


def _count_casts(graph: ir.Graph, to: int) -> int:
    return sum(1 for n in graph if n.op_type == "Cast" and n.attributes["to"].as_int() == to)


def _with_fresh_shapes(model: ir.Model) -> onnx.ModelProto:
    """The spliced model as a proto, its value_info inferred anew (the old types are stale)."""
    proto = ir.to_proto(model)
    del proto.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(proto, strict_mode=False)
    except Exception:  # noqa: BLE001 - value_info is optional
        return proto


def convert_fp16_model(model: onnx.ModelProto, scope: str = PREDICTOR_SCOPE,
                       op_block_list: Sequence[str] | None = None) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """(FP16 model, Fp16Result fields) from a loaded FP32 fused model; the input is not modified."""
    from onnxconverter_common import __version__ as occ_version
    from onnxconverter_common import float16

    work = _typed_ir(model)
    nodes, how = region_nodes(work.graph, scope)
    entering, leaving = region_boundary(work.graph, nodes)
    region = _region_model(work, entering, leaving)
    blocked = list(op_block_list) if op_block_list is not None else list(float16.DEFAULT_OP_BLOCK_LIST)
    sub16 = _to_fp16(region, blocked).graph
    _prefix_new_names(sub16, region)
    info = dict(
        region_method=how,
        network_nodes=len(nodes),
        other_nodes=work.graph.num_nodes() - len(nodes),
        casts_to_fp16=_count_casts(sub16, _FLOAT16),
        casts_to_fp32=_count_casts(sub16, _FLOAT),
        converter=f"onnxconverter-common {occ_version}",
        blocked_ops=sorted({n.op_type for n in nodes if n.op_type in set(blocked)}),
    )
    _splice(work.graph, nodes, entering, leaving, sub16)
    return _with_fresh_shapes(work), info


def convert_fp16(
    src: str | Path,
    dst: str | Path | None = None,
    scope: str = PREDICTOR_SCOPE,
    op_block_list: Sequence[str] | None = None,
) -> Fp16Result:
    """Write the FP16 variant of the FP32 fused ONNX `src` (default: model.fp16.onnx beside it),
    atomically, with `ctd.precision=fp16` and the conversion details in `ctd.fp16`."""
    src = Path(src)
    dst = onnx_variant(src, "fp16") if dst is None else Path(dst)
    model, meta = load_checked_model(src, "fp32")
    fp16_model, info = convert_fp16_model(model, scope=scope, op_block_list=op_block_list)
    write_converted_metadata(fp16_model, meta, "fp16", "ctd.fp16", dict(info, source=src.name, scope=scope))
    onnx.checker.check_model(fp16_model)
    with atomic_path(dst) as tmp:
        onnx.save(fp16_model, str(tmp))
    return Fp16Result(path=dst, source=src, **info)


def fp16_post_step(context: Any) -> None:
    """`ExportOptions.post_steps` entry: write model.fp16.onnx beside model.onnx and report its
    landmark differences on the parity crops, against model.onnx in ONNX Runtime and (FP16
    arithmetic) the half-precision predictor in torch against the FP32 one."""
    from ctd_export.calibration import parity_samples
    from ctd_export.onnx_export import build_fused_model
    from ctd_export.precision_compare import compare_models, landmark_differences
    from ctd_export.torch_half import half_precision_fused, run_torch

    result = context.result
    res = convert_fp16(result.model_path)
    samples = parity_samples(context.images, context.crops)
    ort_cmp = compare_models(result.model_path, res.path, samples)
    fused = build_fused_model(context.run, result.metadata.decode)
    torch_cmp = landmark_differences(run_torch(fused, samples), run_torch(half_precision_fused(fused), samples))
    result.artifacts["fp16"] = res.path
    result.reports["fp16"] = {
        "conversion": res.to_dict(),
        "onnxruntime_vs_fp32": ort_cmp.to_dict(),
        "torch_half_vs_fp32": torch_cmp.to_dict(),
    }
