"""The head rewrite (`ctd_export.subpixel`): a stride-2 4x4 ConvTranspose2d as one Conv and
DepthToSpace computes the same layer, BatchNorm folded or not, for any channel count and odd or
even sizes; the swap leaves the trained predictor alone and refuses what it does not cover."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from ctd_export.subpixel import SubPixelDeconv, rewrite_deconvolutions, rewritten_head, subpixel_weight
from ctd_runtime.errors import CtdError
from ctd_train.models.student import SimpleBaselineHead

KERNELS = {"subpixel": 3, "subpixel2x2": 2}
SHAPES = [(1, 1, 1, 1), (3, 5, 4, 4), (16, 8, 5, 7), (8, 16, 6, 3), (32, 24, 9, 8)]  # C, O, H, W


def _deconv(c: int, o: int, bias: bool, seed: int) -> nn.ConvTranspose2d:
    torch.manual_seed(seed)
    d = nn.ConvTranspose2d(c, o, 4, 2, 1, bias=bias)
    nn.init.normal_(d.weight)
    if bias:
        nn.init.normal_(d.bias)
    return d.eval()


def _batchnorm(o: int, seed: int) -> nn.BatchNorm2d:
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(o).eval()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.2, 3.0)
    bn.weight.data.normal_()
    bn.bias.data.normal_()
    return bn


@pytest.mark.parametrize("head_op", list(KERNELS))
@pytest.mark.parametrize("shape,bias", list(itertools.product(SHAPES, (False, True))))
def test_equals_conv_transpose_on_random_weights(head_op, shape, bias):
    c, o, h, w = shape
    deconv = _deconv(c, o, bias, seed=c * 7 + o)
    sub = SubPixelDeconv.from_conv_transpose(deconv, kernel=KERNELS[head_op])
    x = torch.randn(3, c, h, w, generator=torch.Generator().manual_seed(h * 10 + w))
    with torch.no_grad():
        ref, got = deconv(x), sub(x)
    assert got.shape == ref.shape == (3, o, 2 * h, 2 * w)
    scale = float(ref.abs().max())
    assert float((got - ref).abs().max()) <= 1e-5 * max(scale, 1.0)


@pytest.mark.parametrize("head_op", list(KERNELS))
def test_batchnorm_folded_equals_deconv_then_batchnorm(head_op):
    deconv, bn = _deconv(12, 10, True, seed=1), _batchnorm(10, seed=2)
    sub = SubPixelDeconv.from_conv_transpose(deconv, bn, kernel=KERNELS[head_op])
    x = torch.randn(2, 12, 7, 6)
    with torch.no_grad():
        ref, got = bn(deconv(x)), sub(x)
    assert float((got - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
    with torch.no_grad():  # and the fold matters: without it the result is the plain deconvolution
        assert float((SubPixelDeconv.from_conv_transpose(deconv, kernel=KERNELS[head_op])(x) - ref).abs().max()) > 0.1


@pytest.mark.parametrize("kernel", [3, 2])
def test_the_weight_is_a_rearrangement_of_the_kernel(kernel):
    w = torch.arange(1, 3 * 2 * 16 + 1, dtype=torch.float64).reshape(3, 2, 4, 4)
    k = subpixel_weight(w, kernel)
    assert k.shape == (8, 3, kernel, kernel)
    nonzero = k[k != 0]
    # each deconvolution tap lands once: 4 phases x 2 x 2 taps = 16 per (c, o) pair
    assert sorted(nonzero.tolist()) == sorted(w.flatten().tolist())
    assert int((k == 0).sum()) == (8 * 3 * 9 - 96 if kernel == 3 else 0)
    for o, c in itertools.product(range(2), range(3)):  # channel o*4 + p holds only channel o's taps
        taps = k[o * 4:(o + 1) * 4, c]
        assert set(taps[taps != 0].tolist()) == set(w[c, o].flatten().tolist())


@pytest.mark.parametrize("head_op", list(KERNELS))
def test_the_student_head_rewritten_in_a_copy(head_op):
    torch.manual_seed(0)
    head = SimpleBaselineHead(in_channels=24, num_landmarks=5, channels=16).eval()
    for m in head.modules():
        if isinstance(m, nn.ConvTranspose2d):
            nn.init.normal_(m.weight, std=0.2)
        elif isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.3)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 24, 5, 4)
    with torch.no_grad():
        ref = head(x)
        twin = rewritten_head(head, head_op)
        got = twin(x)
    assert float((got - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
    kinds = [type(m).__name__ for m in twin.deconv]
    assert kinds == ["SubPixelDeconv", "Identity", "Identity"] * 3  # BatchNorm folded, ReLU taken over
    assert all(m.relu for m in twin.deconv if isinstance(m, SubPixelDeconv))
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in head.modules()) == 3  # the original is untouched
    assert not any(isinstance(m, (nn.ConvTranspose2d, nn.BatchNorm2d)) for m in twin.modules())


def test_what_the_rewrite_does_not_cover_stays():
    net = nn.Sequential(nn.ConvTranspose2d(4, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.ConvTranspose2d(4, 2, 4, 2, 1),
                        nn.BatchNorm2d(2)).eval()
    net[3].train()  # batch statistics: not foldable, kept as it is
    assert rewrite_deconvolutions(net, "subpixel") == 1
    assert isinstance(net[0], nn.ConvTranspose2d) and isinstance(net[1], nn.BatchNorm2d)
    assert isinstance(net[2], SubPixelDeconv) and isinstance(net[3], nn.BatchNorm2d)
    assert not net[2].relu
    unfolded = nn.Sequential(nn.ConvTranspose2d(4, 2, 4, 2, 1), nn.BatchNorm2d(2), nn.ReLU()).eval()
    rewrite_deconvolutions(unfolded, "subpixel", fold_bn=False)  # the ReLU cannot move past the BatchNorm
    assert [type(m).__name__ for m in unfolded] == ["SubPixelDeconv", "BatchNorm2d", "ReLU"] and not unfolded[0].relu
    assert rewrite_deconvolutions(nn.Sequential(nn.ConvTranspose2d(2, 2, 4, 2, 1)), "convtranspose") == 0
    with pytest.raises(CtdError, match="no ConvTranspose2d"):
        rewritten_head(nn.Sequential(nn.Conv2d(3, 3, 1), nn.ConvTranspose2d(3, 3, 2, 2)), "subpixel")
    with pytest.raises(CtdError, match="unknown head op"):
        rewrite_deconvolutions(nn.Sequential(), "winograd")
    with pytest.raises(ValueError, match="kernel 4, stride 2"):
        SubPixelDeconv.from_conv_transpose(nn.ConvTranspose2d(2, 2, 4, 2, 1, output_padding=1))


def test_double_precision_is_exact_to_rounding():
    deconv = _deconv(6, 5, True, seed=3).double()
    x = torch.randn(1, 6, 5, 5, dtype=torch.float64)
    for kernel in (3, 2):
        with torch.no_grad():
            diff = (SubPixelDeconv.from_conv_transpose(deconv, kernel=kernel)(x) - deconv(x)).abs().max()
        assert float(diff) < 1e-12
