import cv2
import numpy as np
import pytest

from ctd_runtime import geometry

from ctd_runtime.geometry import (
    affine_scale,
    apply_affine,
    crop_affine,
    invert_affine,
    square_box,
    warp_to_crop,
)


def test_square_box_margin():
    c, side = square_box(np.array([[10.0, 20.0], [50.0, 40.0]]), margin=0.25)
    np.testing.assert_allclose(c, [30.0, 30.0])
    assert side == pytest.approx(50.0)


def test_crop_centre_maps_to_box_centre_and_corners_to_box_edges():
    a = crop_affine((100.0, 80.0), side=64.0, output_size=256)
    np.testing.assert_allclose(apply_affine(a, np.array([127.5, 127.5])), [100.0, 80.0])
    # the crop's outer edge (-0.5) is the box's outer edge
    np.testing.assert_allclose(apply_affine(a, np.array([-0.5, -0.5])), [68.0, 48.0])
    assert affine_scale(a) == pytest.approx(0.25)


@pytest.mark.parametrize("rot,flip", [(0.0, False), (17.0, False), (-33.0, True), (90.0, True)])
def test_points_round_trip_both_ways(rot, flip):
    rng = np.random.default_rng(0)
    a = crop_affine((321.3, 240.7), side=173.9, output_size=256, rotation_deg=rot, flip=flip)
    inv = invert_affine(a)
    pts = rng.uniform(-50, 700, size=(100, 2))
    np.testing.assert_allclose(apply_affine(a, apply_affine(inv, pts)), pts, atol=1e-4)
    np.testing.assert_allclose(apply_affine(inv, apply_affine(a, pts)), pts, atol=1e-4)


def test_batched_affines_broadcast():
    a = np.stack([crop_affine((50, 60), 100, rotation_deg=r) for r in (0, 10, 20)])
    pts = np.random.default_rng(1).uniform(0, 255, size=(3, 5, 2))
    batched = apply_affine(a, pts)
    for i in range(3):
        np.testing.assert_allclose(batched[i], apply_affine(a[i], pts[i]))


def test_warp_samples_the_pixel_the_affine_names():
    img = np.zeros((300, 400, 3), np.uint8)
    img[150, 210] = (255, 128, 7)  # one bright pixel at x=210, y=150
    a = crop_affine((200.0, 140.0), side=64.0, output_size=64, rotation_deg=30.0)
    crop = warp_to_crop(img, a, 64)
    u, v = apply_affine(invert_affine(a), np.array([210.0, 150.0]))
    peak = np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2])
    assert abs(peak[1] - u) <= 0.5 + 1e-6 and abs(peak[0] - v) <= 0.5 + 1e-6


def test_identity_crop_is_the_image():
    img = np.random.default_rng(2).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    a = crop_affine((127.5, 127.5), side=256.0, output_size=256)
    np.testing.assert_allclose(a, [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    np.testing.assert_array_equal(warp_to_crop(img, a, 256), img)
    assert cv2.__version__


def test_pair_aligned_box_puts_the_pair_on_the_crop_axis():
    """a and b land on the crop's horizontal midline, a left of b, |b - a| = side / scale, for
    any angle of the segment in the image."""
    for angle in (0.0, 25.0, -40.0, 170.0):
        t = np.radians(angle)
        a = np.array([100.0, 80.0])
        b = a + 40.0 * np.array([np.cos(t), np.sin(t)])
        center, side, rotation = geometry.pair_aligned_box(a, b, 2.5)
        assert side == pytest.approx(100.0)
        inv = geometry.invert_affine(geometry.crop_affine(center, side, 256, rotation))
        ua, ub = geometry.apply_affine(inv, np.stack([a, b]))
        mid = 255 / 2
        assert ua[1] == pytest.approx(mid, abs=1e-9) and ub[1] == pytest.approx(mid, abs=1e-9)
        assert ub[0] - ua[0] == pytest.approx(256 / 2.5, rel=1e-9)
        assert (ua[0] + ub[0]) / 2 == pytest.approx(mid, abs=1e-9)
