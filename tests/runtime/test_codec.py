"""The codec's round trips are the tightest tests in the suite: every coordinate passes here."""

import numpy as np
import pytest

from ctd_runtime.codec import HeatmapCodec

CODEC = HeatmapCodec(input_size=256, stride=4, sigma=1.5)


def test_formula_between_heatmap_and_crop():
    assert CODEC.heatmap_to_crop(np.array([0.0, 63.0])).tolist() == [1.5, 253.5]
    xy = np.array([[10.25, 200.0]])
    np.testing.assert_allclose(CODEC.heatmap_to_crop(CODEC.crop_to_heatmap(xy)), xy)


def test_encode_shape_peak_and_sigma():
    pts = np.array([[CODEC.heatmap_to_crop(20), CODEC.heatmap_to_crop(30)]])
    hm, w = CODEC.encode(pts)
    assert hm.shape == (1, 64, 64) and hm.dtype == np.float32 and w.tolist() == [1.0]
    assert hm[0, 30, 20] == pytest.approx(1.0)
    # one heatmap pixel away the Gaussian is exp(-1 / (2 sigma^2))
    assert hm[0, 30, 21] == pytest.approx(np.exp(-1 / (2 * 1.5**2)), rel=1e-6)
    assert hm[0, 31, 21] == pytest.approx(np.exp(-2 / (2 * 1.5**2)), rel=1e-6)


def test_outside_and_nan_points_get_zero_weight():
    hm, w = CODEC.encode(np.array([[-20.0, 50.0], [np.nan, 3.0], [300.0, 10.0], [100.0, 100.0]]))
    assert w.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert np.all(hm[:3] == 0)


def test_argmax_round_trip_exact_for_integer_peaks():
    rng = np.random.default_rng(1)
    grid = rng.integers(0, 64, size=(5, 14, 2))
    pts = CODEC.heatmap_to_crop(grid)
    hms = np.stack([CODEC.encode(p)[0] for p in pts])
    coords, scores = CODEC.decode(hms, "argmax")
    np.testing.assert_array_equal(coords, pts.astype(np.float32))
    np.testing.assert_allclose(scores, 1.0)


def _random_subpixel(n: int, seed: int, lo: float = 4.0, hi: float = 59.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return CODEC.heatmap_to_crop(rng.uniform(lo, hi, size=(n, 2)))


def test_dark_round_trip_within_005_px_for_subpixel_peaks():
    pts = _random_subpixel(500, seed=2)
    hm, _ = CODEC.encode(pts)
    coords, _ = CODEC.decode(hm, "dark")
    err = np.linalg.norm(coords - pts, axis=1)
    assert err.max() < 0.05, err.max()


def test_dark_exact_on_integer_peaks_too():
    pts = CODEC.heatmap_to_crop(np.array([[10.0, 40.0], [33.0, 33.0]]))
    coords, _ = CODEC.decode(CODEC.encode(pts)[0], "dark")
    np.testing.assert_allclose(coords, pts, atol=1e-3)


@pytest.mark.parametrize("method", ["quarter", "dark"])
def test_refinements_not_worse_than_argmax(method):
    pts = _random_subpixel(2000, seed=3, lo=0.0, hi=63.0)
    hm, _ = CODEC.encode(pts)
    base = np.linalg.norm(CODEC.decode(hm, "argmax")[0] - pts, axis=1)
    refined = np.linalg.norm(CODEC.decode(hm, method)[0] - pts, axis=1)
    assert refined.mean() < base.mean()
    assert np.percentile(refined, 90) <= np.percentile(base, 90)
    if method == "dark":  # per peak, DARK never loses more than rounding against argmax
        assert np.all(refined <= base + 1e-3)


def test_quarter_moves_toward_higher_neighbour():
    hm = np.zeros((1, 1, 64, 64), np.float32)
    hm[0, 0, 10, 10] = 1.0
    hm[0, 0, 10, 11] = 0.5  # right neighbour higher than left
    hm[0, 0, 9, 10] = 0.3   # upper neighbour higher than lower
    coords, _ = CODEC.decode(hm, "quarter")
    np.testing.assert_allclose(coords[0, 0], CODEC.heatmap_to_crop(np.array([10.25, 9.75])))


@pytest.mark.parametrize("method", ["argmax", "quarter", "dark"])
def test_flat_zero_and_nonfinite_heatmaps_score_zero(method):
    hm = np.random.default_rng(0).random((2, 4, 64, 64)).astype(np.float32)
    hm[0, 0] = 0.0
    hm[0, 1] = 0.7
    hm[1, 2, 5, 5] = np.nan
    hm[1, 3, :, :] = np.inf
    coords, scores = CODEC.decode(hm, method)
    assert scores[0, 0] == 0 and scores[0, 1] == 0 and scores[1, 2] == 0 and scores[1, 3] == 0
    assert scores[0, 2] > 0 and scores[1, 0] > 0
    assert np.all(np.isfinite(coords))


def test_decode_accepts_single_image_and_rejects_bad_shapes():
    hm, _ = CODEC.encode(np.array([[100.0, 120.0]]))
    coords, scores = CODEC.decode(hm)
    assert coords.shape == (1, 2) and scores.shape == (1,)
    with pytest.raises(ValueError):
        CODEC.decode(np.zeros((64, 64)))
    with pytest.raises(ValueError):
        CODEC.decode(hm, "softargmax")  # type: ignore[arg-type]
