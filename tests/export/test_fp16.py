"""FP16 variant: the network region, the conversion (casts only at its boundary), metadata, and
the landmark differences against FP32 in ONNX Runtime and with FP16 arithmetic in torch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from ctd_export import fp16
from ctd_export.network_region import network_region
from ctd_export.precision_compare import compare_models, landmark_differences
from ctd_export.torch_half import half_precision_fused, run_torch
from ctd_runtime.errors import CtdError
from ctd_runtime.model_meta import read_model_metadata
from tests.export._tiny_fused import export_fused, fused_model, sample_set, trained_predictor


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp16")
    pred = trained_predictor()
    return {d: export_fused(pred, root / d / "model.onnx", decode=d) for d in ("argmax", "dark")}


@pytest.fixture(scope="module")
def samples():
    return sample_set(16, seed=5)


def _node_names(path):
    return {n.name: n for n in onnx.load(str(path)).graph.node}


def test_region_is_the_predictor_only(exported):
    model = onnx.load(str(exported["dark"]))
    names, how = network_region(model)
    assert how == "scope"
    assert names and all(n.startswith("/predictor/") for n in names)
    ops = {n.op_type for n in model.graph.node if n.name in set(names)}
    assert {"Conv", "ConvTranspose", "Relu"} <= ops
    # DARK's blur is a Conv of the decoder: it stays outside (FP32)
    blur = [n for n in model.graph.node if n.op_type == "Conv" and n.name.startswith("/decoder/")]
    assert blur and not set(n.name for n in blur) & set(names)
    assert not {"GridSample", "ArgMax"} & ops


def test_region_without_scopes_falls_back_to_structure(exported):
    model = onnx.load(str(exported["argmax"]))
    for i, node in enumerate(model.graph.node):
        node.name = f"n{i}"
    names, how = network_region(model)
    assert how == "structure"
    ops = [n.op_type for n in model.graph.node if n.name in set(names)]
    assert ops.count("Conv") == 5 and ops.count("ConvTranspose") == 2
    assert "GridSample" not in ops and "ArgMax" not in ops


def test_region_of_a_dynamo_export(tmp_path):
    path = export_fused(trained_predictor(), tmp_path / "model.onnx", dynamo=True)
    names, how = network_region(onnx.load(str(path)))
    assert how == "scope"
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node if n.name in set(names)]
    assert ops.count("ConvTranspose") == 2 and "GridSample" not in ops and "ArgMax" not in ops
    res = fp16.convert_fp16(path)
    assert (res.casts_to_fp16, res.casts_to_fp32) == (1, 1)


@pytest.mark.parametrize("decode", ["argmax", "dark"])
def test_convert_fp16_casts_only_at_the_network_boundary(exported, samples, decode):
    src = exported[decode]
    res = fp16.convert_fp16(src)
    assert res.path == src.with_name("model.fp16.onnx") and res.path.is_file()
    assert (res.casts_to_fp16, res.casts_to_fp32) == (1, 1)
    model = onnx.load(str(res.path))
    onnx.checker.check_model(model)
    # I/O types unchanged; network weights FP16; FP32 part's constants untouched
    elem = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.input) + list(model.graph.output)}
    assert elem == {"image": onnx.TensorProto.UINT8, "crop": onnx.TensorProto.FLOAT,
                    "landmarks": onnx.TensorProto.FLOAT, "scores": onnx.TensorProto.FLOAT}
    inits = {t.name: t for t in model.graph.initializer}
    conv_weights = [inits[n.input[1]] for n in model.graph.node
                    if n.op_type in ("Conv", "ConvTranspose") and n.name.startswith("/predictor/")]
    assert conv_weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in conv_weights)
    for n in model.graph.node:
        if n.op_type == "Constant" and not n.name.startswith("/predictor/"):
            assert n.attribute[0].t.data_type != onnx.TensorProto.FLOAT16, n.name
    meta = read_model_metadata(res.path)
    assert meta.precision == "fp16" and meta.decode == decode
    details = {p.key: p.value for p in model.metadata_props}["ctd.fp16"]
    assert '"region_method": "scope"' in details
    cmp = compare_models(src, res.path, *samples)
    assert cmp.n_images == 16 and cmp.n_landmarks == 3
    assert cmp.px_max < 0.1  # FP16 weights: argmax peaks unchanged, DARK offsets move by < 0.1 px
    assert cmp.score_max_abs < 0.05
    assert abs(cmp.me_change) < 0.01


def test_fp16_arithmetic_in_torch_stays_close(samples):
    fused = fused_model(trained_predictor(), "dark")
    ref = run_torch(fused, samples[0])
    half = run_torch(half_precision_fused(fused), samples[0])
    cmp = landmark_differences(ref, half, samples[1])
    assert 0 < cmp.px_mean < 0.1 and cmp.px_max < 0.5
    assert fused.predictor.encoder[0].weight.dtype.is_floating_point  # the original is untouched
    assert str(fused.predictor.encoder[0].weight.dtype) == "torch.float32"


def test_convert_refuses_non_ctd_and_non_fp32(exported, tmp_path):
    bare = onnx.load(str(exported["argmax"]))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(CtdError, match="bare.onnx.*ctd"):
        fp16.convert_fp16(tmp_path / "bare.onnx")
    res = fp16.convert_fp16(exported["argmax"], tmp_path / "x.fp16.onnx")
    with pytest.raises(CtdError, match="ctd.precision=fp16"):
        fp16.convert_fp16(res.path, tmp_path / "again.onnx")
    with pytest.raises(CtdError, match="not found"):
        fp16.convert_fp16(tmp_path / "missing.onnx")


def test_landmark_differences_numbers():
    ref = (np.zeros((2, 2, 2)), np.ones((2, 2)))
    test = (np.array([[[3, 4], [0, 0]], [[0, 0], [0, 1]]], float), np.full((2, 2), 0.9))
    gt = np.zeros((2, 2, 2))
    c = landmark_differences(ref, test, gt)
    assert c.px_max == 5 and c.px_mean == pytest.approx(1.5) and c.px_median == pytest.approx(0.5)
    assert c.score_max_abs == pytest.approx(0.1)
    assert c.me_reference == 0 and c.me_change == pytest.approx(1.5)


def test_post_steps_write_and_report(exported, tmp_path, monkeypatch):
    import shutil
    from types import SimpleNamespace

    from ctd_export import int8
    from tests.export._tiny_fused import CODEC, NORMALIZATION, tiny_metadata

    model_path = tmp_path / "model.onnx"
    shutil.copy(exported["dark"], model_path)
    meta = tiny_metadata("dark")
    run = SimpleNamespace(predictor=trained_predictor(), normalization=NORMALIZATION, codec=CODEC,
                          input_size=CODEC.input_size, schema=meta.schema, run_id="tiny-test")
    samples, _ = sample_set(4, seed=3)
    result = SimpleNamespace(model_path=model_path, metadata=meta, artifacts={"onnx": model_path}, reports={})
    context = SimpleNamespace(run=run, result=result, images=[s[0][0] for s in samples],
                              crops=np.stack([s[1][0] for s in samples]))
    fp16.fp16_post_step(context)
    assert result.artifacts["fp16"] == tmp_path / "model.fp16.onnx"
    rep = result.reports["fp16"]
    assert rep["onnxruntime_vs_fp32"]["n_images"] == 4 and rep["torch_half_vs_fp32"]["px_max"] < 0.5
    monkeypatch.setattr(int8, "run_config_samples", lambda run, n, seed=0: sample_set(6, seed=9)[0])
    int8.int8_post_step(int8.Int8Config(num_images=6))(context)
    assert result.artifacts["int8"] == tmp_path / "model.int8.onnx"
    assert result.reports["int8"]["quantization"]["quantized_op_counts"] == {"Conv": 4}
    close = result.reports["int8"]["onnxruntime_vs_fp32"]
    # the median and the mean, not the max: of these 12 landmarks one sits on a blob the
    # FP32 model itself misses by 3 px, and there INT8 may pick the neighbouring peak (INT8's
    # accuracy over many images is test_int8's)
    assert close["n_images"] == 4 and close["px_median"] < 0.2 and close["px_mean"] < 0.5


def test_a_weight_shared_with_the_fp32_part_gets_its_own_fp16_copy():
    """The splice: the region's copy of a shared weight is FP16 under its own name, the FP32 part
    keeps the original; the spliced graph runs and computes what the two halves say."""
    from onnx import helper, numpy_helper

    from ctd_runtime.backends.ort_session import open_session

    w = np.array([0.5, -1.25, 2.0, 3.0], np.float32)
    nodes = [helper.make_node("Mul", ["x", "w"], ["h"], name="/predictor/Mul"),
             helper.make_node("Relu", ["h"], ["r"], name="/predictor/Relu"),
             helper.make_node("Add", ["r", "w"], ["y"], name="/decoder/Add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    converted, info = fp16.convert_fp16_model(model)
    assert (info["network_nodes"], info["other_nodes"], info["casts_to_fp16"], info["casts_to_fp32"]) == (2, 1, 1, 1)
    onnx.checker.check_model(converted)
    inits = {t.name: t.data_type for t in converted.graph.initializer}
    assert inits == {"w": onnx.TensorProto.FLOAT, fp16.FP16_PREFIX + "w": onnx.TensorProto.FLOAT16}
    by_name = {n.name: n for n in converted.graph.node}
    assert list(by_name["/decoder/Add"].input)[1] == "w" and list(by_name["/predictor/Mul"].input)[1] == fp16.FP16_PREFIX + "w"
    assert [n.name for n in model.graph.node] == ["/predictor/Mul", "/predictor/Relu", "/decoder/Add"]  # untouched
    x = np.array([[1.0, 2.0, -3.0, 0.1]], np.float32)
    y = open_session(converted.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, np.maximum(x * w, 0) + w, atol=1e-3)
