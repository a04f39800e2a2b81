"""L_R, L_CD and L_ED against numbers worked out by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from ctd_train.losses import (
    classifier_distillation_loss,
    encoder_distillation_loss,
    heatmap_loss,
    landmark_loss_weights,
    pfl_length_loss,
    local_centroid,
)


def t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


# ------------------------------------------------------------------------------ eq 1


def test_heatmap_loss_by_hand():
    # N=2, K=2, 1x2 heatmaps
    pred = t([[[[1, 2]], [[0, 1]]],
              [[[0, 0]], [[3, 0]]]])
    target = t([[[[0, 0]], [[0, 0]]],
                [[[1, 1]], [[1, 0]]]])
    # image 0: (1 + 4) + (0 + 1) = 6; image 1: (1 + 1) + (4 + 0) = 6 -> mean 6
    assert heatmap_loss(pred, target).item() == pytest.approx(6.0)
    # landmark 1 of image 0 and landmark 0 of image 1 dropped: (5 + 4) / 2 = 4.5
    w = t([[1, 0], [0, 1]])
    assert heatmap_loss(pred, target, w).item() == pytest.approx(4.5)


def test_heatmap_loss_sums_over_pixels_and_averages_over_images():
    pred = torch.zeros(3, 2, 4, 4)
    target = torch.ones(3, 2, 4, 4)
    assert heatmap_loss(pred, target).item() == pytest.approx(32.0)   # 2*4*4 per image
    assert heatmap_loss(pred, target).shape == ()


def test_heatmap_loss_shape_mismatch():
    with pytest.raises(ValueError):
        heatmap_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 5))


# ------------------------------------------------------------------------------ eq 3


def test_classifier_distillation_by_hand():
    mu = 2.0
    # image 0: teacher [0, 0] -> [1/2, 1/2]; student [2 ln 3, 0] / 2 -> [3/4, 1/4]
    #   diff [1/4, -1/4] -> squared L2 = 1/16 + 1/16 = 1/8
    # image 1: identical up to a shift of the logits -> 0
    teacher = t([[0.0, 0.0], [1.0, 5.0]])
    student = t([[2 * math.log(3), 0.0], [11.0, 15.0]])
    assert classifier_distillation_loss(teacher, student, mu=mu).item() == pytest.approx(0.0625, abs=1e-6)


def test_classifier_distillation_temperature():
    # mu = 1: teacher [ln 3, 0] -> [3/4, 1/4], student [0, ln 3] -> [1/4, 3/4]: (1/2)^2 * 2 = 1/2
    teacher = t([[math.log(3), 0.0]])
    student = t([[0.0, math.log(3)]])
    assert classifier_distillation_loss(teacher, student, mu=1.0).item() == pytest.approx(0.5, abs=1e-6)
    # mu = 2 on the same logits: [sqrt3, 1]/(sqrt3+1) vs reversed
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    want = 2 * (p - (1 - p)) ** 2
    assert classifier_distillation_loss(teacher, student).item() == pytest.approx(want, abs=1e-6)


# ------------------------------------------------------------------------------ eq 4


def test_encoder_distillation_by_hand():
    # [N=2, C=2, 1, 2]; each image flattened to 4 numbers
    student = t([[[[1, 0]], [[0, 0]]],      # (1, 0, 0, 0)
                 [[[0, 0]], [[2, 0]]]])     # (0, 0, 2, 0)
    teacher = t([[[[1, 1]], [[0, 0]]],      # (1, 1, 0, 0): cos = 1/sqrt2
                 [[[0, 0]], [[-1, 0]]]])    # (0, 0, -1, 0): cos = -1
    want = ((1 - 1 / math.sqrt(2)) + (1 - (-1))) / 2
    assert encoder_distillation_loss(teacher, student).item() == pytest.approx(want, abs=1e-6)


def test_encoder_distillation_is_over_the_whole_map():
    student = t([[[[1, 0]], [[3, 0]]]])     # (1, 0, 3, 0)
    teacher = t([[[[1, 0]], [[0, 1]]]])     # (1, 0, 0, 1)
    # whole map: dot 1, norms sqrt10 and sqrt2 -> cos 1/sqrt20 (per channel it would be (1 + 0) / 2)
    want = 1 - 1 / math.sqrt(20)
    assert encoder_distillation_loss(teacher, student).item() == pytest.approx(want, abs=1e-6)
    same = torch.randn(2, 3, 2, 2)
    assert encoder_distillation_loss(same, 5 * same).item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_gradients_reach_the_student_only():
    teacher = torch.randn(2, 3, 2, 2)
    student = torch.randn(2, 3, 2, 2, requires_grad=True)
    encoder_distillation_loss(teacher, student).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    logits = torch.randn(2, 4, requires_grad=True)
    classifier_distillation_loss(torch.randn(2, 4), logits).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_distillation_shape_mismatch():
    with pytest.raises(ValueError):
        encoder_distillation_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 3))
    with pytest.raises(ValueError):
        classifier_distillation_loss(torch.zeros(1, 3), torch.zeros(1, 4))


def test_heatmap_loss_reductions_relate_by_2khw():
    """mean = sum / (K h w); simplebaseline = mean / 2 (JointsMSELoss), so lambda moves by 2Khw."""
    g = torch.Generator().manual_seed(0)
    pred, target = torch.rand(3, 14, 8, 8, generator=g), torch.rand(3, 14, 8, 8, generator=g)
    w = (torch.rand(3, 14, generator=g) > 0.3).float()
    total = heatmap_loss(pred, target, w, "sum")
    assert heatmap_loss(pred, target, w, "mean").item() == pytest.approx(total.item() / (14 * 64), rel=1e-6)
    assert heatmap_loss(pred, target, w, "simplebaseline").item() == pytest.approx(total.item() / (2 * 14 * 64), rel=1e-6)
    with pytest.raises(ValueError, match="unknown reduction"):
        heatmap_loss(pred, target, w, "max")


def test_pooled_encoder_distillation_ignores_spatial_layout():
    """Pooled L_ED compares the R^d embeddings: a spatial permutation of the same features costs
    nothing pooled but is penalised on the whole map."""
    g = torch.Generator().manual_seed(1)
    t = torch.rand(2, 16, 4, 4, generator=g) + 0.1
    s = t.flip(-1).flip(-2)
    assert encoder_distillation_loss(t, s, "pooled").item() == pytest.approx(0.0, abs=1e-6)
    assert encoder_distillation_loss(t, s, "map").item() > 1e-3
    opposite = -t
    assert encoder_distillation_loss(t, opposite, "pooled").item() == pytest.approx(2.0, abs=1e-5)
    with pytest.raises(ValueError, match="unknown features"):
        encoder_distillation_loss(t, s, "gram")


def test_landmark_loss_weights_emphasise_the_pfl_pair():
    w = landmark_loss_weights(5, (4, 0), 3.0)
    assert w.tolist() == [3.0, 1.0, 1.0, 1.0, 3.0]
    with pytest.raises(ValueError, match="positive"):
        landmark_loss_weights(5, (4, 0), 0.0)
    # an error on an emphasised landmark costs `weight` times the same error on another
    target = torch.zeros(1, 5, 4, 4)
    on_pair, elsewhere = target.clone(), target.clone()
    on_pair[0, 0, 1, 1] = 1.0
    elsewhere[0, 2, 1, 1] = 1.0
    weight = w.reshape(1, 5)
    assert heatmap_loss(on_pair, target, weight).item() == pytest.approx(3.0 * heatmap_loss(elsewhere, target, weight).item())


# ------------------------------------------------------------------------------ the PFL-length term


def _gaussians(points, size: int = 64, sigma: float = 1.5) -> torch.Tensor:
    """[N, K, size, size] peak-1 Gaussians at `points` [N, K, 2] (x, y) heatmap px."""
    pts = t(points)
    grid = torch.arange(size, dtype=torch.float32)
    gx = torch.exp(-(grid - pts[..., 0:1]) ** 2 / (2 * sigma**2))
    gy = torch.exp(-(grid - pts[..., 1:2]) ** 2 / (2 * sigma**2))
    return gy[..., :, None] * gx[..., None, :]


def test_local_centroid_finds_sub_pixel_peaks_over_background():
    points = [[[20.3, 31.7], [40.0, 12.5], [2.4, 61.6]]]            # the last near a corner of the map
    exact = local_centroid(_gaussians(points))[0]
    assert (exact[:2] - t(points[0][:2])).abs().max().item() < 0.02
    assert (exact[2] - t(points[0][2])).abs().max().item() < 0.5    # cut by the map's edge, still near
    g = torch.Generator().manual_seed(0)
    hm = _gaussians(points) + 0.05 * torch.rand(1, 3, 64, 64, generator=g)   # positive background noise
    hm[0, 1] -= 0.2                                                 # a peak below 1, negative background
    assert (local_centroid(hm)[0, :2] - t(points[0][:2])).abs().max().item() < 0.1
    # a heatmap with nothing positive decodes to its argmax
    flat = -torch.ones(1, 1, 8, 8)
    flat[0, 0, 5, 2] = -0.5
    assert local_centroid(flat).tolist() == [[[2.0, 5.0]]]


def test_pfl_length_loss_is_the_relative_length_error():
    truth = t([[[20.0, 30.0], [40.0, 30.0]], [[10.0, 10.0], [10.0, 30.0]]])          # lengths 20 and 20
    exact = _gaussians(truth.tolist())
    assert pfl_length_loss(exact, truth, (0, 1)).item() == pytest.approx(0.0, abs=1e-3)
    # image 0 predicted 24 long (+20%), image 1 predicted 15 long (-25%): mean 0.225
    pred = _gaussians([[[18.0, 30.0], [42.0, 30.0]], [[10.0, 12.0], [10.0, 27.0]]]).requires_grad_(True)
    loss = pfl_length_loss(pred, truth, (0, 1))
    assert loss.item() == pytest.approx(0.225, abs=2e-3)
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    # an image with a corner outside the crop (weight 0) is left out; none left gives 0
    weight = t([[1, 1], [1, 0]])
    assert pfl_length_loss(pred, truth, (0, 1), weight).item() == pytest.approx(0.2, abs=2e-3)
    assert pfl_length_loss(pred, truth, (0, 1), torch.zeros(2, 2)).item() == 0.0
    # the pair is looked up by index: swapping the landmarks' order changes nothing
    assert pfl_length_loss(pred.flip(1), truth.flip(1), (1, 0)).item() == pytest.approx(loss.item(), abs=1e-6)
