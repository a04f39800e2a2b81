"""The dlib-resnet29 teacher: parser of dlib's format, PyTorch port against dlib's own outputs
(golden.npz, read from ../shared, never copied), error messages, encoder on other input sizes."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ctd_runtime.errors import CtdError  # noqa: E402
from ctd_train.teachers import dlib_resnet  # noqa: E402
from ctd_train.teachers._registry import _REGISTRY  # noqa: E402
from ctd_train.teachers.dlib_format import ConvRecord, parse_dlib_bytes, parse_dlib_file  # noqa: E402
from ctd_train.teachers.dlib_resnet import (  # noqa: E402
    WEIGHTS_FILE,
    build_network,
    find_dlib_weights,
    output_size,
    teacher_from_model,
)

FILE_SIZE = 22_466_066


@pytest.fixture(scope="module")
def dlib_dir(teachers_dir: Path) -> Path:
    d = teachers_dir / "dlib-resnet29"
    if not (d / WEIGHTS_FILE).exists():
        pytest.skip(f"dlib weights not found in {d}")
    return d


@pytest.fixture(scope="module")
def dat_path(dlib_dir: Path) -> Path:
    return dlib_dir / WEIGHTS_FILE


@pytest.fixture(scope="module")
def dat_bytes(dat_path: Path) -> bytes:
    return dat_path.read_bytes()


@pytest.fixture(scope="module")
def model(dat_path: Path):
    return parse_dlib_file(dat_path)


@pytest.fixture(scope="module")
def teacher(model):
    return teacher_from_model(model)


@pytest.fixture(scope="module")
def golden(dlib_dir: Path):
    p = dlib_dir / "golden.npz"
    if not p.exists():
        pytest.skip(f"{p} not found")
    with np.load(p) as g:
        return {k: g[k] for k in ("inputs", "descriptors", "pooled")}


# ------------------------------------------------------------------------------ golden


def test_golden_descriptors_and_pooled(teacher, golden):
    net = teacher.frozen()
    assert net.encoder.stem[0].weight.dtype == torch.float32
    rgb = golden["inputs"]
    x = torch.from_numpy(teacher.input_spec.normalization.apply(rgb[..., ::-1]))  # apply() takes BGR
    # the same as dlib's formula written out
    ref = (rgb.astype(np.float32) - np.float32([122.782, 117.001, 104.298])) / np.float32(256)
    np.testing.assert_allclose(x.numpy(), ref.transpose(0, 3, 1, 2), atol=1e-6)
    with torch.no_grad():
        out = net(x)
        pooled = net.embedding.pool(out["features"]).numpy()
    assert out["features"].shape == (8, 256, 2, 2)
    assert "logits" not in out
    d_desc = np.abs(out["embedding"].numpy() - golden["descriptors"]).max()
    d_pool = np.abs(pooled - golden["pooled"]).max()
    print(f"dlib golden: descriptors max|d| {d_desc:.3g}, pooled max|d| {d_pool:.3g}")
    assert d_desc < 1e-5
    assert d_pool < 2e-5


# ------------------------------------------------------------------------------ parser


def test_parser_checkpoints(model, teacher):
    assert model.file_size == FILE_SIZE
    assert model.loss == "loss_metric_2"
    assert model.margin == pytest.approx(0.04, abs=1e-7)
    assert model.distance_threshold == pytest.approx(0.6, abs=1e-7)
    assert len(model.versions) == 130 and model.versions[:4] == [2, 2, 2, 2] and model.versions[-1] == 3
    assert model.versions == dlib_resnet._expected_versions()
    assert model.input_layer == "input_rgb_image_sized" and model.input_size == (150, 150)
    assert model.input_means == (122.78199768066406, 117.0009994506836, 104.2979965209961)
    assert len(model.layers) == 108
    kinds = [r.kind for r in model.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("relu") == 29
    assert kinds.count("add_prev") == 14 and kinds.count("avg_pool") == 5 and kinds.count("max_pool") == 1
    assert model.layers[0].offset == 334 and model.layers[-1].offset == 22_334_900

    stem = model.layers[0]
    assert isinstance(stem, ConvRecord) and stem.filters.shape == (32, 3, 7, 7)
    assert stem.stride == (2, 2) and stem.padding == (0, 0)
    np.testing.assert_allclose(stem.filters[0, 0, 0, :3], [-0.02932992, -0.01886531, -0.00566939], rtol=1e-6)
    np.testing.assert_allclose(stem.bias[:3], [1.9543244e-05, 2.2053666e-05, -6.2225721e-05], rtol=1e-6)
    assert stem.filters.sum(dtype=np.float64) == pytest.approx(-1.03476, abs=1e-5)
    aff = model.layers[1]
    np.testing.assert_allclose(aff.gamma[:3], [12.166323, 10.559221, 17.43005], rtol=1e-6)
    np.testing.assert_allclose(aff.beta[:3], [0.46428606, 0.10975504, 0.55875915], rtol=1e-6)
    fc = model.layers[-1]
    assert fc.weights.shape == (256, 128) and fc.bias is None and fc.bias_mode == 1
    np.testing.assert_allclose(fc.weights[0:3, 0], [-0.00674625, -0.00223443, 0.004797], rtol=1e-5)

    assert model.parameter_count() == 5_614_592
    assert teacher.parameter_count() == 5_614_592
    # weights landed in the right modules
    enc = teacher.network.encoder
    np.testing.assert_array_equal(enc.stem[0].weight.detach().numpy(), stem.filters)
    np.testing.assert_array_equal(enc.stem[1].gamma.detach().numpy(), aff.gamma)
    np.testing.assert_array_equal(teacher.network.embedding.fc.weight.detach().numpy(), fc.weights.T)


def test_teacher_spec_and_registry(teacher, dat_path):
    spec = teacher.input_spec
    assert spec.size == 150
    assert spec.normalization.channel_order == "RGB"
    assert spec.normalization.scale == (1 / 256,) * 3
    assert teacher.name == "dlib-resnet29" and teacher.weights_path == dat_path
    assert teacher.network.classifier is None and not teacher.has_classifier
    assert teacher.network.feature_channels == 256
    entry = _REGISTRY["dlib-resnet29"]
    assert entry.loader is dlib_resnet.load and not entry.has_classifier and entry.licence == "CC0-1.0"


# ------------------------------------------------------------------------------ bad input


def test_missing_file(tmp_path):
    missing = tmp_path / "nope" / WEIGHTS_FILE
    with pytest.raises(CtdError, match="not found") as e:
        dlib_resnet.load(missing)
    assert str(missing) in str(e.value)
    with pytest.raises(CtdError, match="not found"):
        parse_dlib_file(missing)


@pytest.mark.parametrize("n", [3, 40, 300, 334, 5000, FILE_SIZE - 1])
def test_truncated_file(dat_bytes, tmp_path, n):
    p = tmp_path / "truncated.dat"
    p.write_bytes(dat_bytes[:n])
    with pytest.raises(CtdError) as e:
        parse_dlib_file(p)
    msg = str(e.value)
    assert "truncated.dat" in msg
    assert f"file ends at byte {n} while reading" in msg, msg


def test_trailing_bytes(dat_bytes, tmp_path):
    p = tmp_path / "long.dat"
    p.write_bytes(dat_bytes + b"\x00\x01")
    with pytest.raises(CtdError, match=f"end of the file .* at byte {FILE_SIZE}, found 2 more bytes"):
        parse_dlib_file(p)


def _zip_file(p: Path) -> None:
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("a.txt", "hello" * 100)


@pytest.mark.parametrize("kind", ["random", "zip", "pickle", "empty", "text"])
def test_other_format(tmp_path, kind):
    p = tmp_path / f"other_{kind}.dat"
    if kind == "random":
        p.write_bytes(np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes())
    elif kind == "zip":
        _zip_file(p)
    elif kind == "pickle":
        p.write_bytes(pickle.dumps({"weights": np.zeros(10)}))
    elif kind == "empty":
        p.write_bytes(b"")
    else:
        p.write_bytes(b"\x01\x01\x0aloss_mmod_" + b"\x00" * 100)   # another dlib network
    with pytest.raises(CtdError, match="not a dlib face recognition network") as e:
        dlib_resnet.load(p)
    assert p.name in str(e.value)


def test_bad_bytes_name_the_offset(dat_bytes):
    bad = bytearray(dat_bytes[:2000])
    bad[334:341] = b"\x01\x05cox_4"          # layer 1's tag
    with pytest.raises(CtdError, match=r"layer tag .* for layer 1 at byte 334, found 'cox_4'"):
        parse_dlib_bytes(bytes(bad), "x.dat")
    bad = bytearray(dat_bytes[:2000])
    bad[289:312] = b"\x01\x15input_rgb_image_sizzz"
    with pytest.raises(CtdError, match="expected the input layer tag 'input_rgb_image_sized' at byte 289"):
        parse_dlib_bytes(bytes(bad), "x.dat")


def test_wrong_tensor_shape(model):
    rec = model.layers[4]                      # first conv of level 4: 32x32x3x3
    assert rec.kind == "con"
    layers = list(model.layers)
    layers[4] = dataclasses.replace(rec, filters=rec.filters[:, :, :, :2].copy())
    bad = dataclasses.replace(model, layers=layers)
    with pytest.raises(CtdError, match=r"layer 5 \(con.*expected 32x32x3x3 filters, file has 32x32x3x2") as e:
        build_network(bad)
    assert WEIGHTS_FILE in str(e.value)

    layers = list(model.layers)
    layers[1] = dataclasses.replace(layers[1], gamma=layers[1].gamma[:31].copy())
    with pytest.raises(CtdError, match=r"layer 2 \(affine.*expected 32 gammas"):
        build_network(dataclasses.replace(model, layers=layers))

    layers = list(model.layers)
    layers[-1] = dataclasses.replace(layers[-1], weights=layers[-1].weights[:, :64].copy())
    with pytest.raises(CtdError, match=r"layer 108 \(fc.*expected 256x128 weights, file has 256x64"):
        build_network(dataclasses.replace(model, layers=layers))

    layers = list(model.layers)
    layers[4], layers[5] = layers[5], layers[4]
    with pytest.raises(CtdError, match=r"expected a con layer, file has affine"):
        build_network(dataclasses.replace(model, layers=layers))


def test_inconsistent_record_in_file(dat_bytes, model):
    # layer 5 (32x32x3x3 conv): change in_channels of its filter alias from 32 to 31 in the
    # bytes; the alias no longer matches its params tensor
    off = model.layers[4].offset
    data = bytearray(dat_bytes)
    assert data[off:off + 7] == b"\x01\x05con_4"
    head = b"\x01\x02" + b"\x02" + (32 * 32 * 9 + 32).to_bytes(2, "little") + b"\x01\x01" * 3
    assert data[off + 7:off + 7 + len(head)] == head
    alias = off + 7 + len(head) + 4 * 9248 + 14       # params, then 7 one-byte integers
    assert data[alias:alias + 10] == b"\x01\x01\x01\x20\x01\x20\x01\x03\x01\x03"
    data[alias + 5] = 31
    with pytest.raises(CtdError, match=r"x\.dat: layer 5 \(con_4\) at byte \d+: params tensor has 9248 values, "
                       r"but filters 32x31x3x3 \+ biases 1x32x1x1 need 8960"):
        parse_dlib_bytes(bytes(data), "x.dat")


# ------------------------------------------------------------------------------ finding weights


def test_find_weights(tmp_path, monkeypatch, dat_path):
    monkeypatch.delenv("CTD_DLIB_WEIGHTS", raising=False)
    # a fake installed package whose __init__ must not run
    pkg = tmp_path / "site" / "face_recognition_models"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (pkg / "models" / WEIGHTS_FILE).write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert find_dlib_weights(None) == pkg / "models" / WEIGHTS_FILE
    # the environment variable wins over the package
    monkeypatch.setenv("CTD_DLIB_WEIGHTS", str(dat_path))
    assert find_dlib_weights(None) == dat_path
    monkeypatch.setenv("CTD_DLIB_WEIGHTS", str(tmp_path / "missing.dat"))
    with pytest.raises(CtdError, match="CTD_DLIB_WEIGHTS.*not found"):
        find_dlib_weights(None)
    # an explicit path wins over both; a folder holding the file works too
    assert find_dlib_weights(dat_path.parent) == dat_path
    # nothing anywhere: says how to get it
    monkeypatch.delenv("CTD_DLIB_WEIGHTS")
    monkeypatch.setattr(dlib_resnet, "_package_weights", lambda: None)
    with pytest.raises(CtdError, match=r"pip install face-recognition-models.*--teacher-weights PATH"):
        dlib_resnet.load(None)


# ------------------------------------------------------------------------------ other sizes, copies


def test_encoder_other_sizes(teacher):
    enc = teacher.frozen().encoder
    assert output_size(150) == 2 and output_size(256) == 3
    with torch.no_grad():
        for size in (256, 160, 112):
            f = enc(torch.zeros(2, 3, size, size))
            s = output_size(size)
            assert f.shape == (2, 256, s, s)
            assert torch.isfinite(f).all()
        levels = enc.forward_levels(torch.zeros(1, 3, 256, 256))
    assert [tuple(t.shape[1:]) for t in levels.values()] == [
        (32, 62, 62), (32, 62, 62), (64, 31, 31), (128, 15, 15), (256, 7, 7), (256, 3, 3)]


def test_add_prev_zero_extends():
    a = torch.arange(1 * 4 * 1 * 1, dtype=torch.float32).reshape(1, 4, 1, 1) + 1
    b = torch.ones(1, 2, 2, 2)
    s = dlib_resnet.add_prev(a, b)
    assert s.shape == (1, 4, 2, 2)
    assert s[0, :, 0, 0].tolist() == [2, 3, 3, 4]
    assert s[0, :2, 1, 1].tolist() == [1, 1] and s[0, 2:, 1, 1].tolist() == [0, 0]


def test_frozen_and_trainable(teacher):
    frozen = teacher.frozen()
    assert all(not p.requires_grad for p in frozen.parameters())
    assert not frozen.training
    x = torch.randn(1, 3, 150, 150)
    assert frozen(x)["features"].grad_fn is None

    enc = teacher.trainable_encoder()
    params = dict(enc.named_parameters())
    assert params and all(p.requires_grad for p in params.values())
    # affine scale/shift are trainable parameters too
    assert "stem.1.gamma" in params and "level0.0.affine2.beta" in params
    ref = teacher.network.encoder.state_dict()
    assert set(enc.state_dict()) == set(ref)
    assert all(torch.equal(v, ref[k]) for k, v in enc.state_dict().items())
    enc(x).sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    # copies: training the student's encoder leaves the teacher alone
    with torch.no_grad():
        params["stem.0.weight"].add_(1.0)
    assert not torch.equal(teacher.network.encoder.stem[0].weight, params["stem.0.weight"])
    assert copy.deepcopy(teacher.network).encoder is not teacher.network.encoder
