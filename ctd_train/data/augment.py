"""Training augmentation: crop scale, rotation, horizontal flip and brightness/contrast jitter.

The geometric part only changes the crop affine (so landmarks always map back to source pixels
through it); the photometric part acts on the uint8 crop. Every random number comes from the
`numpy.random.Generator` handed in, which the dataset seeds per item from (seed, epoch, index).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ctd_runtime.config_dict import checked_kwargs
from ctd_runtime.errors import CtdError


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random augmentation.

    scale: the crop side is multiplied by a factor uniform in [1 - scale, 1 + scale] (0.2 is the
        paper's "scaling 0.8": the face appears between 0.83x and 1.25x its nominal size).
    scale_max: when > 0, the factor is log-uniform in [1 - scale, scale_max] instead: a model that
        must find the face in a crop of the whole image (the station's coarse pass) sees faces
        down to 1 / scale_max of their nominal size.
    rotation_deg: rotation uniform in [-rotation_deg, rotation_deg].
    flip: mirror horizontally with probability `flip_prob`; only for schemas with flip pairs
        (the dataset refuses it otherwise).
    brightness: additive shift uniform in [-brightness, brightness] * 255.
    contrast: factor uniform in [1 - contrast, 1 + contrast] about the crop's mean intensity.
    shift: the crop centre moves by a fraction uniform in [-shift, shift] of the crop side along
        each axis (a refinement stage must cope with the first stage's error in its crop).
    """

    scale: float = 0.2
    scale_max: float = 0.0
    rotation_deg: float = 15.0
    flip: bool = False
    flip_prob: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    shift: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.scale < 1.0:
            raise CtdError(f"augment scale must be in [0, 1), not {self.scale}")
        if self.scale_max != 0.0 and not (1.0 - self.scale < self.scale_max <= 10.0):
            raise CtdError(f"augment scale_max must be 0 (off) or in (1 - scale, 10], not {self.scale_max}")
        if not 0.0 <= self.rotation_deg <= 180.0:
            raise CtdError(f"augment rotation_deg must be in [0, 180], not {self.rotation_deg}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise CtdError(f"augment flip_prob must be in [0, 1], not {self.flip_prob}")
        if not 0.0 <= self.brightness <= 1.0:
            raise CtdError(f"augment brightness must be in [0, 1], not {self.brightness}")
        if not 0.0 <= self.contrast < 1.0:
            raise CtdError(f"augment contrast must be in [0, 1), not {self.contrast}")
        if not 0.0 <= self.shift <= 0.5:
            raise CtdError(f"augment shift must be in [0, 0.5], not {self.shift}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AugmentConfig":
        kw: dict[str, Any] = {}
        for k, v in checked_kwargs(cls, d, "augmentation config").items():
            kw[k] = bool(v) if k == "flip" else float(v)
        return cls(**kw)


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the augmentation."""

    scale: float = 1.0
    rotation_deg: float = 0.0
    flip: bool = False
    brightness: float = 0.0  # additive, in 0..255 units
    contrast: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)  # crop centre offset, fraction of the crop side

    @property
    def is_photometric_identity(self) -> bool:
        return self.brightness == 0.0 and self.contrast == 1.0


def sample_params(cfg: AugmentConfig | None, rng: np.random.Generator) -> AugmentParams:
    """Draw one augmentation. The same seven numbers are always drawn, in the same order (the two
    of the shift last, so runs without it draw what they drew before it existed)."""
    if cfg is None:
        return AugmentParams()
    u = rng.uniform(-1.0, 1.0, size=4)
    f = rng.uniform()
    shift = rng.uniform(-1.0, 1.0, size=2) * cfg.shift
    if cfg.scale_max > 0:
        lo, hi = np.log(1.0 - cfg.scale), np.log(cfg.scale_max)
        factor = float(np.exp(lo + (u[0] + 1.0) / 2.0 * (hi - lo)))
    else:
        factor = float(1.0 + cfg.scale * u[0])
    return AugmentParams(
        shift=(float(shift[0]), float(shift[1])),
        scale=factor,
        rotation_deg=float(cfg.rotation_deg * u[1]),
        flip=bool(cfg.flip and f < cfg.flip_prob),
        brightness=float(cfg.brightness * 255.0 * u[2]),
        contrast=float(1.0 + cfg.contrast * u[3]),
    )


def photometric(image: np.ndarray, params: AugmentParams) -> np.ndarray:
    """Brightness/contrast jitter of a uint8 image: (x - mean) * contrast + mean + brightness."""
    if params.is_photometric_identity:
        return image
    x = image.astype(np.float32)
    mean = float(x.mean())
    x = (x - mean) * params.contrast + mean + params.brightness
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
