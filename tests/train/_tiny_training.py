"""A tiny fake teacher and tiny training configs, so trainer/checkpoint/evaluate tests run in seconds.

`tiny_teachers(monkeypatch)` registers `tiny-test` (with a 5-class classifier) and `tiny-nocls`
(without) in the teacher registry, for the duration of one test.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ctd_runtime.errors import CtdError
from ctd_runtime.normalization import Normalization
from ctd_train.teachers import _registry
from ctd_train.teachers._base import InputSpec, Teacher, TeacherNetwork

from tests.train._data_synth import make_folder

TINY = "tiny-test"
TINY_NOCLS = "tiny-nocls"
TINY_NORMALIZATION = Normalization("BGR", (127.5, 127.5, 127.5), (1 / 127.5, 1 / 127.5, 1 / 127.5))


def _network(with_classifier: bool) -> TeacherNetwork:
    """Encoder of stride 32 (64x64 input -> 16 x 2 x 2), so the 3-deconvolution head gives 16x16."""
    encoder = nn.Sequential(
        nn.Conv2d(3, 8, 4, stride=4), nn.ReLU(),
        nn.Conv2d(8, 16, 4, stride=4), nn.ReLU(),
        nn.AvgPool2d(2),
    )
    classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5)) if with_classifier else None
    net = TeacherNetwork(encoder, feature_channels=16, classifier=classifier, num_classes=5 if with_classifier else None)
    g = torch.Generator().manual_seed(1234)  # fixed "pretrained" weights, independent of the global RNG
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net.eval()


def _teacher(name: str, with_classifier: bool) -> Teacher:
    return Teacher(name=name, input_spec=InputSpec(64, TINY_NORMALIZATION), network=_network(with_classifier))


def _loader(name: str, with_classifier: bool):
    def load(weights: Path | None) -> Teacher:
        if weights is not None and not Path(weights).is_file():
            raise CtdError("teacher weights not found", path=weights)
        return _teacher(name, with_classifier)

    return load


def _find_weights(weights: Path | None) -> Path:
    if weights is None:
        raise CtdError("tiny test teachers have no weights file")
    return Path(weights)


def tiny_teachers(monkeypatch) -> None:
    for name, cls in ((TINY, True), (TINY_NOCLS, False)):
        entry = _registry.TeacherEntry(
            name=name, description="tiny test teacher", licence="test only", weights_source="tests",
            has_classifier=cls, loader=_loader(name, cls), find_weights=_find_weights,
            skeleton=lambda n=name, c=cls: _teacher(n, c),
        )
        monkeypatch.setitem(_registry._REGISTRY, name, entry)


def tiny_data(root: Path, n_subjects: int = 4, per_subject: int = 2, seed: int = 0) -> Path:
    """A folder of random 200x160 images with IMM-like 58-point annotations."""
    make_folder(root, n_images=n_subjects * per_subject, n_subjects=n_subjects, seed=seed)
    return root


def tiny_config(data: Path, out: Path, method: str = "ctd-com", epochs: int = 2, teacher: str = TINY, **kw):
    from ctd_train.config import TrainConfig
    from ctd_train.methods import MethodConfig

    base = dict(
        data=str(data), out=str(out), schema="imm14", teacher=teacher,
        method=MethodConfig(name=method, head_channels=16, hg_stacks=1),
        epochs=epochs, batch_size=2, lr=1e-3, seed=0, val_subjects=1, test_subjects=1,
        input_size=64, threads=1, workers=0, decode="argmax",
    )
    base.update(kw)
    return TrainConfig(**base)
