"""FLOPs of an ONNX graph: multiply-accumulates of Conv, ConvTranspose, Gemm and MatMul (the
operators that carry almost all of a landmark network's arithmetic), FLOPs = 2 x MACs.

Shapes come from ONNX shape inference on the graph with its dynamic input dimensions fixed (batch
1, the image at the network's input size); values it cannot follow (the fused graph's warp makes
the network's input shape from data) are read from one ONNX Runtime run on zero inputs.

It lives here, with the onnx package, not in ctd_runtime: `ctd bench` finds `count_macs` through
the `ctd.bench_macs` entry point, and on a station (no onnx) reports the count as unavailable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ctd_runtime.errors import CtdError

COUNTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul")


@dataclass
class FlopCount:
    """MACs per operator type for one image, and the nodes whose shapes were unknown."""

    macs_by_op: dict[str, int] = field(default_factory=dict)
    unknown_nodes: list[str] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return sum(self.macs_by_op.values())

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"macs": self.macs, "flops": self.flops, "gflops": self.flops / 1e9}


def _prod(xs: list[int]) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def node_macs(op: str, inputs: list[list[int] | None], output: list[int] | None, attrs: dict[str, Any]) -> int | None:
    """MACs of one node from its input and output shapes (None when a needed shape is unknown)."""
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        x, w = (inputs[0], inputs[1]) if op != "QLinearConv" else (inputs[0], inputs[3])
        if w is None or output is None:
            return None
        # output [N, Cout, *spatial]; weight [Cout, Cin/groups, *kernel]
        return _prod(output) * _prod(w[1:])
    if op == "ConvTranspose":
        x, w = inputs[0], inputs[1]
        if x is None or w is None:
            return None
        # each input pixel scatters a [Cout/groups, *kernel] patch: N*Cin*spatial_in * (Cout/g)*k
        return _prod(x) * _prod(w[1:])
    if op in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
        a = inputs[0]
        b = inputs[1] if op != "QLinearMatMul" else inputs[3]
        if a is None or b is None or output is None:
            return None
        k = a[-2] if (op == "Gemm" and attrs.get("transA", 0)) else a[-1]
        return _prod(output) * int(k)
    return 0


def _shapes(model: Any) -> dict[str, list[int] | None]:
    """Every value's static shape by name (None where a dimension stays symbolic)."""
    out: dict[str, list[int] | None] = {}
    graph = model.graph
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        dims = vi.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        out[vi.name] = None if (not dims and not vi.type.tensor_type.HasField("shape")) or None in shape else shape
    for init in graph.initializer:
        out[init.name] = list(init.dims)
    return out


def fix_inputs(model: Any, sizes: dict[str, list[int]]) -> None:
    """Set the dynamic dims of the named graph inputs to the given sizes (in place)."""
    for inp in model.graph.input:
        if inp.name in sizes:
            for d, v in zip(inp.type.tensor_type.shape.dim, sizes[inp.name]):
                d.Clear()
                d.dim_value = int(v)


def count_macs(path_or_model: str | Path | Any, input_sizes: dict[str, list[int]] | None = None) -> FlopCount:
    """The MACs of one inference of the graph.

    `input_sizes` fixes dynamic inputs, e.g. {"image": [1, 256, 256, 3], "crop": [1, 2, 3]}."""
    import onnx
    from onnx import helper, shape_inference

    if isinstance(path_or_model, (str, Path)):
        try:
            model = onnx.load(str(path_or_model))
        except Exception as e:  # noqa: BLE001 - onnx raises DecodeError and friends
            raise CtdError(f"cannot read the ONNX graph: {e}", path=path_or_model) from None
    else:
        model = onnx.ModelProto()
        model.CopyFrom(path_or_model)
    fix_inputs(model, input_sizes or {})
    model = shape_inference.infer_shapes(model, data_prop=True)
    shapes = _shapes(model)
    counted = [n for n in _all_nodes(model.graph) if n.op_type in COUNTED_OPS]
    missing = {v for n in counted for v in (n.input[0], n.output[0]) if shapes.get(v) is None}
    if missing and input_sizes:  # e.g. the fused graph's warp: shapes ONNX inference cannot follow
        shapes |= shapes_by_running(model, sorted(missing), input_sizes)
    count = FlopCount()
    for node in counted:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        macs = node_macs(node.op_type, [shapes.get(i) for i in node.input], shapes.get(node.output[0]), attrs)
        if macs is None:
            count.unknown_nodes.append(node.name or node.op_type)
            continue
        count.macs_by_op[node.op_type] = count.macs_by_op.get(node.op_type, 0) + macs
    return count


def shapes_by_running(model: Any, names: list[str], input_sizes: dict[str, list[int]]) -> dict[str, list[int]]:
    """The shapes of values `names` from one ONNX Runtime run on zero inputs of `input_sizes`
    (graph optimisation off, the values added as graph outputs); {} when the run fails."""
    import numpy as np
    import onnx
    from onnx import helper

    from ctd_runtime.backends.ort_session import open_session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in known)
    feeds = {i.name: np.zeros(input_sizes[i.name], helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type))
             for i in probe.graph.input if i.name in input_sizes}
    try:
        session = open_session(probe.SerializeToString(), threads=1, optimization="disable")
        wanted = [o.name for o in session.get_outputs() if o.name in set(names)]
        values = session.run(wanted, feeds)
    except Exception:  # noqa: BLE001 - a graph ORT cannot run leaves the nodes unknown, as reported
        return {}
    return {n: list(v.shape) for n, v in zip(wanted, values)}


def _all_nodes(graph: Any) -> list[Any]:
    """The nodes of a graph and of its subgraphs (If/Loop bodies)."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            if attr.type == attr.GRAPH:
                nodes.extend(_all_nodes(attr.g))
    return nodes
