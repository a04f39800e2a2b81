"""MACs counted from an ONNX graph (ctd_export.flops, the counter `ctd bench` finds by entry point):
against hand counts, with dynamic inputs fixed, and with shapes inference cannot follow."""

from __future__ import annotations

import numpy as np
import pytest

from ctd_export.flops import count_macs, node_macs


def _tiny_graph(batch):
    """Conv 3->4 k3 p1 on 8x8, ConvTranspose 4->2 k4 s2 p1 to 16x16, Flatten, Gemm 512->10."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in
             (("w1", (4, 3, 3, 3)), ("w2", (4, 2, 4, 4)), ("w3", (512, 10)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("ConvTranspose", ["c1", "w2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1], name="deconv"),
             helper.make_node("Flatten", ["c2"], ["f"]),
             helper.make_node("Gemm", ["f", "w3"], ["y"], name="gemm")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_flops_match_a_hand_count():
    conv = 4 * 8 * 8 * 3 * 3 * 3      # Cout * H * W * Cin * k * k = 6912
    deconv = 4 * 8 * 8 * 2 * 4 * 4    # Cin * Hin * Win * Cout * k * k = 8192
    gemm = 10 * 512                   # N * K = 5120
    count = count_macs(_tiny_graph(1))
    assert count.macs_by_op == {"Conv": conv, "ConvTranspose": deconv, "Gemm": gemm}
    assert count.flops == 2 * (conv + deconv + gemm) and not count.unknown_nodes


def test_dynamic_inputs_are_fixed_and_unknown_shapes_reported():
    dynamic = _tiny_graph("N")
    assert count_macs(dynamic, {"x": [2, 3, 8, 8]}).macs == 2 * (6912 + 8192 + 5120)
    assert count_macs(dynamic).unknown_nodes  # batch left symbolic: said, not guessed
    assert node_macs("Conv", [None, None], None, {}) is None and node_macs("Relu", [], None, {}) == 0


def test_shapes_inference_cannot_follow_come_from_one_onnxruntime_run(monkeypatch):
    from onnx import shape_inference

    monkeypatch.setattr(shape_inference, "infer_shapes", lambda model, **kw: model)  # infers nothing
    dynamic = _tiny_graph("N")
    assert count_macs(dynamic).unknown_nodes
    count = count_macs(dynamic, {"x": [1, 3, 8, 8]})
    assert count.macs == 6912 + 8192 + 5120 and not count.unknown_nodes


