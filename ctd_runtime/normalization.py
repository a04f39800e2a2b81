"""Input normalisation of a network: channel order, mean and scale, shared by teacher, student
and exported model (the exported graph carries it in its metadata)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np


@dataclass(frozen=True)
class Normalization:
    """x[c] = (pixel[c] - mean[c]) * scale[c], pixels 0..255 in `channel_order`, planar NCHW."""

    channel_order: Literal["RGB", "BGR"]
    mean: tuple[float, float, float]
    scale: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be RGB or BGR, not {self.channel_order!r}")

    def apply(self, images_bgr: np.ndarray) -> np.ndarray:
        """uint8 BGR images [N,H,W,3] (OpenCV's order) to float32 NCHW network input."""
        x = np.asarray(images_bgr)
        if x.ndim == 3:
            x = x[None]
        if self.channel_order == "RGB":
            x = x[..., ::-1]
        x = x.astype(np.float32)
        x = (x - np.asarray(self.mean, np.float32)) * np.asarray(self.scale, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def to_dict(self) -> dict[str, Any]:
        return {"channel_order": self.channel_order, "mean": list(self.mean), "scale": list(self.scale)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Normalization":
        return cls(
            channel_order=d["channel_order"],
            mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
            scale=tuple(float(v) for v in d["scale"]),  # type: ignore[arg-type]
        )
