"""The landmark student: a teacher's encoder (and optionally its classifier) plus the SimpleBaseline
deconvolution head (Xiao et al. 2018) that turns the encoder's feature map into K heatmaps, or the
same head with the encoder's finer feature maps added back after each upsampling (`head="skip"`).

Why the skip head: the face-recognition encoders end at stride 32 (an 8 x 8 map of a 256 px crop),
so SimpleBaseline's head must draw 64 x 64 heatmaps from 8 x 8 features; eye corners are a few
heatmap pixels apart, and a model that cannot see them leans on the average face
(benchmarks/error_structure.py). The laterals (1x1 conv + BN, FPN-style) start at zero (BN weight
0), so an untrained skip head is exactly SimpleBaseline's and learns how much detail to take."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ctd_runtime.errors import CtdError

if TYPE_CHECKING:
    from ctd_train.teachers._base import Teacher

HEATMAP_STRIDE = 4
HEADS = ("simple", "skip")


def init_simplebaseline(deconvolutions: nn.Module, final: nn.Conv2d) -> None:
    """SimpleBaseline's initialisation: deconvolutions and final conv N(0, 0.001), BN (1, 0)."""
    for m in deconvolutions.modules():
        if isinstance(m, nn.ConvTranspose2d):
            nn.init.normal_(m.weight, std=0.001)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.normal_(final.weight, std=0.001)
    nn.init.zeros_(final.bias)


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
        init_simplebaseline(self.deconv, self.final)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.final(self.deconv(feats))


class SkipHead(nn.Module):
    """SimpleBaseline's deconvolutions (each a Sequential ConvTranspose2d 4x4/2 + BN + ReLU, as the
    export's head rewrite expects), each followed by the sum with a lateral 1x1 conv + BN of the
    encoder map at that stride (`skip_channels[i]`, None where the encoder has no map at it)."""

    def __init__(self, in_channels: int, skip_channels: list[int | None], num_landmarks: int,
                 channels: int = 256) -> None:
        super().__init__()
        stages, laterals, cin = [], [], in_channels
        for c in skip_channels:
            stages.append(nn.Sequential(
                nn.ConvTranspose2d(cin, channels, kernel_size=4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(channels), nn.ReLU(inplace=True)))
            laterals.append(nn.Identity() if c is None else nn.Sequential(
                nn.Conv2d(c, channels, kernel_size=1, bias=False), nn.BatchNorm2d(channels)))
            cin = channels
        self.stages = nn.ModuleList(stages)
        self.laterals = nn.ModuleList(laterals)
        self.final = nn.Conv2d(cin, num_landmarks, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """SimpleBaseline's initialisation for its layers; the laterals' BN weight 0 (start as SimpleBaseline)."""
        init_simplebaseline(self.stages, self.final)
        for m in self.laterals.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, feats: torch.Tensor, skips: list[torch.Tensor | None]) -> torch.Tensor:
        """`skips[i]`: the encoder map for deconvolution i, None where it has no lateral."""
        y = feats
        for stage, lateral, skip in zip(self.stages, self.laterals, skips):
            y = stage(y)
            if skip is not None:
                s = lateral(skip)
                if s.shape[-2:] != y.shape[-2:]:   # odd input sizes: the two paths round differently
                    s = F.interpolate(s, size=y.shape[-2:], mode="bilinear", align_corners=False)
                y = y + s
        return self.final(y)


def encoder_stage_outputs(encoder: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of every stage of `encoder`, in order, the last being the encoder's own output:
    its `forward_stages(x)` where it has one, the children of an nn.Sequential otherwise."""
    if hasattr(encoder, "forward_stages"):
        return list(encoder.forward_stages(x))
    if isinstance(encoder, nn.Sequential):
        outs = []
        for m in encoder:
            x = m(x)
            outs.append(x)
        return outs
    raise CtdError(f"head 'skip' needs the encoder's intermediate feature maps, and {type(encoder).__name__} "
                   "has no forward_stages and is no nn.Sequential; use head 'simple'")


def skip_taps(encoder: nn.Module, num_deconv: int = 3, probe: int = 256) -> tuple[list[int | None], list[int | None]]:
    """For each deconvolution's output (2, 4, 8 x the encoder map's side): the index of the last
    encoder stage whose map is within 1.5x of that side (exact for the padded MobileNet; the nearest
    level for valid-convolution encoders such as dlib's, whose lateral is then resized) and its
    channels; (None, None) where there is none. One probe pass in eval mode, no gradient."""
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        outs = encoder_stage_outputs(encoder, torch.zeros(1, 3, probe, probe))
    encoder.train(was_training)
    sides = [int(o.shape[-1]) for o in outs]
    taps, channels = [], []
    for k in range(1, num_deconv + 1):
        want = sides[-1] * 2**k
        at = [i for i, side in enumerate(sides[:-1]) if want / 1.5 <= side <= want * 1.5]
        taps.append(at[-1] if at else None)
        channels.append(int(outs[at[-1]].shape[1]) if at else None)
    return taps, channels


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
        head: str = "simple",
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise CtdError(f"unknown head {head!r}: choose one of {', '.join(HEADS)}")
        self.encoder = encoder
        self.classifier = classifier
        self.taps: list[int | None] = []
        if head == "skip":
            self.taps, channels = skip_taps(encoder)
            if not any(t is not None for t in self.taps):
                raise CtdError(f"head 'skip': the encoder {type(encoder).__name__} has no stage at a finer stride "
                               "than its output; use head 'simple'")
            self.head: nn.Module = SkipHead(encoder_channels, channels, num_landmarks, channels=head_channels)
        else:
            self.head = SimpleBaselineHead(encoder_channels, num_landmarks, channels=head_channels)
        self.encoder_channels = encoder_channels
        self.num_landmarks = num_landmarks
        self.stride = stride

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """The encoder's feature map and, for the skip head, its maps at the taps."""
        if not self.taps:
            return self.encoder(x), []
        outs = encoder_stage_outputs(self.encoder, x)
        return outs[-1], [None if t is None else outs[t] for t in self.taps]

    def _heatmaps(self, x: torch.Tensor, feats: torch.Tensor, skips: list[torch.Tensor | None]) -> torch.Tensor:
        hm = self.head(feats, skips) if self.taps else self.head(feats)
        return resize_to_stride(hm, x, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._heatmaps(x, *self._encode(x))

    def forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """heatmaps, the encoder's feature map (`features`) and, with a classifier, its `logits`."""
        feats, skips = self._encode(x)
        out = {"heatmaps": self._heatmaps(x, feats, skips), "features": feats}
        if self.classifier is not None:
            out["logits"] = self.classifier(feats)
        return out


def build_student(teacher: "Teacher", num_landmarks: int, head_channels: int = 256,
                  head: str = "simple") -> LandmarkStudent:
    """A student initialised from `teacher`: trainable copies of its encoder and classifier."""
    return LandmarkStudent(
        encoder=teacher.trainable_encoder(),
        encoder_channels=teacher.network.feature_channels,
        num_landmarks=num_landmarks,
        classifier=teacher.trainable_classifier(),
        head_channels=head_channels,
        head=head,
    )
