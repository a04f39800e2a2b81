"""The methods of Table 1: freezing (requires_grad and eval state), loss terms per method, the
lambda weighting, the frozen teacher, errors before training, and FTP's final block per teacher."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ctd_runtime.errors import CtdError
from ctd_train.methods import (
    METHODS,
    LandmarkMethod,
    MethodConfig,
    build_method,
    final_block,
    input_normalization,
)
from ctd_train.models.hourglass import HOURGLASS_NORMALIZATION, StackedHourglass
from ctd_train.models.student import LandmarkStudent
from tests.train.test_student import FAKE_NORMALIZATION, _real_teacher, fake_teacher

K = 3
SIZE = 32


def make(name: str, teacher=None, **kw) -> LandmarkMethod:
    if teacher is None and name != "hg":
        teacher = fake_teacher(with_classifier=True)
    cfg = MethodConfig(name, head_channels=4, **kw)
    torch.manual_seed(1)
    return build_method(cfg, K, teacher)


def batch(n: int = 2, seed: int = 0, size: int = SIZE):
    """Images and Gaussian target heatmaps (sigma 1.5) at a quarter of `size`."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(n, 3, size, size, generator=g)
    target = torch.zeros(n, K, size // 4, size // 4)
    ys, xs = torch.meshgrid(torch.arange(size // 4.0), torch.arange(size // 4.0), indexing="ij")
    for i in range(n):
        for k in range(K):
            cx, cy = 1 + (k + i) % 6, 2 + k
            target[i, k] = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 1.5**2))
    return image, target, torch.ones(n, K)


def bn_modes(module: nn.Module) -> set[bool]:
    return {m.training for m in module.modules() if isinstance(m, nn.BatchNorm2d)}


# ------------------------------------------------------------------------------ config


def test_methods_and_config_round_trip():
    assert METHODS == ("fe", "ftp", "ft", "hg", "ctd-cd", "ctd-ed", "ctd-com", "kd")
    cfg = MethodConfig("ctd-com", lambda_=0.01, mu=3.0, head_channels=64, hg_stacks=4)
    assert MethodConfig.from_dict(cfg.to_dict()) == cfg
    d = cfg.to_dict()
    d["lambda"] = d.pop("lambda_")
    assert MethodConfig.from_dict(d).lambda_ == 0.01
    assert MethodConfig("CTD-ED").name == "ctd-ed"
    with pytest.raises(CtdError, match="unknown key 'lr'"):
        MethodConfig.from_dict({"name": "ft", "lr": 1})
    defaults = MethodConfig("ft")
    assert (defaults.lambda_, defaults.mu, defaults.head_channels, defaults.hg_stacks) == (0.002, 2.0, 256, 2)


# ------------------------------------------------------------------------------ errors


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(CtdError) as e:
        build_method(MethodConfig("distill"), K, fake_teacher())
    for m in METHODS:
        assert m in str(e.value)


@pytest.mark.parametrize("name", ["ctd-cd", "ctd-com"])
def test_classifier_distillation_needs_a_classifier(name):
    with pytest.raises(CtdError, match="fake-teacher.*has none") as e:
        build_method(MethodConfig(name), K, fake_teacher(with_classifier=False))
    msg = str(e.value)
    assert "ctd-ed" in msg
    try:
        from ctd_train.teachers._registry import teachers_with_classifier
        names = teachers_with_classifier()
    except Exception:
        names = []
    for n in names:
        assert n in msg


@pytest.mark.parametrize("name", ["fe", "ftp", "ft", "ctd-cd", "ctd-ed", "ctd-com"])
def test_teacher_methods_need_a_teacher(name):
    with pytest.raises(CtdError, match="no teacher"):
        build_method(MethodConfig(name), K, None)


def test_bad_weights():
    with pytest.raises(CtdError, match="lambda"):
        build_method(MethodConfig("ctd-ed", lambda_=-1), K, fake_teacher())
    with pytest.raises(CtdError, match="mu"):
        build_method(MethodConfig("ctd-cd", mu=0), K, fake_teacher())
    with pytest.raises(CtdError, match="landmark"):
        build_method(MethodConfig("ft"), 0, fake_teacher())


# ------------------------------------------------------------------------------ freezing


def test_fe_freezes_the_whole_encoder():
    method = make("fe")
    student = method.predictor
    assert isinstance(student, LandmarkStudent) and method.teacher is None and student.classifier is None
    assert not any(p.requires_grad for p in student.encoder.parameters())
    assert all(p.requires_grad for p in student.head.parameters())
    method.train()
    assert bn_modes(student.encoder) == {False} and bn_modes(student.head) == {True}
    # the frozen BN statistics do not move while training
    before = [b.running_mean.clone() for b in student.encoder.modules() if isinstance(b, nn.BatchNorm2d)]
    image, target, w = batch()
    method(image, target, w)["loss"].backward()
    after = [b.running_mean for b in student.encoder.modules() if isinstance(b, nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert {id(p) for p in method.trainable_parameters()} == {id(p) for p in student.head.parameters()}
    method.eval()
    assert bn_modes(student) == {False}


def test_ftp_trains_only_the_final_block_of_the_encoder():
    method = make("ftp")
    enc = method.predictor.encoder
    assert final_block(enc) is enc.stage2
    assert all(p.requires_grad for p in enc.stage2.parameters())
    assert not any(p.requires_grad for p in list(enc.stem.parameters()) + list(enc.stage1.parameters()))
    method.train()
    assert bn_modes(enc.stem) == {False} and bn_modes(enc.stage1) == {False}
    assert bn_modes(enc.stage2) == {True} and bn_modes(method.predictor.head) == {True}
    method.eval()
    assert bn_modes(enc.stage2) == {False}


def test_ft_trains_everything():
    method = make("ft")
    assert method.teacher is None and method.predictor.classifier is None
    assert all(p.requires_grad for p in method.parameters())
    method.train()
    assert bn_modes(method) == {True}


@pytest.mark.parametrize("name", ["ctd-cd", "ctd-ed", "ctd-com"])
def test_ctd_teacher_is_frozen_and_stays_in_eval(name):
    method = make(name)
    assert method.teacher is not None
    assert not any(p.requires_grad for p in method.teacher.parameters())
    assert all(p.requires_grad for p in method.predictor.parameters())
    method.train()
    assert not method.teacher.training and bn_modes(method.teacher) == {False}
    assert bn_modes(method.predictor) == {True}
    assert (method.predictor.classifier is not None) == (name != "ctd-ed")
    assert (method.teacher.classifier is not None) == (name != "ctd-ed")
    teacher_ids = {id(p) for p in method.teacher.parameters()}
    assert not teacher_ids & {id(p) for p in method.trainable_parameters()}


def test_hg_builds_the_hourglass_without_a_teacher():
    method = make("hg", hg_stacks=3)
    assert isinstance(method.predictor, StackedHourglass) and method.predictor.num_stacks == 3
    assert method.teacher is None
    assert method.input_normalization() == HOURGLASS_NORMALIZATION
    assert input_normalization("hg", None) == HOURGLASS_NORMALIZATION


def test_input_normalization_is_the_teachers():
    teacher = fake_teacher()
    assert make("ft", teacher).input_normalization() == FAKE_NORMALIZATION
    assert input_normalization(MethodConfig("ctd-ed"), teacher) == FAKE_NORMALIZATION
    with pytest.raises(CtdError):
        input_normalization("ft", None)


# ------------------------------------------------------------------------------ losses


@pytest.mark.parametrize("name,terms", [
    ("fe", {"l_r"}), ("ftp", {"l_r"}), ("ft", {"l_r"}), ("hg", {"l_r"}),
    ("ctd-cd", {"l_r", "l_cd"}), ("ctd-ed", {"l_r", "l_ed"}), ("ctd-com", {"l_r", "l_cd", "l_ed"}),
])
def test_loss_terms_per_method(name, terms):
    method = make(name)
    size = 64 if name == "hg" else SIZE                # depth-4 hourglasses need 16x16 heatmaps
    image, target, w = batch(size=size)
    out = method(image, target, w)
    assert set(out) == terms | {"loss", "pred"}
    assert set(method.loss_terms) == terms
    assert out["pred"].shape == (2, K, size // 4, size // 4)
    assert all(out[t].shape == () and torch.isfinite(out[t]) for t in terms | {"loss"})
    if terms == {"l_r"}:
        assert torch.equal(out["loss"], out["l_r"])


@pytest.mark.parametrize("name", ["ctd-cd", "ctd-ed", "ctd-com"])
def test_lambda_weighting(name):
    lam = 0.5
    method = make(name, lambda_=lam)
    image, target, w = batch()
    out = method(image, target, w)
    want = out["l_r"].item() + lam * (out.get("l_cd", torch.tensor(0.0)).item()
                                      + out.get("l_ed", torch.tensor(0.0)).item())
    assert out["loss"].item() == pytest.approx(want, rel=1e-6)
    assert ("l_cd" in out) == (name != "ctd-ed") and ("l_ed" in out) == (name != "ctd-cd")
    # at the start the student's encoder (and classifier) is the teacher's: in eval mode
    # (the teacher's BN statistics, before a training step moved the student's) both terms are 0
    with torch.no_grad():
        out = make(name, lambda_=lam).eval()(image, target, w)
    for term in ("l_cd", "l_ed"):
        if term in out:
            assert out[term].item() == pytest.approx(0.0, abs=1e-6)


def test_hg_supervises_every_stack():
    from ctd_train.losses import heatmap_loss

    method = make("hg")
    method.eval()                                   # deterministic BN for the comparison
    image, target, w = batch(size=64)
    with torch.no_grad():
        out = method(image, target, w)
        stacks = method.predictor.forward_train(image)["stack_heatmaps"]
    want = sum(heatmap_loss(h, target, w).item() for h in stacks)
    assert out["l_r"].item() == pytest.approx(want, rel=1e-6)
    assert torch.equal(out["pred"], stacks[-1])


def test_target_weight_drops_landmarks():
    method = make("ft").eval()
    image, target, _ = batch()
    w = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    with torch.no_grad():
        out = method(image, target, w)
        pred = method.predictor(image)
    want = ((pred - target) ** 2)[0, [0, 2]].sum().item() / 2
    assert out["l_r"].item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("name", ["ctd-cd", "ctd-com"])
def test_gradients_do_not_reach_the_teacher(name):
    method = make(name, lambda_=1.0)
    image, target, w = batch()
    method.train()
    method(image, target, w)["loss"].backward()
    assert all(p.grad is None for p in method.teacher.parameters())
    # the student's classifier copy and its encoder learn from the distillation
    assert method.predictor.classifier is not None
    assert all(p.grad is not None for p in method.predictor.encoder.parameters())


def test_distillation_pulls_the_student_towards_the_teacher():
    # a student whose encoder drifted from the teacher's gets a nonzero L_ED / L_CD whose gradient
    # points back: one step on the distillation term alone lowers it
    method = make("ctd-com", lambda_=1.0)
    with torch.no_grad():
        for p in method.predictor.encoder.parameters():
            p.add_(0.3 * torch.randn_like(p))
    method.eval()
    image, target, w = batch()
    out = method(image, target, w)
    d0 = (out["l_cd"] + out["l_ed"])
    assert d0.item() > 1e-4
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.1)
    d0.backward()
    opt.step()
    out = method(image, target, w)
    assert (out["l_cd"] + out["l_ed"]).item() < d0.item()


def test_one_step_reduces_the_loss_for_ft():
    method = make("ft")
    method.train()
    image, target, w = batch()
    opt = torch.optim.Adam(method.trainable_parameters(), lr=1e-3)
    loss0 = method(image, target, w)["loss"]
    opt.zero_grad()
    loss0.backward()
    opt.step()
    loss1 = method(image, target, w)["loss"]
    assert loss1.item() < loss0.item()


def test_teacher_sees_the_same_image():
    method = make("ctd-ed")
    calls = []
    method.teacher.encoder.register_forward_hook(lambda m, i, o: calls.append(i[0]))
    image, target, w = batch()
    method(image, target, w)
    assert len(calls) == 1 and torch.equal(calls[0], image)


# ------------------------------------------------------------------------------ final block


def test_final_block_rule_on_fakes():
    # container of containers (MobileNet-like): descend to the last block
    mobile = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.Sequential(nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()), nn.Sequential(nn.Conv2d(4, 4, 1), nn.ReLU())),
    )
    assert final_block(mobile) is mobile[1][1]
    # trailing parameter-free layers are skipped
    tail = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.Conv2d(4, 4, 3)), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    assert final_block(tail) is tail[1]
    conv = nn.Conv2d(3, 4, 3)
    assert final_block(conv) is conv


def test_final_block_of_real_teachers(teachers_dir: Path):
    found = 0
    for name, attr in [("resnet50-vggface2", "layer4"), ("dlib-resnet29", "level0"),
                       ("hse-mobilenet-vggface2", None)]:
        try:
            teacher = _real_teacher(name, teachers_dir)
        except pytest.skip.Exception:
            continue
        found += 1
        enc = teacher.network.encoder
        want = enc.blocks[12] if attr is None else getattr(enc, attr)
        assert final_block(enc) is want, name
    if not found:
        pytest.skip("no real teacher available")


def test_ftp_on_hse_trains_block_13_only(teachers_dir: Path):
    teacher = _real_teacher("hse-mobilenet-vggface2", teachers_dir)
    method = build_method(MethodConfig("ftp", head_channels=4), 14, teacher)
    enc = method.predictor.encoder
    trainable = {tuple(n.split(".")[:2]) for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {("blocks", "12")}
