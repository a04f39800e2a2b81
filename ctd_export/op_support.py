"""The ONNX operators an exported ctd graph may use, and a check that a graph uses only those.

Every operator here is supported by the TensorRT 10 ONNX parser (onnx-tensorrt
docs/operators.md, TensorRT 10.0 to 10.15 tables); the notes say how ctd uses it and which
restriction applies. docs/onnx_operators.md is the same list for people. The check also rejects
patterns TensorRT handles poorly even where the operator itself is listed: TopK, integer
floor-division and modulo on data (Div/Mod on integers, which the exporters emit for `//` and
`%`; the same on shapes, as in a predictor's padding arithmetic, is fine), Where or Xor on int64
index arithmetic, ArgMax over non-float data, dynamic K.
"""

from __future__ import annotations

from typing import Any

# op -> note (restriction as it applies to ctd graphs)
ALLOWED_OPS: dict[str, str] = {
    # input, warp and normalisation
    "Cast": "uint8 image -> float32 (UINT8 only as a network input); bool -> float for masks",
    "Transpose": "NHWC image -> NCHW",
    "Shape": "dynamic H, W of the image for GridSample's normalised coordinates",
    "GridSample": "bilinear, zeros padding, align_corners=0; 4-D input only (TensorRT: FP32/FP16)",
    "Round": "the warped crop rounded to whole intensities like OpenCV's uint8 output",
    # predictor (what ctd's students and the hourglass export to)
    "Conv": "2-D; weights must be initializers",
    "ConvTranspose": "2-D; weights must be initializers",
    "DepthToSpace": "blocksize 2, CRD: the sub-pixel head (--head-op subpixel / subpixel2x2)",
    "BatchNormalization": "inference only (usually folded into Conv by the exporter)",
    "InstanceNormalization": "scale and bias initializers",
    "Relu": "",
    "LeakyRelu": "",
    "PRelu": "",
    "Clip": "ReLU6 in the predictor; DARK's +-0.5 clamp; min/max constants",
    "Sigmoid": "",
    "HardSigmoid": "",
    "HardSwish": "",
    "Tanh": "",
    "Elu": "",
    "Selu": "",
    "Erf": "GELU",
    "Exp": "",
    "Sqrt": "",
    "Pow": "",
    "Reciprocal": "",
    "MaxPool": "2-D; the Indices output is not supported",
    "AveragePool": "2-D; dilations empty or ones",
    "GlobalAveragePool": "",
    "GlobalMaxPool": "",
    "Gemm": "predictor only (coordinates never go through Gemm/MatMul: TF32)",
    "MatMul": "predictor only (coordinates never go through Gemm/MatMul: TF32)",
    "Resize": "modes nearest/linear; half_pixel, pytorch_half_pixel, asymmetric or align_corners; no antialias",
    "Softmax": "",
    "Flatten": "",
    "Split": "",
    "Pad": "constant mode (predictor padding)",
    # decode and coordinates
    "ArgMax": "over float data only, keepdims; the peak of [N, K, h*w] (never TopK)",
    "ReduceMax": "axes constant (attribute in opset 17)",
    "ReduceMin": "axes constant (attribute in opset 17)",
    "ReduceMean": "axes constant",
    "ReduceSum": "axes constant",
    "Gather": "constant float tables indexed by the peak (x = i % w, y = i // w, validity masks)",
    "GatherElements": "neighbours of the peak in the flattened heatmap",
    "GatherND": "table look-ups as the dynamo exporter writes them",
    "Log": "DARK's log of the modulated heatmap",
    "Sign": "quarter offset direction",
    "Abs": "finite test Abs(x) < inf (no IsInf)",
    "Less": "",
    "LessOrEqual": "",
    "Greater": "",
    "GreaterOrEqual": "",
    "Equal": "",
    "And": "bool masks",
    "Or": "bool masks",
    "Not": "bool masks",
    "Where": "float data with bool masks (never on int64 index arithmetic)",
    "Add": "",
    "Sub": "",
    "Mul": "",
    "Div": "float data; integer Div (floor division) only in shape arithmetic",
    "Neg": "",
    "Min": "int64 Min/Max keep the neighbour indices inside the flattened heatmap",
    "Max": "int64 Min/Max keep the neighbour indices inside the flattened heatmap",
    "Floor": "",
    "Concat": "",
    "Reshape": "",
    "Squeeze": "axes constant",
    "Unsqueeze": "axes constant",
    "Slice": "",
    "Expand": "",
    "Constant": "",
    "ConstantOfShape": "",
    "Identity": "",
    "Dropout": "inference (is_training false)",
}

# operators that are refused whatever the types, with the reason
FORBIDDEN_OPS: dict[str, str] = {
    "TopK": "use ArgMax over float data (TopK: float input only in older parsers, K < 3840, sorted=1)",
    "Mod": "integer modulo: use a float coordinate table",
    "Xor": "comes from floor-division sign fixes on int64",
    "BitShift": "not supported by TensorRT",
    "NonZero": "data-dependent shape",
    "Loop": "control flow",
    "If": "control flow",
    "Scan": "control flow",
    "IsInf": "unsupported by TensorRT 8.x parsers; Abs + Less(inf) does the same everywhere",
}

_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_INT_TYPES = {2, 3, 4, 5, 6, 7, 12, 13}  # uint8, int8, uint16, int16, int32, int64, uint32, uint64


def _type_table(model: Any) -> dict[str, int]:
    """Element type of every named value of the (shape-inferred) graph."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # an inference failure is reported through missing types, not here
        inferred = model
    g = inferred.graph
    types: dict[str, int] = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for node in g.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def _data_dependent(graph: Any) -> set[str]:
    """Names of values computed from the graph inputs' data (not only from shapes and constants).

    Shape arithmetic (e.g. `x.shape[2] // 2` in a predictor's padding) is evaluated by TensorRT on
    shape tensors and is harmless; integer arithmetic on data (a peak index) is what to refuse.
    """
    dependent = {vi.name for vi in graph.input}
    for node in graph.node:  # ONNX nodes are topologically sorted
        if node.op_type in ("Shape", "Size"):
            continue
        if any(name in dependent for name in node.input if name):
            dependent.update(name for name in node.output if name)
    return dependent


def check_graph_ops(model: Any, static_outputs: tuple[str, ...] = ("landmarks", "scores")) -> list[str]:
    """Problems of an ONNX model (ModelProto) for TensorRT; an empty list when there are none.

    Checks: operator on ALLOWED_OPS and not FORBIDDEN_OPS, default domain only, ArgMax/ArgMin
    over float data, no Div or Where on integer data computed from the inputs (shape arithmetic
    is fine), GridSample 4-D, Conv weights constant, and dimension 1 (K) of the
    `static_outputs` present in the graph fixed.
    """
    problems: list[str] = []
    g = model.graph
    types = _type_table(model)
    dependent = _data_dependent(g)
    constants = {init.name for init in g.initializer} | {
        n.output[0] for n in g.node if n.op_type == "Constant"
    }
    for i, node in enumerate(g.node):
        label = f"node {i} {node.name or node.op_type!r} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"{label}: custom domain {node.domain!r}")
            continue
        op = node.op_type
        if op in FORBIDDEN_OPS:
            problems.append(f"{label}: {op} is not allowed: {FORBIDDEN_OPS[op]}")
            continue
        if op not in ALLOWED_OPS:
            problems.append(f"{label}: {op} is not on the list of operators (ctd_export/op_support.py)")
            continue
        in_types = [types.get(name) for name in node.input if name]
        out_types = [types.get(name) for name in node.output if name]
        if op in ("ArgMax", "ArgMin") and in_types and in_types[0] not in _FLOAT_TYPES:
            problems.append(f"{label}: {op} over non-float data (type {in_types[0]})")
        on_data = any(name in dependent for name in node.input if name)
        if op == "Div" and on_data and any(t in _INT_TYPES for t in in_types):
            problems.append(f"{label}: integer Div (floor division) on data: use float coordinate tables")
        if op == "Where" and on_data and any(t in _INT_TYPES for t in out_types):
            problems.append(f"{label}: Where on integer data (index arithmetic)")
        if op in ("Conv", "ConvTranspose") and len(node.input) > 1 and node.input[1] not in constants:
            problems.append(f"{label}: weights are not an initializer")
    for vi in g.input:
        if vi.name == "image":
            dims = vi.type.tensor_type.shape.dim
            if len(dims) != 4:
                problems.append(f"input image has rank {len(dims)}, not 4 (GridSample is 4-D only)")
    for vi in g.output:
        if vi.name in static_outputs:
            dims = vi.type.tensor_type.shape.dim
            if len(dims) < 2 or not dims[1].HasField("dim_value"):
                problems.append(f"output {vi.name}: K (dimension 1) is not static")
    return problems


def used_ops(model: Any) -> dict[str, int]:
    """How many nodes of each operator the graph has, sorted by name."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
