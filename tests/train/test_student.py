"""The landmark student: SimpleBaseline head, exact H/4 x W/4 output whatever the encoder's stride,
build_student from a teacher. Fake teachers here are tiny; the real ones only check shapes."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from ctd_runtime.normalization import Normalization
from ctd_train.models.student import LandmarkStudent, SimpleBaselineHead, build_student
from ctd_train.teachers._base import InputSpec, Teacher, TeacherNetwork

FAKE_NORMALIZATION = Normalization("RGB", mean=(127.5, 127.5, 127.5), scale=(1 / 127.5,) * 3)
FAKE_CLASSES = 5


class FakeBlock(nn.Module):
    """conv 3x3 + BN + ReLU: a custom (non-container) block, like a ResNet bottleneck."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


def fake_encoder(channels: int = 8) -> nn.Sequential:
    """ResNet-shaped: stem + two stages (Sequentials of blocks); stride 8."""
    return nn.Sequential(OrderedDict(
        stem=nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU()),
        stage1=nn.Sequential(FakeBlock(4, channels, 2), FakeBlock(channels, channels, 1)),
        stage2=nn.Sequential(FakeBlock(channels, channels, 2), FakeBlock(channels, channels, 1)),
    ))


def fake_classifier(channels: int = 8, classes: int = FAKE_CLASSES) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))


def fake_teacher(with_classifier: bool = True, channels: int = 8, seed: int = 0) -> Teacher:
    torch.manual_seed(seed)
    net = TeacherNetwork(
        fake_encoder(channels), feature_channels=channels,
        classifier=fake_classifier(channels) if with_classifier else None,
        num_classes=FAKE_CLASSES if with_classifier else None,
    )
    net.eval()
    return Teacher(name="fake-teacher", input_spec=InputSpec(32, FAKE_NORMALIZATION), network=net)


def stride_encoder(total_stride: int, channels: int = 4) -> nn.Sequential:
    """log2(total_stride) stride-2 convolutions with padding 1 (ceil sizes)."""
    layers, cin, s = [], 3, 1
    while s < total_stride:
        layers += [nn.Conv2d(cin, channels, 3, 2, 1), nn.ReLU()]
        cin, s = channels, s * 2
    return nn.Sequential(*layers)


def odd_encoder(channels: int = 4) -> nn.Sequential:
    """Stride 2 * 3 with padding 0: sizes that no power of two undoes."""
    return nn.Sequential(nn.Conv2d(3, channels, 7, 2, 0), nn.ReLU(), nn.Conv2d(channels, channels, 3, 3, 0))


# ------------------------------------------------------------------------------ head


def test_head_layers_and_init():
    torch.manual_seed(0)
    head = SimpleBaselineHead(64, 14, channels=32)
    deconvs = [m for m in head.modules() if isinstance(m, nn.ConvTranspose2d)]
    bns = [m for m in head.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(deconvs) == 3 and len(bns) == 3
    for d in deconvs:
        assert d.kernel_size == (4, 4) and d.stride == (2, 2) and d.padding == (1, 1)
        assert d.output_padding == (0, 0) and d.bias is None and d.out_channels == 32
        assert d.weight.mean().abs() < 2e-4 and 0.0007 < d.weight.std() < 0.0013
    assert deconvs[0].in_channels == 64
    for b in bns:
        assert torch.all(b.weight == 1) and torch.all(b.bias == 0)
    assert head.final.kernel_size == (1, 1) and head.final.out_channels == 14
    assert 0.0007 < head.final.weight.std() < 0.0013 and torch.all(head.final.bias == 0)
    assert head(torch.randn(2, 64, 3, 5)).shape == (2, 14, 24, 40)


# ------------------------------------------------------------------------------ student size


@pytest.mark.parametrize("size", [(256, 256), (224, 224), (192, 160)])
@pytest.mark.parametrize("encoder", ["stride32", "stride8", "odd"])
def test_student_output_is_exactly_quarter(size, encoder):
    enc = {"stride32": stride_encoder(32), "stride8": stride_encoder(8), "odd": odd_encoder()}[encoder]
    student = LandmarkStudent(enc, 4, num_landmarks=3, head_channels=4).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        out = student(x)
    assert out.shape == (1, 3, size[0] // 4, size[1] // 4)


def test_resize_only_when_needed():
    # stride 32 at 256: 8x8 features -> 64x64 from the head itself; the forward is exactly the head's
    torch.manual_seed(0)
    student = LandmarkStudent(stride_encoder(32), 4, num_landmarks=2, head_channels=4).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(student(x), student.head(student.encoder(x)))


def test_forward_train_keys():
    torch.manual_seed(0)
    student = LandmarkStudent(fake_encoder(), 8, num_landmarks=3, classifier=fake_classifier(), head_channels=4)
    x = torch.randn(2, 3, 32, 32)
    out = student.forward_train(x)
    assert set(out) == {"heatmaps", "features", "logits"}
    assert out["heatmaps"].shape == (2, 3, 8, 8)
    assert out["features"].shape == (2, 8, 4, 4)
    assert out["logits"].shape == (2, FAKE_CLASSES)
    no_cls = LandmarkStudent(fake_encoder(), 8, num_landmarks=3, head_channels=4)
    assert set(no_cls.forward_train(x)) == {"heatmaps", "features"}


def test_build_student_copies_teacher_weights():
    teacher = fake_teacher()
    student = build_student(teacher, num_landmarks=3, head_channels=4)
    t_sd, s_sd = teacher.network.encoder.state_dict(), student.encoder.state_dict()
    assert t_sd.keys() == s_sd.keys()
    assert all(torch.equal(t_sd[k], s_sd[k]) for k in t_sd)
    assert student.classifier is not None
    assert torch.equal(student.classifier[2].weight, teacher.network.classifier[2].weight)
    assert all(p.requires_grad for p in student.parameters())
    # copies, not shared: training the student leaves the teacher alone
    with torch.no_grad():
        next(student.encoder.parameters()).add_(1.0)
    assert not torch.equal(next(student.encoder.parameters()), next(teacher.network.encoder.parameters()))
    assert student.head.deconv[0].in_channels == 8 and student.head.final.out_channels == 3

    plain = build_student(fake_teacher(with_classifier=False), num_landmarks=3, head_channels=4)
    assert plain.classifier is None


# ------------------------------------------------------------------------------ real teachers


def _real_teacher(name: str, teachers_dir: Path) -> Teacher:
    if name == "resnet50-vggface2":
        vr = pytest.importorskip("ctd_train.teachers.vggface2_resnet")
        return vr.random_teacher()            # no real weights here: the architecture is what matters
    if name == "dlib-resnet29":
        mod = pytest.importorskip("ctd_train.teachers.dlib_resnet")
        path = teachers_dir / name / mod.WEIGHTS_FILE
    else:
        mod = pytest.importorskip("ctd_train.teachers.hse_mobilenet")
        path = teachers_dir / name / mod.JSON_NAME
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return mod.load(path)


@pytest.mark.parametrize("name", ["dlib-resnet29", "hse-mobilenet-vggface2", "resnet50-vggface2"])
def test_real_teacher_student_shape_at_256(name, teachers_dir):
    teacher = _real_teacher(name, teachers_dir)
    student = build_student(teacher, num_landmarks=14, head_channels=16).eval()
    with torch.no_grad():
        out = student.forward_train(torch.randn(1, 3, 256, 256))
    assert out["heatmaps"].shape == (1, 14, 64, 64)
    assert out["features"].shape[1] == teacher.network.feature_channels
    if teacher.has_classifier:
        assert out["logits"].shape == (1, teacher.network.num_classes)
