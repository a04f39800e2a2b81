"""The fused graph (warp + normalisation + predictor + decode + affine back) against the numpy
reference pipeline, in PyTorch and through ONNX Runtime with dynamic batch and image size.

Also hosts the small fakes the other export tests import: a random conv predictor, a blob-finding
predictor with a known answer, a LoadedRun-like run and random images with random crop affines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import ctd_runtime
from ctd_export.fused import FusedLandmarkModel
from ctd_runtime import geometry
from ctd_runtime.codec import HeatmapCodec
from ctd_runtime.normalization import Normalization
from ctd_runtime.schema import LandmarkSchema

INPUT_SIZE = 64
K = 3
CODEC = HeatmapCodec(input_size=INPUT_SIZE, stride=4, sigma=1.5)
RGB_NORM = Normalization("RGB", (123.7, 116.3, 103.5), (1 / 58.4, 1 / 57.1, 1 / 57.4))
BGR_NORM = Normalization("BGR", (127.5, 127.5, 127.5), (1 / 127.5, 1 / 127.5, 1 / 127.5))


# ------------------------------------------------------------------------------------- fakes


class FakePredictor(nn.Module):
    """A few random convs and one ConvTranspose: [N, 3, S, S] -> heatmaps [N, K, S/4, S/4]."""

    def __init__(self, k: int = K, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        )
        self.up = nn.ConvTranspose2d(16, k, 4, stride=2, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            bn = self.features[3]
            bn.running_mean.copy_(torch.randn(8, generator=g) * 0.1)
            bn.running_var.copy_(torch.rand(8, generator=g) + 0.5)
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.features(x))


class BlobPredictor(nn.Module):
    """Heatmap k = the 4x4 mean of input channel k (after normalisation), lightly blurred: a bright
    blob in channel k of the crop peaks at its centre, so landmarks have a known answer."""

    def __init__(self, k: int = K):
        super().__init__()
        self.pool = nn.AvgPool2d(4)
        self.pick = nn.Conv2d(3, k, 1, bias=False)
        self.blur = nn.Conv2d(k, k, 3, padding=1, groups=k, bias=False)
        with torch.no_grad():
            self.pick.weight.zero_()
            for i in range(k):
                self.pick.weight[i, i % 3] = 1.0
            g = torch.tensor([0.25, 0.5, 0.25])
            self.blur.weight.copy_((g[:, None] * g[None, :]).expand(k, 1, 3, 3))
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur(self.pick(self.pool(x)))


def fake_schema(k: int = K) -> LandmarkSchema:
    return LandmarkSchema(
        name=f"fake{k}", landmark_names=tuple(f"p{i}" for i in range(k)),
        source_indices=tuple(range(k)), pfl_pair=(0, 1),
    )


@dataclass
class FakeRun:
    """The fields of `ctd_train.checkpoint.LoadedRun` the export code reads."""

    predictor: nn.Module
    normalization: Normalization = RGB_NORM
    codec: HeatmapCodec = CODEC
    decode: str = "argmax"
    schema: LandmarkSchema = field(default_factory=fake_schema)
    run_dir: Path = Path("fake-run")
    config: dict[str, Any] = field(default_factory=dict)
    run_id: str = "fake-run-0"
    ctd_version: str = ctd_runtime.__version__

    @property
    def input_size(self) -> int:
        return self.codec.input_size


def fake_run(decode: str = "argmax", seed: int = 0, normalization: Normalization = RGB_NORM) -> FakeRun:
    return FakeRun(predictor=FakePredictor(seed=seed), decode=decode, normalization=normalization)


def random_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random colour structure plus noise, uint8 BGR."""
    coarse = rng.integers(0, 256, size=(max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img += rng.integers(-20, 21, size=img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def random_affine(rng: np.random.Generator, h: int, w: int, size: int = INPUT_SIZE) -> np.ndarray:
    """A crop -> image affine with random centre (partly outside allowed), scale, rotation, flip."""
    center = rng.uniform([-0.1 * w, -0.1 * h], [1.1 * w, 1.1 * h])
    side = rng.uniform(0.2, 1.2) * min(h, w)
    return geometry.crop_affine(center, side, size, rng.uniform(-45, 45), flip=bool(rng.random() < 0.3))


def reference(run: FakeRun, images: list[np.ndarray], crops: np.ndarray, decode: str):
    """The numpy/OpenCV pipeline: warp, normalise, predictor, codec decode, affine back."""
    net_in = np.concatenate([
        run.normalization.apply(geometry.warp_to_crop(img, a, run.input_size)) for img, a in zip(images, crops)
    ])
    with torch.no_grad():
        hm = run.predictor(torch.from_numpy(net_in)).numpy()
    coords, scores = run.codec.decode(hm, decode)
    return geometry.apply_affine(crops, coords.astype(np.float64)), scores, hm


def fused(run: FakeRun, decode: str, **kw) -> FusedLandmarkModel:
    return FusedLandmarkModel(run.predictor, run.normalization, run.codec, decode, run.input_size, **kw).eval()


def run_fused(model: FusedLandmarkModel, images: np.ndarray, crops: np.ndarray):
    with torch.no_grad():
        return [t.numpy() for t in model(torch.from_numpy(images), torch.from_numpy(crops.astype(np.float32)))]


def export_fused(model: FusedLandmarkModel, path: Path, graph: str = "fused") -> Path:
    """Through the real export code (TorchScript exporter, output shapes fixed, checker)."""
    import onnx

    from ctd_export.onnx_export import export_onnx_model

    proto = export_onnx_model(model, graph, model.num_landmarks, model.input_size, CODEC.heatmap_size)
    onnx.save(proto, str(path))
    return path


def ort_run(path: Path, images: np.ndarray, crops: np.ndarray) -> list[np.ndarray]:
    """The graph alone (no ctd metadata yet, so not through a backend) in ONNX Runtime."""
    from ctd_runtime.backends.ort_session import open_session

    return open_session(path).run(None, {"image": images, "crop": crops.astype(np.float32)})


# ------------------------------------------------------------------------------------- tests


def test_warp_matches_opencv():
    rng = np.random.default_rng(0)
    model = fused(fake_run(normalization=BGR_NORM), "argmax")
    unrounded = fused(fake_run(normalization=BGR_NORM), "argmax", round_warp=False)
    for t in range(6):
        h, w = int(rng.integers(40, 300)), int(rng.integers(40, 300))
        img = random_image(rng, h, w)
        a = random_affine(rng, h, w)
        ref = geometry.warp_to_crop(img, a, INPUT_SIZE).astype(np.float32)
        args = (torch.from_numpy(img[None]), torch.from_numpy(a[None].astype(np.float32)))
        with torch.no_grad():
            got = model.warp(*args)[0].permute(1, 2, 0).numpy()
            raw = unrounded.warp(*args)[0].permute(1, 2, 0).numpy()
        diff = np.abs(got - ref)
        assert diff.max() <= 1.0, diff.max()
        # OpenCV 4.11+ interpolates in float and rounds; older versions used 1/32-px fixed point
        assert (diff > 0).mean() < 0.02
        assert np.abs(raw - ref).max() <= 1.0


@pytest.mark.parametrize("decode", ["argmax", "quarter", "dark"])
def test_fused_torch_matches_numpy_reference(decode):
    rng = np.random.default_rng(1)
    run = fake_run(decode)
    h, w = 150, 210
    images = np.stack([random_image(rng, h, w) for _ in range(4)])
    crops = np.stack([random_affine(rng, h, w) for _ in range(4)])
    ref, ref_scores, ref_hm = reference(run, list(images), crops, decode)
    landmarks, scores, heatmaps = run_fused(fused(run, decode, with_heatmaps=True), images, crops)
    assert landmarks.shape == (4, K, 2) and scores.shape == (4, K) and heatmaps.shape == (4, K, 16, 16)
    assert landmarks.dtype == np.float32 and scores.dtype == np.float32
    # the crops differ by one intensity level on a few pixels (OpenCV's rounding), which moves
    # heatmap values slightly but no landmark
    np.testing.assert_allclose(landmarks, ref, atol=1e-3)
    np.testing.assert_allclose(scores, ref_scores, rtol=5e-3)
    np.testing.assert_allclose(heatmaps, ref_hm, atol=2e-2)


def test_blob_landmarks_land_on_the_blobs_through_rotated_crops():
    """Conventions end to end: a bright blob in channel k at (x, y) gives landmark k at (x, y)."""
    rng = np.random.default_rng(2)
    run = FakeRun(predictor=BlobPredictor(), normalization=Normalization("BGR", (0, 0, 0), (1 / 255,) * 3))
    model = fused(run, "dark")
    h, w = 180, 240
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(5):
        centres = rng.uniform([90, 65], [150, 115], size=(K, 2))  # inside DARK's border margin
        img = np.zeros((h, w, 3))
        for k, (cx, cy) in enumerate(centres):
            img[..., k] += 250 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 7.0**2))
        img = np.clip(img, 0, 255).astype(np.uint8)
        a = geometry.crop_affine(rng.uniform([115, 85], [125, 95]), 150, INPUT_SIZE, rng.uniform(-30, 30))
        landmarks, scores = run_fused(model, img[None], a[None])
        err = np.linalg.norm(landmarks[0] - centres, axis=1)
        assert err.max() < 0.2, err  # one crop pixel is 150 / 64 = 2.3 source pixels
        assert np.all(scores > 0)


def test_fused_onnx_dynamic_batch_and_size(tmp_path):
    rng = np.random.default_rng(3)
    run = fake_run("quarter")
    model = fused(run, "quarter")
    path = export_fused(model, tmp_path / "fused.onnx")
    for n, h, w in ((1, 97, 131), (3, 240, 180), (2, 64, 64)):
        images = np.stack([random_image(rng, h, w) for _ in range(n)])
        crops = np.stack([random_affine(rng, h, w) for _ in range(n)])
        landmarks, scores = ort_run(path, images, crops)
        ref, ref_scores, _ = reference(run, list(images), crops, "quarter")
        assert landmarks.shape == (n, K, 2) and scores.shape == (n, K)
        np.testing.assert_allclose(landmarks, ref, atol=1e-3)
        np.testing.assert_allclose(scores, ref_scores, rtol=5e-3)


def test_fused_rejects_a_predictor_that_does_not_fit():
    run = fake_run()
    with pytest.raises(ValueError, match="heatmaps"):
        FusedLandmarkModel(run.predictor, RGB_NORM, HeatmapCodec(input_size=64, stride=8), "argmax", 64)
    with pytest.raises(ValueError, match="not 5"):
        FusedLandmarkModel(run.predictor, RGB_NORM, CODEC, "argmax", 64, num_landmarks=5)
    with pytest.raises(ValueError, match="decode"):
        FusedLandmarkModel(run.predictor, RGB_NORM, CODEC, "softargmax", 64)
