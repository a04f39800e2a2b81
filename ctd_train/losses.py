"""The losses of PAPER.md as pure functions: L_R (eq 1), L_CD (eq 3) and L_ED (eq 4).

Each returns a scalar tensor averaged over the images of the batch, computed in float32.

The scale of L_R is a named choice (`HEATMAP_REDUCTIONS`), because it decides what the weight
lambda of eq 2 means. Eq 1 as written sums over K x h x w heatmap pixels ("sum"); the paper's code
base, SimpleBaseline (Xiao et al. 2018, `JointsMSELoss`), takes 0.5 x the mean over landmarks and
pixels ("simplebaseline"), 2 K h w times smaller (114,688 for 14 landmarks of 64 x 64). The
paper's lambda = 0.002 and mu = 2 were tuned at SimpleBaseline's scale."""

from __future__ import annotations

import torch
import torch.nn.functional as F


HEATMAP_REDUCTIONS = ("sum", "mean", "simplebaseline")


def heatmap_loss(
    pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None, reduction: str = "sum"
) -> torch.Tensor:
    """Eq 1, the squared heatmap error. `weight` [N, K] (0 or 1) drops landmarks outside the crop.

    reduction "sum": 1/N sum_i ||G_i - P_i||_F^2 (summed over K, h, w, averaged over images);
    "mean": the mean over N, K, h, w; "simplebaseline": 0.5 x that mean (JointsMSELoss)."""
    if pred.shape != target.shape:
        raise ValueError(f"heatmap_loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if reduction not in HEATMAP_REDUCTIONS:
        raise ValueError(f"heatmap_loss: unknown reduction {reduction!r}; choose from {', '.join(HEATMAP_REDUCTIONS)}")
    sq = (pred.float() - target.float()).pow(2)
    if weight is not None:
        n, k = pred.shape[:2]
        sq = sq * weight.float().reshape(n, k, 1, 1)
    if reduction == "sum":
        return sq.sum(dim=(1, 2, 3)).mean()
    mean = sq.mean()
    return 0.5 * mean if reduction == "simplebaseline" else mean


def landmark_loss_weights(num_landmarks: int, emphasised: tuple[int, ...], weight: float) -> torch.Tensor:
    """[K] loss weights: `weight` for the `emphasised` landmarks (the PFL pair), 1 for the rest.

    The schema's other landmarks place the face; PFL is measured on two of them only, so the
    heatmap loss can spend more of its gradient there (MMPose's per-keypoint `joint_weights`)."""
    if not weight > 0:
        raise ValueError(f"landmark_loss_weights: weight must be positive, not {weight}")
    w = torch.ones(num_landmarks, dtype=torch.float32)
    w[list(emphasised)] = float(weight)
    return w


CENTROID_RADIUS = 4  # heatmap px each side of the peak: 2.7 sigma of the codec's 1.5 px Gaussians


def local_centroid(heatmaps: torch.Tensor, radius: int = CENTROID_RADIUS) -> torch.Tensor:
    """[N, K, h, w] heatmaps -> [N, K, 2] (x, y) heatmap px: the centroid of the positive heatmap in
    a (2 radius + 1)^2 window around each argmax.

    A differentiable stand-in for the decoder, so a loss on a distance between decoded landmarks
    reaches the heatmaps. Not a global soft-argmax (integral regression): with heatmaps trained
    towards peak-1 Gaussians, a global softmax is either pulled to the middle by the 4,000
    background pixels or, sharp enough to ignore them, snaps to whole pixels (0.15 px bias at a
    peak 0.3 px off the grid). The window is chosen without gradient; a window with nothing positive
    gives its argmax."""
    n, k, h, w = heatmaps.shape
    hm = heatmaps.float()
    flat = hm.reshape(n, k, h * w).argmax(dim=2)
    ax, ay = (flat % w).float(), torch.div(flat, w, rounding_mode="floor").float()
    xs = torch.arange(w, dtype=hm.dtype, device=hm.device)
    ys = torch.arange(h, dtype=hm.dtype, device=hm.device)
    inside = (((xs - ax[..., None]).abs() <= radius)[:, :, None, :]
              & ((ys - ay[..., None]).abs() <= radius)[:, :, :, None])
    mass = hm.clamp_min(0.0) * inside
    total = mass.sum(dim=(2, 3))
    x = (mass.sum(dim=2) * xs).sum(dim=2) / total.clamp_min(1e-12)
    y = (mass.sum(dim=3) * ys).sum(dim=2) / total.clamp_min(1e-12)
    empty = total <= 0
    return torch.stack((torch.where(empty, ax, x), torch.where(empty, ay, y)), dim=2)


def pfl_length_loss(
    pred_heatmaps: torch.Tensor, landmarks: torch.Tensor, pair: tuple[int, int], weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean |d_pred - d_true| / d_true of the PFL pair's distance, over the images whose two corners
    are both in the crop (`weight` [N, K] > 0); 0 when there is none.

    landmarks [N, K, 2] in heatmap px. The heatmap loss places each landmark on its own; this term
    weighs the one number the clinic reads, relative to each eye, as the evaluation does."""
    i, j = pair
    xy = local_centroid(pred_heatmaps[:, [i, j]])
    target = landmarks[:, [i, j]].float()
    d_pred = (xy[:, 0] - xy[:, 1]).norm(dim=1)
    d_true = (target[:, 0] - target[:, 1]).norm(dim=1).clamp_min(1e-6)
    keep = torch.ones_like(d_true, dtype=torch.bool) if weight is None else (weight[:, i] > 0) & (weight[:, j] > 0)
    if not bool(keep.any()):
        return pred_heatmaps.float().sum() * 0.0
    return ((d_pred - d_true).abs() / d_true)[keep].mean()


def classifier_distillation_loss(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, mu: float = 2.0
) -> torch.Tensor:
    """Eq 3, L_CD = 1/N sum_i ||softmax(t_i / mu) - softmax(s_i / mu)||_2^2 (squared L2 distance of
    the class probabilities at temperature mu)."""
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(f"classifier_distillation_loss: teacher {tuple(teacher_logits.shape)} and "
                         f"student {tuple(student_logits.shape)} logits differ")
    p_t = F.softmax(teacher_logits.float() / mu, dim=1)
    p_s = F.softmax(student_logits.float() / mu, dim=1)
    return (p_t - p_s).pow(2).sum(dim=1).mean()


ED_FEATURES = ("map", "pooled")


def encoder_distillation_loss(
    teacher_features: torch.Tensor, student_features: torch.Tensor, features: str = "map"
) -> torch.Tensor:
    """Eq 4, L_ED = 1/N sum_i (1 - cos(f_s(I_i), f_t(I_i))), 1e-8 guarding a zero vector.

    features "map": the cosine between the whole flattened feature maps (every position must keep
    the teacher's features); "pooled": between their global averages over positions, the R^d
    embedding the paper's f maps to, which leaves the spatial layout free for localisation (and
    compares maps of different spatial size: a teacher run at another input size, method kd)."""
    compared = slice(None) if features == "map" else slice(0, 2)
    if teacher_features.shape[compared] != student_features.shape[compared]:
        raise ValueError(f"encoder_distillation_loss: teacher {tuple(teacher_features.shape)} and "
                         f"student {tuple(student_features.shape)} features differ")
    if features not in ED_FEATURES:
        raise ValueError(f"encoder_distillation_loss: unknown features {features!r}; choose from {', '.join(ED_FEATURES)}")
    t, s = teacher_features.float(), student_features.float()
    if features == "pooled" and t.dim() > 2:
        t, s = t.flatten(2).mean(dim=2), s.flatten(2).mean(dim=2)
    cos = F.cosine_similarity(s.flatten(1), t.flatten(1), dim=1, eps=1e-8)
    return (1.0 - cos).mean()
