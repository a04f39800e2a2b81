"""FP16 variant of the fused graph: the network in FP16, the warp, normalisation and decode in FP32,
with explicit Cast nodes where the two meet (what a TensorRT strongly typed build wants).

    image uint8, crop f32 ─ warp + normalise (f32) ─ Cast f16 ─ predictor (f16) ─ Cast f32 ─
    decode + crop affine (f32) ─▶ landmarks f32, scores f32

The network region is found in the graph, not guessed from operator types: the nodes the exporter
attributed to the `predictor` module (TorchScript names `/predictor/...`; the dynamo exporter's
`pkg.torch.onnx.name_scopes`), plus every node on a path between two of them. Only a graph without
that information falls back to the nodes between the first and last Conv/ConvTranspose/Gemm, which
would also take a DARK decode's blur convolution into FP16.

The region is cut out as a model of its own, converted with onnxconverter-common
(`convert_float_to_float16(keep_io_types=True)`: it casts at the region's inputs and outputs and
knows each operator's FP32-only inputs), and spliced back. Converting the whole graph with a
node block list instead would also round the FP32 part's constants (mean, scale, crop tables) to
FP16 and cast them back.

ONNX Runtime's CPU provider has no FP16 Conv / ConvTranspose kernels on x86: it runs such nodes in
FP32 between Casts it inserts itself. The weights are still rounded to FP16, and so are the
tensors between nodes that keep FP16, so `compare_models` measures the rounding, not FP16
arithmetic; see docs/tensorrt.md for what that does and does not cover.
"""

from __future__ import annotations

import ast
import json
import warnings
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ctd_runtime.atomic import atomic_path
from ctd_runtime.errors import CtdError

PREDICTOR_SCOPE = "predictor"
HEAVY_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FP16_PREFIX = "ctd_fp16/"


# ---------------------------------------------------------------------------- graph helpers


def _onnx():
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is in the train extra
        raise CtdError("the onnx package is needed: pip install 'ctd[train]'") from None
    return onnx


def ensure_node_names(graph) -> None:
    """Give every unnamed node a unique name (the quantiser and the block lists go by name)."""
    seen = {n.name for n in graph.node if n.name}
    for i, node in enumerate(graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in seen:
                name += "_"
            node.name = name
            seen.add(name)


def _scopes(node) -> list[str] | None:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                value = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            return [str(v) for v in value] if isinstance(value, (list, tuple)) else None
    return None


def node_in_scope(node, scope: str) -> bool | None:
    """True/False when the exporter recorded the node's module, None when it did not."""
    if node.name.startswith("/"):  # TorchScript exporter: /predictor/encoder/layer1/Conv
        return node.name.startswith(f"/{scope}/")
    scopes = _scopes(node)
    if scopes is None:
        return None
    return any(s == scope or s.startswith(scope + ".") for s in scopes)


def _edges(graph) -> tuple[list[set[int]], list[set[int]]]:
    """Successor and predecessor node indices of every node (main graph only)."""
    producer: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for t in node.output:
            if t:
                producer[t] = i
    succ: list[set[int]] = [set() for _ in graph.node]
    pred: list[set[int]] = [set() for _ in graph.node]
    for j, node in enumerate(graph.node):
        for t in node.input:
            i = producer.get(t)
            if i is not None and i != j:
                succ[i].add(j)
                pred[j].add(i)
    return succ, pred


def _reach(start: Iterable[int], nbrs: list[set[int]]) -> set[int]:
    seen: set[int] = set()
    todo = deque(start)
    while todo:
        i = todo.popleft()
        for j in nbrs[i]:
            if j not in seen:
                seen.add(j)
                todo.append(j)
    return seen


def _has_constant_weight(graph, node, constants: set[str]) -> bool:
    return len(node.input) > 1 and node.input[1] in constants


def network_region(model, scope: str = PREDICTOR_SCOPE, seeds: Iterable[str] | None = None) -> tuple[list[str], str]:
    """(names of the network's nodes in graph order, how they were found: "scope", "seeds" or
    "structure"). The region is closed: every node on a path between two region nodes is in it,
    and so is a Constant node all of whose consumers are."""
    graph = model.graph
    ensure_node_names(graph)
    nodes = list(graph.node)
    if seeds is not None:
        wanted = set(seeds)
        seed_idx = {i for i, n in enumerate(nodes) if n.name in wanted}
        how = "seeds"
    else:
        flags = [node_in_scope(n, scope) for n in nodes]
        seed_idx = {i for i, f in enumerate(flags) if f}
        how = "scope"
        if not seed_idx:
            constants = {t.name for t in graph.initializer}
            constants |= {o for n in nodes if n.op_type == "Constant" for o in n.output}
            seed_idx = {
                i for i, n in enumerate(nodes) if n.op_type in HEAVY_OPS and _has_constant_weight(graph, n, constants)
            }
            how = "structure"
    if not seed_idx:
        raise CtdError("no network found in the graph (no predictor scope and no Conv/Gemm with weights)")
    succ, pred = _edges(graph)
    region = seed_idx | (_reach(seed_idx, succ) & _reach(seed_idx, pred))
    # constants used only inside the region travel with it (and are converted with it)
    for i, n in enumerate(nodes):
        if i not in region and not n.input and n.op_type == "Constant" and succ[i] and succ[i] <= region:
            region.add(i)
    return [nodes[i].name for i in sorted(region)], how


def topological_sort(graph) -> None:
    """Reorder graph.node topologically, keeping the given order where it is already valid."""
    nodes = list(graph.node)
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    producer = {t: k for k, n in enumerate(nodes) for t in n.output if t}
    waiting = [sum(1 for t in set(n.input) if t not in available and t in producer) for n in nodes]
    consumers: dict[int, list[int]] = {}
    for k, n in enumerate(nodes):
        for t in set(n.input):
            if t not in available and t in producer:
                consumers.setdefault(producer[t], []).append(k)
    import heapq

    ready = [k for k, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        k = heapq.heappop(ready)
        order.append(k)
        for c in consumers.get(k, ()):
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, c)
    if len(order) != len(nodes):
        raise CtdError("the graph has a cycle or a tensor without a producer; cannot sort it")
    del graph.node[:]
    graph.node.extend(nodes[k] for k in order)


# ---------------------------------------------------------------------------- metadata


def read_metadata_props(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def set_metadata_props(model, updates: dict[str, str]) -> None:
    """Set (or replace) metadata_props entries, keeping the others in order."""
    props = {p.key: p.value for p in model.metadata_props}
    props.update({k: str(v) for k, v in updates.items()})
    del model.metadata_props[:]
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)


def source_metadata(model, path: str | Path, expected_precision: str = "fp32"):
    """The model's checked `ctd.*` metadata (CtdError naming the file when it has none, or when it
    is not of `expected_precision`)."""
    from ctd_export.metadata import get_metadata

    meta = get_metadata(model, where=path)
    if meta.precision != expected_precision:
        raise CtdError(f"expected an {expected_precision.upper()} model, this one has ctd.precision={meta.precision}",
                       path=path)
    return meta


def write_converted_metadata(model, meta, precision: str, details_key: str, details: dict[str, Any]) -> None:
    """`meta` with the new precision, plus the conversion details as JSON under `details_key`."""
    from ctd_export.metadata import set_metadata, with_precision

    set_metadata(model, with_precision(meta, precision))
    set_metadata_props(model, {details_key: json.dumps(details, sort_keys=True)})


# ---------------------------------------------------------------------------- conversion


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


def _value_infos(model) -> dict[str, Any]:
    onnx = _onnx()
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - fall back to what the file declares
        inferred = model
    g = inferred.graph
    return {v.name: v for v in list(g.value_info) + list(g.input) + list(g.output)}


def _float_tensor(vi) -> bool:
    return vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type == 1  # FLOAT


def convert_fp16_model(model, scope: str = PREDICTOR_SCOPE, op_block_list: Sequence[str] | None = None):
    """(FP16 model, Fp16Result fields) from a loaded FP32 fused model; the input is not modified."""
    onnx = _onnx()
    from onnx import helper
    from onnxconverter_common import __version__ as occ_version
    from onnxconverter_common import float16

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    ensure_node_names(graph)
    names, how = network_region(model, scope)
    in_region = set(names)
    region_nodes = [n for n in graph.node if n.name in in_region]
    outer_nodes = [n for n in graph.node if n.name not in in_region]
    vis = _value_infos(model)
    inits = {t.name: t for t in graph.initializer}

    produced = {t for n in region_nodes for t in n.output if t}
    outer_uses = {t for n in outer_nodes for t in n.input} | {o.name for o in graph.output}
    region_uses: list[str] = []
    for n in region_nodes:
        for t in n.input:
            if t and t not in produced and t not in region_uses:
                region_uses.append(t)
    sub_inputs, sub_inits, renamed_shared = [], [], {}
    for t in region_uses:
        if t in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[t])
            if t in outer_uses:  # shared with the FP32 part: the region gets its own copy
                copy.name = FP16_PREFIX + t
                renamed_shared[t] = copy.name
            sub_inits.append(copy)
        elif t in vis:
            sub_inputs.append(vis[t])
        else:
            raise CtdError(f"cannot type tensor {t!r} entering the network (shape inference failed)")
    sub_outputs = []
    for n in region_nodes:
        for t in n.output:
            if t and t in outer_uses:
                if t not in vis:
                    raise CtdError(f"cannot type tensor {t!r} leaving the network (shape inference failed)")
                sub_outputs.append(vis[t])
    if renamed_shared:
        for n in region_nodes:
            for k, t in enumerate(n.input):
                if t in renamed_shared:
                    n.input[k] = renamed_shared[t]
    sub_graph = helper.make_graph(region_nodes, "ctd_network", sub_inputs, sub_outputs, sub_inits)
    sub = helper.make_model(sub_graph, opset_imports=list(model.opset_import))
    sub.ir_version = model.ir_version
    sub.functions.extend(model.functions)
    before = {t for n in sub.graph.node for t in list(n.input) + list(n.output)} | {t.name for t in sub_inits}
    before_nodes = {n.name for n in sub.graph.node}
    blocked = list(op_block_list) if op_block_list is not None else list(float16.DEFAULT_OP_BLOCK_LIST)
    with warnings.catch_warnings():
        # one warning per weight below FP16's smallest normal value: thousands of lines that
        # say only that tiny weights round to +-1e-7 (harmless; the accuracy check measures it)
        warnings.simplefilter("ignore", UserWarning)
        sub16 = float16.convert_float_to_float16(
            sub, keep_io_types=True, op_block_list=blocked, disable_shape_infer=False
        )
    # the converter's new tensor and node names get a prefix, so they cannot collide outside
    keep = {v.name for v in sub_inputs} | {v.name for v in sub_outputs}
    rename = {}
    for n in sub16.graph.node:
        for t in list(n.input) + list(n.output):
            if t and t not in before and t not in keep and not t.startswith(FP16_PREFIX):
                rename[t] = FP16_PREFIX + t
    for n in sub16.graph.node:
        if n.name not in before_nodes:
            n.name = FP16_PREFIX + n.name
        for k, t in enumerate(n.input):
            n.input[k] = rename.get(t, t)
        for k, t in enumerate(n.output):
            n.output[k] = rename.get(t, t)
    for t in sub16.graph.initializer:
        t.name = rename.get(t.name, t.name)

    used_outside = {t for n in outer_nodes for t in n.input}
    kept_inits = [t for t in graph.initializer if t.name in used_outside or t.name in {o.name for o in graph.output}]
    del graph.node[:]
    graph.node.extend(outer_nodes)
    graph.node.extend(sub16.graph.node)
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    graph.initializer.extend(sub16.graph.initializer)
    del graph.value_info[:]
    topological_sort(graph)
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - value_info is optional
        pass

    casts = [n for n in sub16.graph.node if n.op_type == "Cast"]
    to16 = sum(1 for n in casts if any(a.name == "to" and a.i == 10 for a in n.attribute))
    to32 = sum(1 for n in casts if any(a.name == "to" and a.i == 1 for a in n.attribute))
    info = dict(
        region_method=how,
        network_nodes=len(region_nodes),
        other_nodes=len(outer_nodes),
        casts_to_fp16=to16,
        casts_to_fp32=to32,
        converter=f"onnxconverter-common {occ_version}",
        blocked_ops=sorted({n.op_type for n in region_nodes if n.op_type in set(blocked)}),
    )
    return model, info


def variant_path(fp32_path: str | Path, precision: str) -> Path:
    """model.onnx -> model.<precision>.onnx (next to it)."""
    p = Path(fp32_path)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(f"{stem}.{precision}.onnx")


def default_fp16_path(fp32_path: str | Path) -> Path:
    return variant_path(fp32_path, "fp16")


def load_fp32_source(src: Path):
    """(onnx module, the FP32 fused model at `src`, its checked ctd metadata): the common start of
    every reduced-precision conversion."""
    onnx = _onnx()
    if not src.is_file():
        raise CtdError("ONNX file not found", path=src)
    model = onnx.load(str(src))
    return onnx, model, source_metadata(model, src)


def convert_fp16(
    src: str | Path,
    dst: str | Path | None = None,
    scope: str = PREDICTOR_SCOPE,
    op_block_list: Sequence[str] | None = None,
) -> Fp16Result:
    """Write the FP16 variant of the FP32 fused ONNX `src` (default: model.fp16.onnx beside it),
    atomically, with `ctd.precision=fp16` and the conversion details in `ctd.fp16`."""
    src = Path(src)
    dst = default_fp16_path(src) if dst is None else Path(dst)
    onnx, model, meta = load_fp32_source(src)
    fp16_model, info = convert_fp16_model(model, scope=scope, op_block_list=op_block_list)
    write_converted_metadata(fp16_model, meta, "fp16", "ctd.fp16", dict(info, source=src.name, scope=scope))
    onnx.checker.check_model(fp16_model)
    with atomic_path(dst) as tmp:
        onnx.save(fp16_model, str(tmp))
    return Fp16Result(path=dst, source=src, **info)


# ---------------------------------------------------------------------------- accuracy


@dataclass
class PrecisionComparison:
    """Landmark and score differences of a reduced-precision model against its FP32 reference,
    over the same inputs; ME in source px against ground truth when it was given."""

    n_images: int
    n_landmarks: int
    px_mean: float
    px_median: float
    px_p95: float
    px_max: float
    score_max_abs: float
    me_reference: float | None = None
    me_candidate: float | None = None

    @property
    def me_change(self) -> float | None:
        if self.me_reference is None or self.me_candidate is None:
            return None
        return self.me_candidate - self.me_reference

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["me_change"] = self.me_change
        return d


def landmark_differences(
    ref: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    gt: np.ndarray | None = None,
) -> PrecisionComparison:
    """Compare (landmarks [N,K,2], scores [N,K]) of two models; `gt` [N,K,2] source px."""
    lr, sr = (np.asarray(a, np.float64) for a in ref)
    lt, st = (np.asarray(a, np.float64) for a in test)
    d = np.linalg.norm(lt - lr, axis=-1).ravel()
    me_r = me_t = None
    if gt is not None:
        g = np.asarray(gt, np.float64)
        me_r = float(np.linalg.norm(lr - g, axis=-1).mean())
        me_t = float(np.linalg.norm(lt - g, axis=-1).mean())
    return PrecisionComparison(
        n_images=int(lr.shape[0]),
        n_landmarks=int(lr.shape[1]),
        px_mean=float(d.mean()),
        px_median=float(np.median(d)),
        px_p95=float(np.percentile(d, 95)),
        px_max=float(d.max()),
        score_max_abs=float(np.abs(st - sr).max()),
        me_reference=me_r,
        me_candidate=me_t,
    )


def run_onnx(path: str | Path, samples: Sequence[tuple[np.ndarray, np.ndarray]], threads: int | None = None):
    """Run a fused ONNX on (image [1,H,W,3] uint8, crop [1,2,3] f32) samples one by one in ONNX
    Runtime CPU; (landmarks [N,K,2], scores [N,K])."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    lms, scs = [], []
    for image, crop in samples:
        lm, sc = sess.run(None, dict(zip(names, (image, crop))))[:2]
        lms.append(lm)
        scs.append(sc)
    return np.concatenate(lms), np.concatenate(scs)


def compare_models(
    reference: str | Path,
    candidate: str | Path,
    samples: Sequence[tuple[np.ndarray, np.ndarray]],
    gt: np.ndarray | None = None,
) -> PrecisionComparison:
    """Both fused ONNX files on the same samples in ONNX Runtime CPU, compared."""
    return landmark_differences(run_onnx(reference, samples), run_onnx(candidate, samples), gt)


# ---------------------------------------------------------------------------- FP16 arithmetic in torch


def half_precision_fused(fused):
    """A copy of a `FusedLandmarkModel` whose predictor computes in FP16 (weights and activations
    half, casts at its input and output) while warp, normalisation and decode stay FP32: the same
    split as model.fp16.onnx, with FP16 arithmetic that ONNX Runtime's CPU provider does not do."""
    import copy

    import torch
    from torch import nn

    class _Half(nn.Module):
        def __init__(self, predictor: nn.Module) -> None:
            super().__init__()
            self.inner = predictor.half()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x.half()).float()

    twin = copy.deepcopy(fused).eval()
    twin.predictor = _Half(twin.predictor)
    return twin


def run_torch(fused, samples: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """A fused torch module on the samples, one by one: (landmarks [N,K,2], scores [N,K])."""
    import torch

    lms, scs = [], []
    with torch.no_grad():
        for image, crop in samples:
            lm, sc = fused(torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(crop)))[:2]
            lms.append(lm.float().numpy())
            scs.append(sc.float().numpy())
    return np.concatenate(lms), np.concatenate(scs)


def fp16_post_step(context) -> None:
    """`ExportOptions.post_steps` entry: write model.fp16.onnx beside model.onnx and report its
    landmark differences on the parity crops, against model.onnx in ONNX Runtime and (FP16
    arithmetic) the half-precision predictor in torch against the FP32 one."""
    from ctd_export.onnx_export import build_fused_model

    result = context.result
    res = convert_fp16(result.model_path)
    samples = [(img[None], np.asarray(a, np.float32)[None]) for img, a in zip(context.images, context.crops)]
    ort_cmp = compare_models(result.model_path, res.path, samples)
    fused = build_fused_model(context.run, result.metadata.decode)
    torch_cmp = landmark_differences(run_torch(fused, samples), run_torch(half_precision_fused(fused), samples))
    result.artifacts["fp16"] = res.path
    result.reports["fp16"] = {
        "conversion": res.to_dict(),
        "onnxruntime_vs_fp32": ort_cmp.to_dict(),
        "torch_half_vs_fp32": torch_cmp.to_dict(),
    }
