"""Reader of the TensorFlow.js *graph-model* format, without TensorFlow.

A graph model is a JSON file (``format: "graph-model"``) holding a TensorFlow GraphDef written as
JSON (``modelTopology.node``) and a ``weightsManifest``: a list of groups, each naming its shard
files (``paths``, relative to the JSON) and its weight entries (``name``, ``shape``, ``dtype`` and
an optional ``quantization``). The values of a group are stored back to back, in manifest order,
little-endian, with no header or padding, in the concatenation of the group's shards.

``read_graph_model(path)`` returns the nodes (string attributes base64-decoded, integer lists
parsed) and a dict weight name -> numpy array. Every problem is a ``CtdError`` naming the file.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctd_runtime.errors import CtdError

# storage dtype -> (numpy dtype, bytes per element)
_PLAIN_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "int32": np.dtype("<i4"),
    "bool": np.dtype("u1"),
}
_QUANT_DTYPES: dict[str, np.dtype] = {
    "float16": np.dtype("<f2"),
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
}


@dataclass(frozen=True)
class GraphNode:
    """One GraphDef node: attributes decoded (strings from base64, ints from their strings)."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: dict[str, Any]


@dataclass(frozen=True)
class WeightSpec:
    """One manifest entry as stored: name, shape, dtype, optional quantization, shard bytes."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    quantization: dict[str, Any] | None
    nbytes: int


@dataclass
class GraphModel:
    """A parsed graph model: its nodes in file order, weights by name and the manifest."""

    path: Path
    nodes: list[GraphNode]
    weights: dict[str, np.ndarray]
    manifest: list[WeightSpec]
    signature: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def node(self, name: str) -> GraphNode:
        for n in self.nodes:
            if n.name == name:
                return n
        raise CtdError(f"the graph has no node {name!r}", path=self.path)

    def nodes_by_op(self, op: str) -> list[GraphNode]:
        return [n for n in self.nodes if n.op == op]

    def consumers(self, name: str) -> list[GraphNode]:
        """The nodes that take `name` (output 0) as one of their inputs."""
        return [n for n in self.nodes if name in n.inputs or f"{name}:0" in n.inputs]


# ---------------------------------------------------------------------------------- attributes

def _b64(s: str, path: Path, where: str) -> str:
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise CtdError(f"{where}: string attribute {s!r} is not base64 ({e})", path=path) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _shape(d: dict[str, Any] | None) -> list[int] | None:
    """TensorShapeProto as JSON -> list of ints ([] = scalar), None = unknown rank."""
    if d is None:
        return []
    if d.get("unknownRank"):
        return None
    return [int(dim.get("size", -1)) for dim in d.get("dim", [])]


def _decode_value(v: Any, path: Path, where: str) -> Any:
    """One AttrValue (JSON form) -> a Python value."""
    if not isinstance(v, dict):
        return v
    if "list" in v:
        lst = v["list"] or {}
        out: list[Any] = []
        for key, items in lst.items():
            for item in items:
                out.append(_decode_value({key: item}, path, where))
        return out
    if "s" in v:
        return _b64(v["s"], path, where)
    if "i" in v:
        return int(v["i"])
    if "f" in v:
        return float(v["f"])
    if "b" in v:
        return bool(v["b"])
    if "type" in v:
        return str(v["type"])
    if "shape" in v:
        return _shape(v["shape"])
    if "tensor" in v:
        t = v["tensor"] or {}
        return {"dtype": t.get("dtype"), "shape": _shape(t.get("tensorShape"))}
    if "func" in v:
        return v["func"]
    return v


def _parse_node(d: Any, path: Path, index: int) -> GraphNode:
    if not isinstance(d, dict) or "name" not in d or "op" not in d:
        raise CtdError(f"modelTopology.node[{index}] has no name or op", path=path)
    name = str(d["name"])
    attrs = {k: _decode_value(v, path, f"node {name!r} attr {k!r}") for k, v in (d.get("attr") or {}).items()}
    return GraphNode(name=name, op=str(d["op"]), inputs=tuple(str(i) for i in d.get("input", [])), attrs=attrs)


# ---------------------------------------------------------------------------------- weights

def _weight_spec(e: Any, path: Path) -> WeightSpec:
    if not isinstance(e, dict) or "name" not in e or "shape" not in e or "dtype" not in e:
        raise CtdError(f"weightsManifest entry {e!r} lacks name, shape or dtype", path=path)
    name = str(e["name"])
    try:
        shape = tuple(int(s) for s in e["shape"])
    except (TypeError, ValueError):
        raise CtdError(f"weight {name!r}: shape {e['shape']!r} is not a list of integers", path=path) from None
    if any(s < 0 for s in shape):
        raise CtdError(f"weight {name!r}: negative size in shape {list(shape)}", path=path)
    dtype = str(e["dtype"])
    q = e.get("quantization")
    count = math.prod(shape)
    if q is not None:
        qd = str(q.get("dtype"))
        if qd not in _QUANT_DTYPES:
            raise CtdError(
                f"weight {name!r}: unknown quantization dtype {qd!r} (known: {', '.join(_QUANT_DTYPES)})",
                path=path,
            )
        if qd in ("uint8", "uint16") and ("scale" not in q or "min" not in q):
            raise CtdError(f"weight {name!r}: {qd} quantization without scale and min", path=path)
        if qd == "float16" and dtype != "float32":
            raise CtdError(f"weight {name!r}: float16 quantization of a {dtype} weight", path=path)
        if dtype not in ("float32", "int32"):
            raise CtdError(f"weight {name!r}: unknown dtype {dtype!r} for a quantized weight", path=path)
        nbytes = count * _QUANT_DTYPES[qd].itemsize
    else:
        if dtype not in _PLAIN_DTYPES:
            raise CtdError(
                f"weight {name!r}: unknown dtype {dtype!r} (known: {', '.join(_PLAIN_DTYPES)})", path=path
            )
        nbytes = count * _PLAIN_DTYPES[dtype].itemsize
    return WeightSpec(name, shape, dtype, dict(q) if q is not None else None, nbytes)


def _decode_weight(spec: WeightSpec, buf: bytes) -> np.ndarray:
    q = spec.quantization
    if q is None:
        dt = _PLAIN_DTYPES[spec.dtype]
        arr = np.frombuffer(buf, dtype=dt)
        arr = arr.astype(np.bool_) if spec.dtype == "bool" else arr.astype(dt.newbyteorder("="))
    else:
        qd = str(q["dtype"])
        raw = np.frombuffer(buf, dtype=_QUANT_DTYPES[qd])
        if qd == "float16":
            arr = raw.astype(np.float32)
        else:
            # TF.js: value = q * scale + min (JavaScript doubles, stored as float32 / rounded int32)
            val = raw.astype(np.float64) * float(q["scale"]) + float(q["min"])
            arr = np.floor(val + 0.5).astype(np.int32) if spec.dtype == "int32" else val.astype(np.float32)
    return arr.reshape(spec.shape).copy()


def _read_group(group: Any, json_path: Path, gi: int) -> tuple[list[WeightSpec], dict[str, np.ndarray]]:
    if not isinstance(group, dict) or not isinstance(group.get("paths"), list) or not isinstance(
        group.get("weights"), list
    ):
        raise CtdError(f"weightsManifest[{gi}] needs a 'paths' list and a 'weights' list", path=json_path)
    specs = [_weight_spec(e, json_path) for e in group["weights"]]
    shards = [json_path.parent / str(p) for p in group["paths"]]
    expected = sum(s.nbytes for s in specs)
    data = bytearray()
    for shard in shards:
        if not shard.is_file():
            raise CtdError(
                f"weight shard not found (named by the manifest of {json_path.name}; it must lie next to it)",
                path=shard,
            )
        data += shard.read_bytes()
    if len(data) != expected:
        if len(shards) == 1:
            raise CtdError(f"{expected} bytes expected by the manifest, file has {len(data)}", path=shards[0])
        names = ", ".join(s.name for s in shards)
        raise CtdError(
            f"shards {names}: {expected} bytes expected by the manifest, the files have {len(data)} together",
            path=json_path,
        )
    out: dict[str, np.ndarray] = {}
    offset = 0
    mv = memoryview(bytes(data))
    for s in specs:
        out[s.name] = _decode_weight(s, mv[offset : offset + s.nbytes])
        offset += s.nbytes
    return specs, out


# ---------------------------------------------------------------------------------- entry point

def read_graph_model(path: str | Path) -> GraphModel:
    """Parse a TF.js graph model (JSON + shards) into nodes and numpy weights."""
    path = Path(path)
    if not path.is_file():
        raise CtdError("TF.js graph-model JSON not found", path=path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CtdError(f"not a JSON file ({e})", path=path) from None
    if not isinstance(doc, dict):
        raise CtdError("not a TF.js graph model (the JSON is not an object)", path=path)
    topo = doc.get("modelTopology")
    fmt = doc.get("format")
    if fmt is not None and fmt != "graph-model":
        raise CtdError(f"not a TF.js graph model (format is {fmt!r}, expected 'graph-model')", path=path)
    if not isinstance(topo, dict) or not isinstance(topo.get("node"), list):
        raise CtdError("not a TF.js graph model (no modelTopology.node list)", path=path)
    manifest = doc.get("weightsManifest")
    if not isinstance(manifest, list):
        raise CtdError("not a TF.js graph model (no weightsManifest list)", path=path)

    nodes = [_parse_node(n, path, i) for i, n in enumerate(topo["node"])]
    seen: set[str] = set()
    for n in nodes:
        if n.name in seen:
            raise CtdError(f"node name {n.name!r} occurs twice in the graph", path=path)
        seen.add(n.name)

    specs: list[WeightSpec] = []
    weights: dict[str, np.ndarray] = {}
    for gi, group in enumerate(manifest):
        g_specs, g_weights = _read_group(group, path, gi)
        for name in g_weights:
            if name in weights:
                raise CtdError(f"weight {name!r} occurs twice in the manifest", path=path)
        specs += g_specs
        weights.update(g_weights)

    # the manifest must agree with the graph's own Const nodes (shape given in the node's value)
    by_name = {n.name: n for n in nodes}
    for s in specs:
        node = by_name.get(s.name)
        if node is None or node.op != "Const":
            continue
        value = node.attrs.get("value")
        g_shape = value.get("shape") if isinstance(value, dict) else None
        if g_shape is not None and tuple(g_shape) != s.shape:
            raise CtdError(
                f"weight {s.name!r}: the manifest says shape {list(s.shape)}, the graph's Const node says {g_shape}",
                path=path,
            )

    meta = {k: v for k, v in doc.items() if k not in ("modelTopology", "weightsManifest", "signature")}
    return GraphModel(
        path=path, nodes=nodes, weights=weights, manifest=specs,
        signature=doc.get("signature") or {}, metadata=meta,
    )
