"""The losses of PAPER.md as pure functions: L_R (eq 1), L_CD (eq 3) and L_ED (eq 4).

Each returns a scalar tensor averaged over the images of the batch, computed in float32."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Eq 1, L_R = 1/N sum_i ||G_i - P_i||_F^2: squared error summed over K, h, w of each image,
    averaged over the N images. `weight` [N, K] (0 or 1) drops landmarks outside the crop."""
    if pred.shape != target.shape:
        raise ValueError(f"heatmap_loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    sq = (pred.float() - target.float()).pow(2)
    if weight is not None:
        n, k = pred.shape[:2]
        sq = sq * weight.float().reshape(n, k, 1, 1)
    return sq.sum(dim=(1, 2, 3)).mean()


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


def encoder_distillation_loss(teacher_features: torch.Tensor, student_features: torch.Tensor) -> torch.Tensor:
    """Eq 4, L_ED = 1/N sum_i (1 - cos(f_s(I_i), f_t(I_i))): the cosine between the whole flattened
    feature maps of each image (1e-8 guards a zero map)."""
    if teacher_features.shape != student_features.shape:
        raise ValueError(f"encoder_distillation_loss: teacher {tuple(teacher_features.shape)} and "
                         f"student {tuple(student_features.shape)} features differ")
    cos = F.cosine_similarity(student_features.float().flatten(1), teacher_features.float().flatten(1), dim=1, eps=1e-8)
    return (1.0 - cos).mean()
