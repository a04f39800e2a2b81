"""The stacked-hourglass baseline: output sizes, stacks, intermediate heatmaps feeding back,
modest size, and its input normalisation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ctd_train.models.hourglass import HOURGLASS_NORMALIZATION, Hourglass, StackedHourglass


def test_default_size_is_modest_and_shape_at_256():
    torch.manual_seed(0)
    model = StackedHourglass(14).eval()
    n = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < n < 5e6
    stem_conv = model.stem[0]
    assert stem_conv.kernel_size == (7, 7) and stem_conv.stride == (2, 2)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 256, 256)).shape == (1, 14, 64, 64)


@pytest.mark.parametrize("size", [(224, 224), (192, 160), (130, 122), (99, 101)])
def test_output_is_exactly_quarter(size):
    torch.manual_seed(0)
    model = StackedHourglass(3, num_stacks=2, channels=8, depth=4).eval()
    with torch.no_grad():
        out = model.forward_train(torch.randn(1, 3, *size))
    want = (1, 3, size[0] // 4, size[1] // 4)
    assert out["heatmaps"].shape == want
    assert len(out["stack_heatmaps"]) == 2 and all(h.shape == want for h in out["stack_heatmaps"])
    assert torch.equal(out["heatmaps"], out["stack_heatmaps"][-1])


def test_depth_and_stacks():
    model = StackedHourglass(3, num_stacks=3, channels=8, depth=4)
    assert len(model.hourglasses) == 3 and len(model.heads) == 3
    assert len(model.merge_features) == 2 and len(model.merge_heatmaps) == 2
    levels, hg = 0, model.hourglasses[0]
    while isinstance(hg, Hourglass):
        levels, hg = levels + 1, hg.low2
    assert levels == 4


def test_intermediate_heatmaps_feed_the_next_stack():
    torch.manual_seed(0)
    model = StackedHourglass(3, num_stacks=2, channels=8, depth=2)
    x = torch.randn(2, 3, 32, 32)
    out = model.forward_train(x)
    # the last stack's output depends on the first stack's heatmap head through merge_heatmaps
    out["heatmaps"].sum().backward()
    assert model.merge_heatmaps[0].weight.grad is not None and model.merge_heatmaps[0].weight.grad.abs().sum() > 0
    assert model.heads[0].weight.grad is not None and model.heads[0].weight.grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        StackedHourglass(3, num_stacks=0)


def test_normalization():
    n = HOURGLASS_NORMALIZATION
    assert n.channel_order == "RGB"
    assert n.mean == pytest.approx((123.675, 116.28, 103.53))
    assert n.scale == pytest.approx((1 / 58.395, 1 / 57.12, 1 / 57.375))
    assert isinstance(StackedHourglass(2, channels=8).stem[0], nn.Conv2d)
