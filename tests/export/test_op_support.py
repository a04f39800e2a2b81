"""The exported fused graphs use only operators on the TensorRT list, without the int64 index
arithmetic patterns (Mod, Xor, integer Div, TopK) TensorRT handles poorly."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from ctd_export.onnx_export import export_onnx_model
from ctd_export.op_support import ALLOWED_OPS, FORBIDDEN_OPS, check_graph_ops, used_ops
from tests.export.test_fused import K, fake_run, fused, ort_run, random_affine, random_image, reference

DOCS = Path(__file__).resolve().parents[2] / "docs" / "onnx_operators.md"
INT_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({i.name: i.data_type for i in g.initializer})
    for n in g.node:
        if n.op_type == "Constant":
            types[n.output[0]] = n.attribute[0].t.data_type
    return types


@pytest.mark.parametrize("decode", ["argmax", "quarter", "dark"])
@pytest.mark.parametrize("heatmaps", [False, True])
def test_fused_graphs_use_only_listed_ops(decode, heatmaps):
    model = export_onnx_model(fused(fake_run(decode), decode, with_heatmaps=heatmaps), "fused", K, 64, 16)
    assert check_graph_ops(model) == []
    ops = used_ops(model)
    assert set(ops) <= set(ALLOWED_OPS)
    assert not set(ops) & {"TopK", "Mod", "Xor", "BitShift", "IsInf", "NonZero", "Loop", "If"}
    assert ops["ArgMax"] == 1 and ops["GridSample"] == 1
    types = _value_types(model)
    for node in model.graph.node:
        if node.op_type == "Div":
            assert not any(types.get(i) in INT_TYPES for i in node.input), node.name
        if node.op_type == "Where":
            assert types.get(node.output[0]) not in INT_TYPES, node.name
        if node.op_type == "ArgMax":
            assert types[node.input[0]] == onnx.TensorProto.FLOAT
    dims = {o.name: [d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert dims["landmarks"] == ["batch", K, 2] and dims["scores"] == ["batch", K]
    assert ("heatmaps" in dims) == heatmaps


class _IntegerDecode(nn.Module):
    """The decode TensorRT dislikes: TopK, then // and % on the int64 index."""

    def forward(self, hm):
        flat = hm.flatten(2)
        _, idx = torch.topk(flat, 1, dim=2)
        return torch.stack([idx % 16, idx // 16], dim=-1).float()


def test_integer_index_arithmetic_is_flagged():
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_IntegerDecode(), (torch.rand(1, 2, 16, 16),), buf, opset_version=17, dynamo=False)
    problems = check_graph_ops(onnx.load_from_string(buf.getvalue()), static_outputs=())
    text = "\n".join(problems)
    assert "TopK is not allowed" in text
    assert "Mod" in text or "integer Div" in text


def test_unknown_and_custom_ops_are_flagged():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Hardmax", ["x"], ["h"]), helper.make_node("MyOp", ["h"], ["y"], domain="com.acme")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]))
    problems = check_graph_ops(model)
    assert any("Hardmax is not on the list" in p for p in problems)
    assert any("custom domain" in p for p in problems)


def test_docs_list_the_same_operators():
    text = DOCS.read_text()
    documented = set(re.findall(r"^\| `([A-Za-z]+)` \|", text, flags=re.M))
    assert documented == set(ALLOWED_OPS) | set(FORBIDDEN_OPS)


def test_dynamo_exporter_gives_a_clean_equivalent_graph(tmp_path):
    run = fake_run("dark")
    model = export_onnx_model(fused(run, "dark"), "fused", K, 64, 16, opset=18, exporter="dynamo")
    assert check_graph_ops(model) == []
    path = tmp_path / "dynamo.onnx"
    onnx.save(model, str(path))
    rng = np.random.default_rng(5)
    for n, h, w in ((1, 90, 120), (2, 150, 110)):
        images = np.stack([random_image(rng, h, w) for _ in range(n)])
        crops = np.stack([random_affine(rng, h, w) for _ in range(n)])
        landmarks, _ = ort_run(path, images, crops)
        ref, _, _ = reference(run, list(images), crops, "dark")
        np.testing.assert_allclose(landmarks, ref, atol=1e-3)
