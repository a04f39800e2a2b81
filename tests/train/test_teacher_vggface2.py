"""VGGFace2 ResNet-50 teacher (cydonia999/VGGFace2-pytorch architecture, weight pickle loader).

The real weight files are not available here, so the loader is tested on pickles written in the
same format as the originals: a Python-2 (protocol 2) pickle of a dict name -> numpy array, with
Python-2 `str` (BINSTRING) for names and array data and numpy 1.x global names.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ctd_runtime.errors import CtdError
from ctd_train.teachers import vggface2_resnet as vr

# ------------------------------------------------------------------ a Python-2 style pickle writer


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes what Python 2's pickle (protocol 2) wrote for a dict of numpy arrays: names and
    raw array bytes as BINSTRING (Py2 `str`), globals under numpy 1.x's module names."""

    dispatch = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def _save_py2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str

    def save_global(self, obj, name=None):
        name = name or obj.__qualname__
        module = pickle.whichmodule(obj, name)
        module = {"numpy._core.multiarray": "numpy.core.multiarray"}.get(module, module)
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[type] = save_global


def write_py2_pickle(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(dict(arrays))


def expected_parameter_count(num_classes: int = 8631) -> tuple[int, int]:
    """(encoder, total) parameters of this ResNet-50, counted from its definition."""
    n = 3 * 64 * 7 * 7 + 2 * 64  # stem conv + bn1
    inplanes = 64
    for planes, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        for b in range(blocks):
            n += inplanes * planes + planes * planes * 9 + planes * planes * 4  # 1x1, 3x3, 1x1
            n += 2 * (planes + planes + 4 * planes)  # three BN (weight, bias)
            if b == 0:
                n += inplanes * 4 * planes + 2 * 4 * planes  # downsample conv + bn
            inplanes = 4 * planes
    return n, n + 2048 * num_classes + num_classes


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def random_arrays() -> dict[str, np.ndarray]:
    net = vr.build_network()
    rng = np.random.default_rng(1234)
    out = {}
    for k, t in vr.original_state_dict(net).items():
        if k.endswith("num_batches_tracked"):
            continue  # a 2018 (PyTorch 0.3 / Caffe-converted) file has no such key
        a = rng.standard_normal(tuple(t.shape), dtype=np.float32)
        if t.ndim == 4:  # conv: He-scaled so that the activations stay finite
            a *= np.float32(np.sqrt(2.0 / np.prod(t.shape[1:])))
        elif k.endswith("running_var"):
            a = np.abs(a) + np.float32(0.5)
        elif t.ndim == 1:
            a *= np.float32(0.1)
        else:
            a *= np.float32(0.01)
        out[k] = a
    return out


@pytest.fixture(scope="module")
def weight_file(tmp_path_factory, random_arrays) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "resnet50_ft_weight.pkl"
    write_py2_pickle(path, random_arrays)
    return path


# ------------------------------------------------------------------ architecture


def test_state_dict_keys_are_the_originals():
    keys = list(vr.original_state_dict(vr.build_network()))
    assert keys[:6] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                        "bn1.running_var", "bn1.num_batches_tracked"]
    for k in ("layer1.0.conv1.weight", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight",
              "layer1.0.downsample.1.running_var", "layer4.2.bn3.bias", "fc.weight", "fc.bias"):
        assert k in keys
    assert "layer1.1.downsample.0.weight" not in keys
    assert keys[-2:] == ["fc.weight", "fc.bias"]
    # no conv has a bias
    assert not [k for k in keys if k.endswith(".bias") and ("conv" in k or "downsample.0" in k)]


def test_architecture_facts():
    net = vr.build_network()
    assert net.num_classes == 8631 and net.classifier.fc.out_features == 8631
    assert net.classifier.fc.in_features == 2048 and net.classifier.fc.bias is not None
    enc = net.encoder
    assert enc.conv1.kernel_size == (7, 7) and enc.conv1.stride == (2, 2) and enc.conv1.padding == (3, 3)
    assert [len(getattr(enc, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    b = enc.layer2[0]
    assert b.conv1.stride == (2, 2) and b.conv1.kernel_size == (1, 1)
    assert b.conv2.stride == (1, 1) and b.conv2.kernel_size == (3, 3)
    assert b.downsample[0].stride == (2, 2)
    assert enc.layer1[0].conv1.stride == (1, 1) and enc.layer1[0].downsample is not None
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            assert m.bias is None
        if isinstance(m, nn.BatchNorm2d):
            assert m.eps == 1e-5


def test_maxpool_grid_ceil_mode():
    mp = vr.build_encoder().maxpool
    assert (mp.kernel_size, mp.stride, mp.padding, mp.ceil_mode) == (3, 2, 0, True)
    x = torch.randn(1, 1, 112, 112)
    y = mp(x)
    assert y.shape[-2:] == (56, 56)
    # window (i, j) covers rows/cols 2i..2i+2 (no padding; the last one is clipped to 110..111)
    xs = x[0, 0]
    for i, j in [(0, 0), (3, 7), (55, 0), (0, 55), (55, 55)]:
        assert y[0, 0, i, j] == xs[2 * i:2 * i + 3, 2 * j:2 * j + 3].max()
    # torchvision's grid (padding 1, floor) is a different one
    tv = nn.MaxPool2d(3, 2, padding=1)(x)
    assert tv.shape == y.shape and not torch.equal(tv, y)


@torch.inference_mode()
def test_feature_map_shapes():
    net = vr.build_network().eval()
    out = net(torch.zeros(1, 3, 224, 224))
    assert out["features"].shape == (1, 2048, 7, 7)
    assert out["logits"].shape == (1, 8631)
    assert out["embedding"].shape == (1, 2048)
    out = net(torch.zeros(1, 3, 256, 256))
    assert out["features"].shape == (1, 2048, 8, 8)
    assert out["logits"].shape == (1, 8631)


@torch.inference_mode()
def test_adaptive_pool_equals_original_avgpool7_at_224():
    torch.manual_seed(0)
    feats = torch.randn(2, 2048, 7, 7)
    cls = vr.PooledClassifier().eval()
    original = cls.fc(torch.flatten(nn.AvgPool2d(7, stride=1)(feats), 1))
    torch.testing.assert_close(cls(feats), original, rtol=0, atol=1e-5)


def test_parameter_count():
    enc_n, total = expected_parameter_count()
    assert (enc_n, total) == (23_508_032, 41_192_951)
    t = vr.random_teacher()
    assert sum(p.numel() for p in t.network.encoder.parameters()) == enc_n
    assert t.parameter_count() == total


def test_input_spec():
    spec = vr.INPUT_SPEC
    assert spec.size == 224
    assert spec.normalization.channel_order == "BGR"
    assert spec.normalization.mean == (91.4953, 103.8827, 131.0912)
    assert spec.normalization.scale == (1.0, 1.0, 1.0)
    img = np.zeros((1, 2, 2, 3), np.uint8)
    img[..., 2] = 200  # red in OpenCV's BGR
    x = spec.normalization.apply(img)
    np.testing.assert_allclose(x[0, :, 0, 0], [-91.4953, -103.8827, 200 - 131.0912], rtol=1e-6)


# ------------------------------------------------------------------ loading


def test_load_py2_pickle_exact(weight_file, random_arrays):
    raw = weight_file.read_bytes()[:64]
    assert raw[:2] == b"\x80\x02" and b"numpy.core.multiarray\n_reconstruct" in weight_file.read_bytes()[:4096]
    t = vr.load_vggface2_resnet50(weight_file)
    assert t.name == "resnet50-vggface2" and t.weights_path == weight_file
    assert t.extras["variant"] == "ft" and t.has_classifier
    sd = vr.original_state_dict(t.network)
    assert set(random_arrays) == {k for k in sd if not k.endswith("num_batches_tracked")}
    for k, a in random_arrays.items():
        assert torch.equal(sd[k], torch.from_numpy(a)), k
    # the encoder/classifier modules really use them
    assert torch.equal(t.network.encoder.layer3[4].conv2.weight, torch.from_numpy(random_arrays["layer3.4.conv2.weight"]))
    assert torch.equal(t.network.classifier.fc.bias, torch.from_numpy(random_arrays["fc.bias"]))
    assert not t.network.training
    frozen = t.frozen()
    assert not any(p.requires_grad for p in frozen.parameters())


def test_load_via_env_and_folder(weight_file, monkeypatch):
    from ctd_train.teachers._registry import _REGISTRY

    assert _REGISTRY["resnet50-vggface2"].has_classifier
    monkeypatch.setenv(vr.ENV_VAR, str(weight_file))
    assert vr.resolve_weights(None) == weight_file
    assert vr.resolve_weights(weight_file.parent) == weight_file
    assert vr.load_vggface2_resnet50(None).weights_path == weight_file


def test_python3_protocol4_pickle_also_loads(tmp_path, random_arrays):
    small = {k: random_arrays[k] for k in ("conv1.weight", "fc.bias")}
    p = tmp_path / "p4.pkl"
    p.write_bytes(pickle.dumps(small, protocol=4))
    got = vr.read_weight_pickle(p)
    assert set(got) == set(small) and all(np.array_equal(got[k], small[k]) for k in small)


def test_no_weights_given(monkeypatch):
    monkeypatch.delenv(vr.ENV_VAR, raising=False)
    with pytest.raises(CtdError, match="not redistributable.*--teacher-weights"):
        vr.load_vggface2_resnet50(None)


def test_missing_file(tmp_path):
    p = tmp_path / "resnet50_ft_weight.pkl"
    with pytest.raises(CtdError, match="not found") as e:
        vr.load_vggface2_resnet50(p)
    assert str(p) in str(e.value)


def test_truncated_pickle(tmp_path, random_arrays):
    p = tmp_path / "trunc.pkl"
    write_py2_pickle(p, {k: random_arrays[k] for k in ("conv1.weight", "bn1.weight")})
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CtdError, match="truncated") as e:
        vr.read_weight_pickle(p)
    assert str(p) in str(e.value)
    p.write_bytes(b"")
    with pytest.raises(CtdError, match="truncated"):
        vr.read_weight_pickle(p)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4])
def test_malicious_global_refused(tmp_path, protocol):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"conv1.weight": _Evil(marker)}, protocol=protocol))
    with pytest.raises(CtdError, match=r"refusing.*(posix|os)\.system") as e:
        vr.load_vggface2_resnet50(p)
    assert str(p) in str(e.value)
    assert not marker.exists()


def test_other_globals_refused(tmp_path):
    p = tmp_path / "eval.pkl"
    p.write_bytes(b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1;\x85R.")
    with pytest.raises(CtdError, match="builtins.eval"):
        vr.read_weight_pickle(p)
    # a Python-3 protocol-2 pickle of bytes needs _codecs.encode: not a numpy global, refused
    p.write_bytes(pickle.dumps({"a": np.zeros(2, np.float32)}, protocol=2))
    with pytest.raises(CtdError, match="_codecs.encode"):
        vr.read_weight_pickle(p)


def test_not_a_dict_and_non_array_values(tmp_path):
    p = tmp_path / "list.pkl"
    p.write_bytes(pickle.dumps([np.zeros(2, np.float32)], protocol=4))
    with pytest.raises(CtdError, match="expected a dict"):
        vr.read_weight_pickle(p)
    p.write_bytes(pickle.dumps({"conv1.weight": 3}, protocol=4))
    with pytest.raises(CtdError, match="conv1.weight.*expected a numpy array"):
        vr.read_weight_pickle(p)


def test_wrong_shape(tmp_path, random_arrays):
    bad = dict(random_arrays)
    bad["layer2.0.conv2.weight"] = np.zeros((128, 128, 1, 1), np.float32)
    p = tmp_path / "shape.pkl"
    write_py2_pickle(p, bad)
    with pytest.raises(CtdError, match=r"'layer2\.0\.conv2\.weight' has shape \(128, 128, 1, 1\).*\(128, 128, 3, 3\)") as e:
        vr.load_vggface2_resnet50(p)
    assert str(p) in str(e.value)


def test_missing_key(tmp_path):
    # shapes are checked after names, so a tiny pickle is enough to test name errors
    keys = [k for k in vr.original_state_dict(vr.build_network()) if not k.endswith("num_batches_tracked")]
    tiny = {k: np.zeros(1, np.float32) for k in keys if k != "layer3.1.conv1.weight"}
    p = tmp_path / "missing.pkl"
    write_py2_pickle(p, tiny)
    with pytest.raises(CtdError, match=r"missing key 'layer3\.1\.conv1\.weight' .*1 missing") as e:
        vr.load_vggface2_resnet50(p)
    assert str(p) in str(e.value) and "running statistics" not in str(e.value)


def test_missing_running_stats_is_fatal(tmp_path):
    keys = [k for k in vr.original_state_dict(vr.build_network()) if not k.endswith("num_batches_tracked")]
    tiny = {k: np.zeros(1, np.float32) for k in keys if not k.endswith(("running_mean", "running_var"))}
    p = tmp_path / "nostats.pkl"
    write_py2_pickle(p, tiny)
    with pytest.raises(CtdError, match=r"missing key 'bn1\.running_mean'.*106 missing.*106 of them are batch-norm running statistics - fatal") as e:
        vr.load_vggface2_resnet50(p)
    assert str(p) in str(e.value)


def test_unknown_key(tmp_path):
    p = tmp_path / "unknown.pkl"
    write_py2_pickle(p, {"conv1.weight": np.zeros(1, np.float32), "module.fc.weight": np.zeros(1, np.float32)})
    with pytest.raises(CtdError, match=r"unknown key 'module\.fc\.weight'") as e:
        vr.load_vggface2_resnet50(p)
    assert str(p) in str(e.value)


@torch.inference_mode()
def test_loaded_teacher_runs_at_256(weight_file):
    t = vr.load_vggface2_resnet50(weight_file)
    net = t.frozen()
    out = net(torch.zeros(1, 3, 256, 256))
    assert out["features"].shape == (1, 2048, 8, 8) and torch.isfinite(out["logits"]).all()
