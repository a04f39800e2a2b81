"""A tiny trained landmark model in the real fused wrapper (`ctd_export.fused.FusedLandmarkModel`),
exported to ONNX with `ctd.*` metadata: the FP16 / INT8 / TensorRT tests run on it without a run dir.

The predictor (stride-16 Conv encoder, two ConvTranspose, 1x1 Conv) is fitted for a few seconds to
synthetic images with three coloured blobs (landmark k = the centre of the blob of colour k), so
its heatmaps have clear peaks, as a trained model's do.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

import ctd_runtime
from ctd_export.fused import FusedLandmarkModel
from ctd_export.metadata import set_metadata
from ctd_runtime import geometry
from ctd_runtime.model_meta import ModelMetadata
from ctd_runtime.schema import LandmarkSchema
from ctd_runtime.codec import HeatmapCodec
from ctd_runtime.normalization import Normalization

INPUT_SIZE = 64
NUM_LANDMARKS = 3
NORMALIZATION = Normalization("BGR", (100.0, 100.0, 100.0), (1 / 60.0, 1 / 60.0, 1 / 60.0))
CODEC = HeatmapCodec(input_size=INPUT_SIZE, stride=4, sigma=1.5)
COLOURS = np.array([[230, 40, 40], [40, 230, 40], [40, 40, 230]], np.float64)  # BGR


class TinyPredictor(nn.Module):
    """Normalised crop [N,3,S,S] -> heatmaps [N,K,S/4,S/4]."""

    def __init__(self, k: int = NUM_LANDMARKS, width: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, 2, 1), nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, width, 4, 2, 1, bias=False), nn.ReLU(),
            nn.Conv2d(width, k, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def synthetic_image(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """BGR uint8 [h, w, 3] with three coloured blobs, and their centres [3, 2] (px)."""
    img = rng.random((h, w, 3)) * 50 + 20
    yy, xx = np.mgrid[0:h, 0:w]
    centres = np.stack([rng.uniform(0.3 * w, 0.7 * w, 3), rng.uniform(0.3 * h, 0.7 * h, 3)], -1)
    for k, (cx, cy) in enumerate(centres):
        r2 = (xx - cx) ** 2 + (yy - cy) ** 2
        img += np.exp(-r2 / (2 * (0.04 * min(h, w)) ** 2))[..., None] * (COLOURS[k] - 40)
    return np.clip(img, 0, 255).astype(np.uint8), centres


def sample_set(n: int, seed: int = 1) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """n samples (image [1,H,W,3] uint8, crop [1,2,3] f32) with crops around the blobs, and the
    ground truth [n, K, 2] in source px."""
    rng = np.random.default_rng(seed)
    samples, gts = [], []
    for _ in range(n):
        h, w = int(rng.integers(90, 140)), int(rng.integers(90, 140))
        img, centres = synthetic_image(rng, h, w)
        center, side = geometry.square_box(centres, margin=0.8)
        a = geometry.crop_affine(center, side, INPUT_SIZE, rotation_deg=float(rng.normal(0, 8)))
        samples.append((img[None], a.astype(np.float32)[None]))
        gts.append(centres)
    return samples, np.stack(gts)


def train_predictor(seed: int = 0, steps: int = 150) -> TinyPredictor:
    """The tiny predictor fitted to synthetic blob crops (a few seconds on one core)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    pred = TinyPredictor()
    opt = torch.optim.Adam(pred.parameters(), lr=3e-3)
    samples, gts = sample_set(96, seed=seed + 100)
    xs, ys = [], []
    for (img, a), gt in zip(samples, gts):
        crop = geometry.warp_to_crop(img[0], a[0].astype(np.float64), INPUT_SIZE)
        xs.append(NORMALIZATION.apply(crop)[0])
        target, _ = CODEC.encode(geometry.apply_affine(geometry.invert_affine(a[0]), gt))
        ys.append(target)
    # crops of no face (uniform noise, flat grey) with empty heatmaps: like a trained face model, the
    # tiny one must give low scores where there is nothing to find (without them its answer on
    # noise depended on the CPU the few training steps ran on)
    for k in range(24):
        noise = rng.integers(0, 256, (INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8) if k % 3 else \
            np.full((INPUT_SIZE, INPUT_SIZE, 3), int(rng.integers(0, 256)), np.uint8)
        xs.append(NORMALIZATION.apply(noise)[0])
        ys.append(np.zeros_like(ys[0]))
    x, y = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)) * 10.0
    pred.train()
    for _ in range(steps):
        idx = torch.from_numpy(rng.choice(len(x), 16, replace=False))
        loss = ((pred(x[idx]) - y[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return pred.eval().requires_grad_(False)


@functools.lru_cache(maxsize=None)
def trained_predictor(seed: int = 0) -> TinyPredictor:
    """`train_predictor(seed)`, fitted once per test session."""
    torch.set_num_threads(1)
    return train_predictor(seed)


def fused_model(predictor: nn.Module, decode: str = "argmax") -> FusedLandmarkModel:
    return FusedLandmarkModel(predictor, NORMALIZATION, CODEC, decode, INPUT_SIZE).eval()


def tiny_metadata(decode: str = "argmax") -> ModelMetadata:
    schema = LandmarkSchema("tiny", tuple(f"p{i}" for i in range(NUM_LANDMARKS)), tuple(range(NUM_LANDMARKS)),
                            pfl_pair=(0, 1))
    return ModelMetadata(
        ctd_version=ctd_runtime.__version__, schema=schema, input_size=INPUT_SIZE, normalization=NORMALIZATION,
        decode=decode, precision="fp32", graph="fused", stride=CODEC.stride, sigma=CODEC.sigma,
        run_id="tiny-test", outputs=("landmarks", "scores"),
    )


def export_fused(predictor: nn.Module, path: Path, decode: str = "argmax", dynamo: bool = False) -> Path:
    """The fused model as ONNX (dynamic N, H, W) with ctd metadata."""
    model = fused_model(predictor, decode)
    image = torch.zeros(1, 96, 80, 3, dtype=torch.uint8)
    crop = torch.tensor(geometry.crop_affine((40, 48), 60, INPUT_SIZE), dtype=torch.float32)[None]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = dict(input_names=["image", "crop"], output_names=["landmarks", "scores"])
    if dynamo:
        n, h, w = torch.export.Dim("N", max=64), torch.export.Dim("H", min=16, max=4096), torch.export.Dim("W", min=16, max=4096)
        torch.onnx.export(model, (image, crop), str(path), dynamo=True, opset_version=18, verbose=False,
                          dynamic_shapes={"image": {0: n, 1: h, 2: w}, "crop": {0: n}}, **names)
    else:
        torch.onnx.export(model, (image, crop), str(path), dynamo=False, opset_version=17,
                          dynamic_axes={"image": {0: "N", 1: "H", 2: "W"}, "crop": {0: "N"},
                                        "landmarks": {0: "N"}, "scores": {0: "N"}}, **names)
    proto = onnx.load(str(path))
    set_metadata(proto, tiny_metadata(decode))
    onnx.save(proto, str(path))
    return path
