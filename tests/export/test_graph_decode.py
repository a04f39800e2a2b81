"""The graph decoder equals the numpy codec (argmax / quarter / DARK), in PyTorch and in ONNX
Runtime, on random heatmaps and on encoded Gaussians, including border peaks, flat and
non-finite maps."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from ctd_export.graph_decode import GraphDecoder, dark_blur_kernel
from ctd_runtime.codec import HeatmapCodec

CODEC = HeatmapCodec(input_size=256, stride=4, sigma=1.5)
METHODS = ("argmax", "quarter", "dark")


class _ToCrop(nn.Module):
    def __init__(self, decoder: GraphDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, heatmaps):
        xy, scores = self.decoder(heatmaps)
        return self.decoder.heatmap_to_crop(xy), scores


def _ort_decoder(method: str, k: int, codec: HeatmapCodec = CODEC):
    """The decoder exported alone (TorchScript exporter, dynamic batch) as an ORT session."""
    from ctd_runtime.backends.ort_session import open_session

    module = _ToCrop(GraphDecoder(codec, method, k)).eval()
    buf = io.BytesIO()
    h = codec.heatmap_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (torch.rand(2, k, h, h),), buf, input_names=["heatmaps"], output_names=["xy", "scores"],
            dynamic_axes={"heatmaps": {0: "n"}, "xy": {0: "n"}, "scores": {0: "n"}}, opset_version=17, dynamo=False,
        )
    sess = open_session(buf.getvalue())
    return lambda hm: sess.run(None, {"heatmaps": np.ascontiguousarray(hm, dtype=np.float32)})


def _torch_decoder(method: str, k: int, codec: HeatmapCodec = CODEC):
    module = _ToCrop(GraphDecoder(codec, method, k)).eval()

    def run(hm):
        with torch.no_grad():
            return [t.numpy() for t in module(torch.from_numpy(np.asarray(hm, dtype=np.float32)))]

    return run


def _random_maps(rng, n=6, k=7, h=64):
    return rng.random((n, k, h, h)).astype(np.float32)


def _encoded_maps(rng, n=6, k=7, codec=CODEC, noise=0.0):
    """Gaussians at random sub-pixel positions: most inside, some at the border or outside."""
    h = codec.heatmap_size
    hm_xy = rng.uniform(-0.4, h - 0.6, size=(n, k, 2))
    hm_xy[:, 0] = rng.uniform(-0.4, 2.5, size=(n, 2))  # near the top-left border
    hm_xy[:, 1] = rng.integers(0, h, size=(n, 2))  # integer peaks
    maps = np.stack([codec.encode(codec.heatmap_to_crop(p))[0] for p in hm_xy])
    if noise:
        maps = maps + rng.normal(0, noise, maps.shape).astype(np.float32)
    return maps.astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("runner", ["torch", "onnxruntime"])
def test_graph_decode_equals_codec(method, runner):
    rng = np.random.default_rng(10)
    k = 7
    decode = (_torch_decoder if runner == "torch" else _ort_decoder)(method, k)
    for maps in (_random_maps(rng, k=k), _encoded_maps(rng, k=k), _encoded_maps(rng, k=k, noise=0.02)):
        ref, ref_scores = CODEC.decode(maps, method)
        got, scores = decode(maps)
        assert got.shape == ref.shape and got.dtype == np.float32
        assert np.abs(got - ref).max() < 1e-3, np.abs(got - ref).max()
        np.testing.assert_array_equal(scores, ref_scores)


@pytest.mark.parametrize("method", METHODS)
def test_special_maps_flat_nonfinite_and_ties(method):
    k = 6
    maps = np.random.default_rng(11).random((1, k, 64, 64)).astype(np.float32)
    maps[0, 0] = 0.0                          # all zero
    maps[0, 1] = 0.7                          # flat
    maps[0, 2, 5, 9] = np.nan                 # NaN somewhere
    maps[0, 3, 20, 20] = np.inf               # +inf
    maps[0, 4, 30:34, 30:34] = 5.0            # a plateau: the first maximum wins
    maps[0, 5] = -np.abs(maps[0, 5])          # all negative
    ref, ref_scores = CODEC.decode(maps, method)
    for decode in (_torch_decoder(method, k), _ort_decoder(method, k)):
        got, scores = decode(maps)
        np.testing.assert_allclose(got, ref, atol=1e-3)
        np.testing.assert_array_equal(scores, ref_scores)
    assert ref_scores[0, :4].tolist() == [0.0, 0.0, 0.0, 0.0]
    if method == "argmax":  # the first maximum of the plateau, as numpy's argmax
        np.testing.assert_array_equal(ref[0, 4], CODEC.heatmap_to_crop(np.array([30.0, 30.0])))


def test_other_codec_sizes_and_sigma():
    codec = HeatmapCodec(input_size=64, stride=4, sigma=2.0)
    rng = np.random.default_rng(12)
    for method in METHODS:
        maps = _encoded_maps(rng, n=4, k=3, codec=codec, noise=0.01)
        ref, _ = codec.decode(maps, method)
        got, _ = _torch_decoder(method, 3, codec)(maps)
        assert np.abs(got - ref).max() < 1e-3


def test_dark_round_trip_through_the_graph_within_005_px():
    pts = CODEC.heatmap_to_crop(np.random.default_rng(13).uniform(4, 59, size=(200, 2)))
    maps = CODEC.encode(pts)[0][None]
    got, _ = _ort_decoder("dark", 200)(maps)
    assert np.linalg.norm(got[0] - pts, axis=1).max() < 0.05


def test_blur_kernel_is_opencvs():
    import cv2

    src = np.zeros((15, 15), np.float32)
    src[7, 7] = 1.0
    blurred = cv2.GaussianBlur(src, (7, 7), 1.5, borderType=cv2.BORDER_CONSTANT)
    np.testing.assert_allclose(dark_blur_kernel(1.5), blurred[4:11, 4:11], atol=1e-7)
