"""The station's engine gate: a freshly built model.plan against model.onnx under ONNX Runtime.

The export's parity gate compares with PyTorch, which a station does not have; here the FP32
model.onnx that the export already gated is the reference, and the engine is judged by the gate
of its precision (`ctd_runtime.precision_gate`: FP16 by the mean landmark distance, 0.1 px), on
the station's own captures when given (`images`), else on a fixed synthetic set (smooth blobs:
deterministic, but a model's decodes on them are less stable than on faces, so the mean, not
the max, is what a reduced-precision engine is held to either way).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ctd_runtime import geometry
from ctd_runtime.errors import CtdError
from ctd_runtime.precision_gate import gate_for

SYNTHETIC_IMAGES = 6
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass
class EngineCheck:
    """Landmark distances of the engine against ONNX Runtime on the same inputs, source px."""

    reference: str
    candidate: str
    precision: str
    statistic: str
    tolerance_px: float
    max_px: float
    mean_px: float
    num_images: int
    source: str
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (f"engine check {verdict}: {self.candidate} vs {self.reference} (ONNX Runtime) on {self.num_images} "
                f"images ({self.source}): mean {self.mean_px:.3g} px, max {self.max_px:.3g} px; gate: "
                f"{self.statistic} <= {self.tolerance_px:g} px ({self.precision})")


def synthetic_images(n: int = SYNTHETIC_IMAGES, seed: int = 0) -> list[np.ndarray]:
    """Deterministic uint8 BGR images (480 x 640) of smooth coloured blobs on a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    out = []
    for _ in range(n):
        img = np.zeros((480, 640, 3), np.float32) + rng.uniform(40, 160, 3) + 0.1 * xx[..., None]
        for _ in range(8):
            cx, cy, r = rng.uniform(100, 540), rng.uniform(80, 400), rng.uniform(15, 70)
            blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
            img += blob * (rng.uniform(0, 255, 3) - img)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def check_inputs(images: str | Path | None, input_size: int, limit: int = 16) -> tuple[list[np.ndarray], np.ndarray, str]:
    """(images, crop affines [N, 2, 3], where they come from): a folder's images (read by
    `image_io.read_image`) or the synthetic set, each with the square crop of its centre."""
    if images is not None:
        from ctd_runtime.image_io import read_image

        folder = Path(images)
        if not folder.is_dir():
            raise CtdError("engine check images: not a folder", path=folder)
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
        if not files:
            raise CtdError("engine check images: no image files in the folder", path=folder)
        imgs, source = [read_image(p) for p in files], f"{len(files)} images of {folder}"
    else:
        imgs, source = synthetic_images(), "the built-in synthetic set"
    crops = []
    for img in imgs:
        h, w = img.shape[:2]
        crops.append(geometry.crop_affine(((w - 1) / 2, (h - 1) / 2), 0.8 * min(h, w), input_size))
    return imgs, np.stack(crops), source


def _landmarks(backend: Any, images: Sequence[np.ndarray], crops: np.ndarray) -> np.ndarray:
    return np.stack([backend.run(img[None], a[None].astype(np.float32))[0][0] for img, a in zip(images, crops)])


def check_engine(
    plan: str | Path,
    reference_onnx: str | Path,
    images: str | Path | None = None,
    tolerance_px: float = 0.1,
    open_backend: Callable[[Path], Any] | None = None,
) -> EngineCheck:
    """Run the engine and the reference ONNX model on the same inputs and judge the engine by
    the gate of its precision. `open_backend(path)` (default `create_backend`) is how tests put
    a stand-in where a GPU would be."""
    from ctd_runtime.backends import create_backend

    plan, reference_onnx = Path(plan), Path(reference_onnx)
    if not reference_onnx.is_file():
        raise CtdError("the engine check needs the FP32 model.onnx beside the engine's source", path=reference_onnx)
    opener = open_backend or (lambda p: create_backend(p))
    with create_backend(reference_onnx) as ref, opener(plan) as cand:
        imgs, crops, source = check_inputs(images, ref.metadata.input_size)
        distances = np.linalg.norm(_landmarks(ref, imgs, crops) - _landmarks(cand, imgs, crops), axis=-1)
        precision = cand.metadata.precision
    gate = gate_for(precision, tolerance_px)
    finite = np.isfinite(distances).all()
    max_px = float(np.max(distances)) if finite else float("inf")
    mean_px = float(np.mean(distances)) if finite else float("inf")
    judged = mean_px if gate.statistic == "mean" else max_px
    return EngineCheck(str(reference_onnx.name), str(plan.name), precision, gate.statistic, gate.tolerance_px,
                       max_px, mean_px, len(imgs), source, bool(finite and judged <= gate.tolerance_px))
