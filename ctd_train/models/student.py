"""The landmark student: a teacher's encoder (and optionally its classifier) plus the SimpleBaseline
deconvolution head (Xiao et al. 2018) that turns the encoder's feature map into K heatmaps."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from ctd_train.teachers._base import Teacher

HEATMAP_STRIDE = 4


class SimpleBaselineHead(nn.Module):
    """Feature map [N, C, h, w] -> K heatmaps [N, K, h * 2**num_deconv, w * 2**num_deconv]:
    `num_deconv` x (ConvTranspose2d 4x4/2 + BN + ReLU), then a 1x1 convolution."""

    def __init__(self, in_channels: int, num_landmarks: int, channels: int = 256, num_deconv: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for _ in range(num_deconv):
            layers += [
                nn.ConvTranspose2d(cin, channels, kernel_size=4, stride=2, padding=1, output_padding=0, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
            cin = channels
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(cin, num_landmarks, kernel_size=1, stride=1, padding=0)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """SimpleBaseline's initialisation: deconvolutions and final conv N(0, 0.001), BN (1, 0)."""
        for m in self.deconv.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.zeros_(self.final.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.final(self.deconv(feats))


def resize_to_stride(heatmaps: torch.Tensor, x: torch.Tensor, stride: int) -> torch.Tensor:
    """`heatmaps` resized bilinearly to exactly (H // stride, W // stride) of the input `x`, only
    when its size differs (the target comes from x.shape so ONNX export keeps it dynamic)."""
    h, w = x.shape[-2] // stride, x.shape[-1] // stride
    if heatmaps.shape[-2] != h or heatmaps.shape[-1] != w:
        heatmaps = F.interpolate(heatmaps, size=(h, w), mode="bilinear", align_corners=False)
    return heatmaps


class LandmarkStudent(nn.Module):
    """Normalised image [N, 3, H, W] -> heatmaps [N, K, H/stride, W/stride], exactly that size
    whatever the encoder's stride and padding (resized bilinearly when the head's output differs).

    `encoder` and `classifier` (optional, used only by classifier distillation) are trainable copies
    of a teacher's; the head is new."""

    def __init__(
        self,
        encoder: nn.Module,
        encoder_channels: int,
        num_landmarks: int,
        classifier: nn.Module | None = None,
        stride: int = HEATMAP_STRIDE,
        head_channels: int = 256,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = classifier
        self.head = SimpleBaselineHead(encoder_channels, num_landmarks, channels=head_channels)
        self.encoder_channels = encoder_channels
        self.num_landmarks = num_landmarks
        self.stride = stride

    def _heatmaps(self, x: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        return resize_to_stride(self.head(feats), x, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._heatmaps(x, self.encoder(x))

    def forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """heatmaps, the encoder's feature map (`features`) and, with a classifier, its `logits`."""
        feats = self.encoder(x)
        out = {"heatmaps": self._heatmaps(x, feats), "features": feats}
        if self.classifier is not None:
            out["logits"] = self.classifier(feats)
        return out


def build_student(teacher: "Teacher", num_landmarks: int, head_channels: int = 256) -> LandmarkStudent:
    """A student initialised from `teacher`: trainable copies of its encoder and classifier."""
    return LandmarkStudent(
        encoder=teacher.trainable_encoder(),
        encoder_channels=teacher.network.feature_channels,
        num_landmarks=num_landmarks,
        classifier=teacher.trainable_classifier(),
        head_channels=head_channels,
    )
