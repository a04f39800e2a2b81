"""The network region of a fused graph: the nodes FP16 conversion and INT8 quantisation act on,
while the warp, normalisation and decode around them stay FP32.

The region is found in the graph, not guessed from operator types: the nodes the exporter
attributed to the `predictor` module (TorchScript names `/predictor/...`; the dynamo exporter's
`pkg.torch.onnx.name_scopes`), plus every node on a path between two of them. Only a graph
without that record falls back to the weighted layers (Conv/ConvTranspose/Gemm/MatMul with a
constant weight), closed the same way, which would also take a DARK decode's blur convolution.

The graph is walked with onnx-ir (`Node.predecessors` / `successors`); functions take an
`onnx.ModelProto` (names are given to unnamed nodes in place: the quantiser and the block lists go
by name) or an already converted `onnx_ir.Model`.
"""

from __future__ import annotations

import ast
from typing import Any, Callable, Iterable, Sequence

import onnx_ir as ir

from ctd_runtime.errors import CtdError

PREDICTOR_SCOPE = "predictor"
HEAVY_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")
SCOPES_KEY = "pkg.torch.onnx.name_scopes"


def ensure_node_names(graph: Any) -> None:
    """Give every unnamed node of an onnx GraphProto a unique name (`{op_type}_{index}`)."""
    seen = {n.name for n in graph.node if n.name}
    for i, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in seen:
                name += "_"
            node.name = name
            seen.add(name)


def as_ir(model: Any) -> ir.Model:
    """`model` as an onnx-ir Model (an onnx.ModelProto gets its unnamed nodes named first)."""
    if isinstance(model, ir.Model):
        return model
    ensure_node_names(model.graph)
    return ir.from_proto(model)


def node_in_scope(node: ir.Node, scope: str) -> bool | None:
    """True/False when the exporter recorded the node's module, None when it did not."""
    name = node.name or ""
    if name.startswith("/"):  # TorchScript exporter: /predictor/encoder/layer1/Conv
        return name.startswith(f"/{scope}/")
    text = node.metadata_props.get(SCOPES_KEY)
    if text is None:
        return None
    try:
        scopes = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(scopes, (list, tuple)):
        return None
    return any(str(s) == scope or str(s).startswith(scope + ".") for s in scopes)


def _constant_weight(node: ir.Node) -> bool:
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    if weight is None:
        return False
    producer = weight.producer()
    return weight.is_initializer() or (producer is not None and producer.op_type == "Constant")


def _reach(start: Iterable[ir.Node], step: Callable[[ir.Node], Sequence[ir.Node]]) -> set[ir.Node]:
    """Every node reached from `start` by one or more `step`s (successors or predecessors)."""
    seen: set[ir.Node] = set()
    todo = list(start)
    while todo:
        for nxt in step(todo.pop()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _seeds(graph: ir.Graph, scope: str, seeds: Iterable[str] | None) -> tuple[set[ir.Node], str]:
    if seeds is not None:
        wanted = set(seeds)
        return {n for n in graph if n.name in wanted}, "seeds"
    scoped = {n for n in graph if node_in_scope(n, scope)}
    if scoped:
        return scoped, "scope"
    return {n for n in graph if n.op_type in HEAVY_OPS and _constant_weight(n)}, "structure"


def region_nodes(graph: ir.Graph, scope: str = PREDICTOR_SCOPE,
                 seeds: Iterable[str] | None = None) -> tuple[list[ir.Node], str]:
    """(the network's nodes in graph order, how they were found: "scope", "seeds" or
    "structure"). The region is closed: every node on a path between two region nodes is in it,
    and so is a Constant node all of whose consumers are."""
    start, how = _seeds(graph, scope, seeds)
    if not start:
        raise CtdError("no network found in the graph (no predictor scope and no Conv/Gemm with weights)")
    region = start | (_reach(start, ir.Node.successors) & _reach(start, ir.Node.predecessors))
    for node in graph:  # constants used only inside the region travel with it (converted with it)
        users = node.successors()
        if node not in region and node.op_type == "Constant" and not node.inputs and users:
            if all(u in region for u in users):
                region.add(node)
    return [n for n in graph if n in region], how


def network_region(model: Any, scope: str = PREDICTOR_SCOPE,
                   seeds: Iterable[str] | None = None) -> tuple[list[str], str]:
    """`region_nodes` of an onnx.ModelProto (or onnx-ir Model) by node name."""
    nodes, how = region_nodes(as_ir(model).graph, scope, seeds)
    return [str(n.name) for n in nodes], how


def region_boundary(graph: ir.Graph, nodes: Sequence[ir.Node]) -> tuple[list[ir.Value], list[ir.Value]]:
    """(values entering the region that are not initializers, values leaving it: used by a node
    outside or a graph output), each in first-use order."""
    inside = set(nodes)
    entering: dict[ir.Value, None] = {}
    leaving: dict[ir.Value, None] = {}
    for node in nodes:
        for v in node.inputs:
            if v is not None and not v.is_initializer() and v.producer() not in inside:
                entering[v] = None
        for v in node.outputs:
            if v.is_graph_output() or any(use.node not in inside for use in v.uses()):
                leaving[v] = None
    return list(entering), list(leaving)


def output_layers(model: Any, region: Sequence[str], heavy: Sequence[str] = HEAVY_OPS) -> list[str]:
    """The network's last weighted layers: the Conv/ConvTranspose/Gemm/MatMul nodes of `region`
    from which a tensor leaving the region is reached through non-weighted nodes only.

    INT8 keeps them FP32: the quantiser also quantises a quantised Conv's output, which would hand
    the decode heatmaps with 256 levels (ties for argmax, steps for DARK's log)."""
    graph = as_ir(model).graph
    wanted = set(region)
    inside = [n for n in graph if n.name in wanted]
    _, leaving = region_boundary(graph, inside)
    members = set(inside)
    found: set[str] = set()
    seen: set[ir.Node] = set()
    todo = [v.producer() for v in leaving]
    while todo:
        node = todo.pop()
        if node is None or node in seen or node not in members:
            continue
        seen.add(node)
        if node.op_type in heavy:
            found.add(str(node.name))
        else:
            todo.extend(node.predecessors())
    return sorted(found)
