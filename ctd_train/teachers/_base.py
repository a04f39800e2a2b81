"""What every teacher gives: its input spec, an encoder, an optional classifier, a frozen copy
for distillation and a trainable copy of its encoder (and classifier) for the student."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ctd_runtime.normalization import Normalization


@dataclass(frozen=True)
class InputSpec:
    """The input a teacher was trained with: square size, channel order, mean and scale."""

    size: int
    normalization: Normalization

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "normalization": self.normalization.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        return cls(size=int(d["size"]), normalization=Normalization.from_dict(d["normalization"]))


class TeacherNetwork(nn.Module):
    """encoder: normalised NCHW image -> feature map [N, C, h, w];
    classifier (optional): feature map -> logits [N, num_classes] (does its own pooling);
    embedding (optional): feature map -> the network's own descriptor (e.g. dlib's 128-d)."""

    def __init__(
        self,
        encoder: nn.Module,
        feature_channels: int,
        classifier: nn.Module | None = None,
        num_classes: int | None = None,
        embedding: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = classifier
        self.embedding = embedding
        self.feature_channels = feature_channels
        self.num_classes = num_classes

    @property
    def has_classifier(self) -> bool:
        return self.classifier is not None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.encoder(x)
        out = {"features": feats}
        if self.classifier is not None:
            out["logits"] = self.classifier(feats)
        if self.embedding is not None:
            out["embedding"] = self.embedding(feats)
        return out


@dataclass
class Teacher:
    """A loaded teacher: name, where its weights came from, input spec and network."""

    name: str
    input_spec: InputSpec
    network: TeacherNetwork
    weights_path: Path | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def has_classifier(self) -> bool:
        return self.network.has_classifier

    def frozen(self) -> TeacherNetwork:
        """An inference-mode copy with no gradients: the distillation source."""
        net = copy.deepcopy(self.network)
        net.eval()
        net.requires_grad_(False)
        return net

    def trainable_encoder(self) -> nn.Module:
        """A trainable copy of the encoder with the same weights: the student's backbone."""
        enc = copy.deepcopy(self.network.encoder)
        enc.requires_grad_(True)
        return enc

    def trainable_classifier(self) -> nn.Module | None:
        if self.network.classifier is None:
            return None
        cls = copy.deepcopy(self.network.classifier)
        cls.requires_grad_(True)
        return cls

    def output_shapes(self, size: int = 256) -> dict[str, list[int]]:
        """Shapes of every output (features, logits, embedding) for one size x size input."""
        net = self.frozen()
        with torch.inference_mode():
            out = net(torch.zeros(1, 3, size, size))
        return {k: list(v.shape) for k, v in out.items()}

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    def encoder_parameter_count(self) -> int:
        """Parameters of the encoder alone: what the student inherits."""
        return sum(p.numel() for p in self.network.encoder.parameters())

    def describe(self, size: int = 256) -> dict[str, Any]:
        """Input spec, parameter counts and output shapes for a `size` x `size` input (what
        `ctd teacher check` prints)."""
        out = self.output_shapes(size)
        norm = self.input_spec.normalization
        return {
            "name": self.name,
            "weights": None if self.weights_path is None else str(self.weights_path),
            "input_size": self.input_spec.size,
            "channel_order": norm.channel_order,
            "mean": list(norm.mean),
            "scale": list(norm.scale),
            "parameters": self.parameter_count(),
            "encoder_parameters": self.encoder_parameter_count(),
            "probe_size": size,
            "feature_map": out["features"],
            "has_classifier": self.has_classifier,
            "logits": out.get("logits"),
            "embedding": out.get("embedding"),
        }
