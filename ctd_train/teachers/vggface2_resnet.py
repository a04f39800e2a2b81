"""The paper's teacher: ResNet-50 trained on VGGFace2 (cydonia999/VGGFace2-pytorch, MIT licence).

The architecture is written here from the facts of ``shared/teachers/README.md`` section 3
(``models/resnet.py`` of cydonia999/VGGFace2-pytorch at commit c6e10f2); it differs from
torchvision's ResNet-50 in three places:

* the stride of a down-sampling Bottleneck is on its *first 1x1 conv* (``conv1``), the 3x3
  ``conv2`` always has stride 1 (torchvision "v1.5" strides the 3x3);
* ``maxpool`` is ``MaxPool2d(3, stride=2, padding=0, ceil_mode=True)`` (torchvision: padding 1,
  floor) - same 112 -> 56 size, different window grid;
* the original ``avgpool`` is a fixed ``AvgPool2d(7, stride=1)``, which gives 1x1 only for a
  224x224 input. Here the classifier pools with ``AdaptiveAvgPool2d(1)``: identical at 224
  (layer4 is 7x7 there, one window covering the whole map) and still a global average at the
  student's 256x256 input (layer4 8x8), where the original would give a 2x2 map and its ``fc``
  would fail.

Weights: ``resnet50_ft_weight.pkl`` (MS-Celeb-1M pre-training, VGGFace2 fine-tuning) or
``resnet50_scratch_weight.pkl`` (VGGFace2 only), converted from the VGGFace2 authors' Caffe
models. They are Python-2 pickles of a dict ``state_dict key -> numpy array`` and cannot be
redistributed here; give the file with ``--teacher-weights`` or ``CTD_VGGFACE2_WEIGHTS``.
They are read with a restricted unpickler that only rebuilds numpy arrays (a pickle can run
arbitrary code otherwise).
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ctd_runtime.errors import CtdError
from ctd_runtime.normalization import Normalization
from ctd_train.teachers._base import InputSpec, Teacher, TeacherNetwork
from ctd_train.teachers._registry import TeacherEntry, register_teacher

NAME = "resnet50-vggface2"
NUM_CLASSES = 8631  # VGGFace2 training identities (demo.py N_IDENTITY)
FEATURE_CHANNELS = 2048
LAYERS = (3, 4, 6, 3)
ENV_VAR = "CTD_VGGFACE2_WEIGHTS"
WEIGHT_FILES = ("resnet50_ft_weight.pkl", "resnet50_scratch_weight.pkl")

# datasets/vgg_face2.py: uint8 RGB -> BGR -> float32 - mean_bgr (from resnet50_ft.prototxt), no scaling
INPUT_SPEC = InputSpec(
    size=224,
    normalization=Normalization("BGR", mean=(91.4953, 103.8827, 131.0912), scale=(1.0, 1.0, 1.0)),
)

WEIGHTS_SOURCE = (
    "cydonia999/VGGFace2-pytorch resnet50_ft_weight.pkl or resnet50_scratch_weight.pkl "
    f"(not redistributable, not here): --teacher-weights PATH or ${ENV_VAR}"
)


# --------------------------------------------------------------------------- architecture


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class Bottleneck(nn.Module):
    """1x1 (stride s) -> 3x3 (stride 1) -> 1x1 x4, BN after each, ReLU, residual."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes, stride)  # the stride is here (Caffe style)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


def _make_layer(inplanes: int, planes: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    downsample = None
    if stride != 1 or inplanes != planes * Bottleneck.expansion:
        downsample = nn.Sequential(
            _conv1x1(inplanes, planes * Bottleneck.expansion, stride),
            nn.BatchNorm2d(planes * Bottleneck.expansion),
        )
    layers = [Bottleneck(inplanes, planes, stride, downsample)]
    inplanes = planes * Bottleneck.expansion
    layers += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers), inplanes


def build_encoder() -> nn.Sequential:
    """stem .. layer4: normalised [N,3,H,W] -> [N,2048,H/32,W/32] (ceil at the max-pool).

    Its child names are those of the original ResNet (``conv1``, ``bn1``, ``relu``, ``maxpool``,
    ``layer1`` .. ``layer4``), so its state_dict keys are the pickle's keys."""
    mods: OrderedDict[str, nn.Module] = OrderedDict()
    mods["conv1"] = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
    mods["bn1"] = nn.BatchNorm2d(64)
    mods["relu"] = nn.ReLU(inplace=True)
    mods["maxpool"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
    inplanes = 64
    for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), LAYERS)):
        mods[f"layer{i + 1}"], inplanes = _make_layer(inplanes, planes, blocks, stride=1 if i == 0 else 2)
    enc = nn.Sequential(mods)
    _init_weights(enc)
    return enc


class PooledClassifier(nn.Module):
    """Global average pooling + ``fc`` (2048 -> 8631 identity logits).

    The original is ``AvgPool2d(7, stride=1)``, the same as this adaptive pooling for a 224x224
    input; adaptive pooling also works at 256x256 (8x8 map)."""

    def __init__(self, in_features: int = FEATURE_CHANNELS, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(feats), 1))


class GlobalAveragePool(nn.Module):
    """The 2048-d pooled feature the original's ``include_top=False`` / extractor.py give."""

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats.mean(dim=(2, 3))


def _init_weights(module: nn.Module) -> None:
    # random weights in torchvision's scheme (only used when no file is loaded: tests, benchmarks)
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_network(num_classes: int = NUM_CLASSES) -> TeacherNetwork:
    """The architecture with random weights (what the loader fills)."""
    return TeacherNetwork(
        encoder=build_encoder(),
        feature_channels=FEATURE_CHANNELS,
        classifier=PooledClassifier(FEATURE_CHANNELS, num_classes),
        num_classes=num_classes,
        embedding=GlobalAveragePool(),
    )


def original_state_dict(network: TeacherNetwork) -> "OrderedDict[str, torch.Tensor]":
    """The network's tensors under the original ResNet's key names (``conv1.weight``,
    ``layer1.0.downsample.0.weight``, ..., ``fc.weight``, ``fc.bias``)."""
    sd: OrderedDict[str, torch.Tensor] = OrderedDict(network.encoder.state_dict())
    assert network.classifier is not None
    for k, v in network.classifier.state_dict().items():
        if k.startswith("fc."):
            sd[k] = v
    return sd


# --------------------------------------------------------------------------- safe pickle


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The only globals a pickled dict of numpy arrays needs (numpy 1.x and 2.x module names)."""
    try:  # numpy >= 2
        from numpy._core import multiarray as ma  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as ma  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = ma._reconstruct
        allowed[(mod, "scalar")] = ma.scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and nothing else: any other global (``os.system``,
    ``builtins.eval``, ``torch._utils...``) is refused before it is looked up."""

    _ALLOWED = _numpy_globals()

    def __init__(self, file: Any, path: Path):
        super().__init__(file, encoding="latin1")  # written by Python 2 (str -> latin1)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        obj = self._ALLOWED.get((module, name))
        if obj is None:
            raise CtdError(
                f"refusing to load: the pickle asks for the global {module}.{name}, but a weight "
                "file may only contain numpy arrays (a pickle can run arbitrary code)",
                self._path,
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise CtdError("refusing to load: the pickle uses persistent ids (not a numpy weight dict)", self._path)


def read_weight_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """Read ``resnet50_*_weight.pkl``: a (Python-2) pickle of a dict name -> numpy array."""
    path = Path(path)
    if not path.is_file():
        raise CtdError("VGGFace2 ResNet-50 weight file not found", path)
    try:
        with open(path, "rb") as f:
            if f.read(2) == b"PK":
                raise CtdError(
                    "this is a torch.save zip archive, not the VGGFace2-pytorch weight pickle "
                    "(resnet50_ft_weight.pkl / resnet50_scratch_weight.pkl)", path
                )
            f.seek(0)
            obj = _NumpyOnlyUnpickler(f, path).load()
    except CtdError:
        raise
    except OSError as e:
        raise CtdError(f"cannot read the weight file: {e}", path) from None
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, UnicodeDecodeError, MemoryError, OverflowError) as e:
        raise CtdError(f"cannot read the weight pickle (truncated or not a pickle?): "
                       f"{type(e).__name__}: {e}", path) from None
    if not isinstance(obj, dict):
        raise CtdError(f"the pickle holds a {type(obj).__name__}, expected a dict name -> numpy array", path)
    out: dict[str, np.ndarray] = {}
    for k, v in obj.items():
        if isinstance(k, bytes):
            k = k.decode("latin1")
        if not isinstance(k, str):
            raise CtdError(f"key {k!r} is not a string", path)
        if not isinstance(v, np.ndarray):
            raise CtdError(f"{k!r} is a {type(v).__name__}, expected a numpy array", path)
        if v.dtype.kind not in "fiu":
            raise CtdError(f"{k!r} has dtype {v.dtype}, expected a numeric array", path)
        out[k] = v
    return out


# --------------------------------------------------------------------------- loading


_OPTIONAL_KEYS = ("num_batches_tracked",)  # BN bookkeeping added by PyTorch 0.4.1; unused in eval


def load_weights_into(network: TeacherNetwork, path: str | Path) -> dict[str, np.ndarray]:
    """Copy the pickle's arrays into ``network`` after checking every name and shape.

    Unknown key, missing key or wrong shape -> CtdError naming the file and the first mismatch.
    Missing BN running statistics are an error too: the teacher is a frozen network evaluated
    in eval mode, which needs ``running_mean`` / ``running_var``."""
    path = Path(path)
    arrays = read_weight_pickle(path)
    target = original_state_dict(network)
    unknown = [k for k in arrays if k not in target]
    if unknown:
        raise CtdError(
            f"unknown key {unknown[0]!r} in the weight pickle ({len(unknown)} unknown in all); "
            "expected the state_dict keys of VGGFace2-pytorch's resnet50 (conv1.weight, "
            "layer1.0.downsample.0.weight, ..., fc.weight, fc.bias)", path
        )
    missing = [k for k in target if k not in arrays and not k.endswith(_OPTIONAL_KEYS)]
    if missing:
        stats = [k for k in missing if k.endswith(("running_mean", "running_var"))]
        msg = f"missing key {missing[0]!r} in the weight pickle ({len(missing)} missing in all)"
        if stats:
            msg += (
                f"; {len(stats)} of them are batch-norm running statistics - fatal: the frozen "
                "teacher runs in eval mode and needs running_mean and running_var"
            )
        raise CtdError(msg, path)
    for k, t in target.items():
        if k not in arrays:
            continue
        a = arrays[k]
        if tuple(a.shape) != tuple(t.shape):
            raise CtdError(f"{k!r} has shape {tuple(a.shape)}, the model expects {tuple(t.shape)}", path)
    with torch.no_grad():
        for k, t in target.items():
            if k in arrays:
                t.copy_(torch.from_numpy(np.ascontiguousarray(arrays[k])).to(t.dtype))
    return arrays


def resolve_weights(weights: str | Path | None) -> Path:
    """The pickle to load: `weights` (a file, or a folder holding resnet50_ft_weight.pkl or
    resnet50_scratch_weight.pkl), else $CTD_VGGFACE2_WEIGHTS; CtdError when neither is given."""
    if weights is None:
        env = os.environ.get(ENV_VAR)
        if not env:
            raise CtdError(
                f"teacher {NAME}: its weights (resnet50_ft_weight.pkl or resnet50_scratch_weight.pkl "
                "from cydonia999/VGGFace2-pytorch, converted from the VGGFace2 authors' Caffe models) "
                "are not redistributable and not available here; give the file with "
                f"--teacher-weights PATH or set ${ENV_VAR}"
            )
        weights = env
    weights = Path(weights)
    if weights.is_dir():
        for name in WEIGHT_FILES:
            if (weights / name).is_file():
                return weights / name
        raise CtdError(f"no {' or '.join(WEIGHT_FILES)} in this folder", weights)
    return weights


def load_vggface2_resnet50(weights: Path | None = None) -> Teacher:
    """Load the VGGFace2 ResNet-50 teacher from its weight pickle (path, folder or env)."""
    path = resolve_weights(weights)
    network = build_network()
    load_weights_into(network, path)
    network.eval()
    variant = "ft" if "_ft" in path.name else "scratch" if "scratch" in path.name else "unknown"
    return Teacher(
        name=NAME,
        input_spec=INPUT_SPEC,
        network=network,
        weights_path=path,
        extras={"variant": variant, "num_classes": NUM_CLASSES},
    )


def random_teacher(seed: int = 0) -> Teacher:
    """The same architecture with random weights (for tests and speed benchmarks only)."""
    torch.manual_seed(seed)
    network = build_network()
    network.eval()
    return Teacher(name=NAME, input_spec=INPUT_SPEC, network=network, weights_path=None,
                   extras={"variant": "random", "num_classes": NUM_CLASSES})


def skeleton() -> Teacher:
    """The architecture and input spec, random (untrained) weights."""
    return Teacher(name=NAME, input_spec=INPUT_SPEC, network=build_network())


TEACHER = register_teacher(TeacherEntry(
    name=NAME,
    description="the paper's teacher: ResNet-50 trained on VGGFace2 (8631 identities), 224 px BGR",
    licence="MIT (code); weights: VGGFace2 terms",
    weights_source=WEIGHTS_SOURCE,
    has_classifier=True,
    loader=load_vggface2_resnet50,
    find_weights=resolve_weights,
    skeleton=skeleton,
))
