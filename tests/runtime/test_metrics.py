"""Golden metric values computed by hand."""

import numpy as np
import pytest

from ctd_runtime.geometry import crop_affine
from ctd_runtime.metrics import (
    auc,
    ced_curve,
    evaluate_landmarks,
    failure_rate,
    per_image_errors,
    per_landmark_errors,
    pfl,
    summarize,
)

GT = np.array([[[0.0, 0.0], [10.0, 0.0]], [[0.0, 0.0], [20.0, 0.0]]])   # PFL 10 and 20
PRED = GT + np.array([[[3.0, 4.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, -2.0]]])


def test_point_errors_by_hand():
    np.testing.assert_allclose(per_landmark_errors(PRED, GT), [[5.0, 1.0], [0.0, 2.0]])
    np.testing.assert_allclose(per_image_errors(PRED, GT), [3.0, 1.0])
    np.testing.assert_allclose(pfl(GT, (0, 1)), [10.0, 20.0])


def test_summary_by_hand():
    s = summarize(np.array([3.0, 1.0]), threshold=2.0, unit="px")
    assert s.me == 2.0 and s.sd == 1.0 and s.fr == 0.5
    # CED: 0 until 1, 0.5 from 1 to 2 -> area 0.5 over [0,2] -> AUC 0.25
    assert s.auc == pytest.approx(0.25)


def test_edge_cases_all_failures_no_failures_one_image():
    assert failure_rate(np.array([5.0, 6.0]), 1.2) == 1.0 and auc(np.array([5.0, 6.0]), 1.2) == 0.0
    assert failure_rate(np.array([0.0, 0.0]), 1.2) == 0.0 and auc(np.array([0.0, 0.0]), 1.2) == 1.0
    one = summarize(np.array([0.3]), threshold=1.2, unit="px")
    assert one.sd == 0.0 and one.me == 0.3 and one.fr == 0.0
    assert one.auc == pytest.approx(0.75)
    assert failure_rate(np.array([1.2]), 1.2) == 0.0  # failure is error > threshold
    with pytest.raises(ValueError):
        summarize(np.array([]), 1.0, "px")


def test_auc_matches_integral_of_ced():
    e = np.random.default_rng(0).gamma(2.0, 0.3, size=300)
    x, y = ced_curve(e, 1.2, num=200001)
    assert np.trapezoid(y, x) / 1.2 == pytest.approx(auc(e, 1.2), abs=1e-4)
    assert y[0] == np.mean(e <= 0) and y[-1] == np.mean(e <= 1.2)


def test_units_pfl_mm_crop():
    ev = evaluate_landmarks(PRED, GT, "pfl", threshold=0.1, pfl_pair=(0, 1))
    np.testing.assert_allclose(ev.per_image, [0.3, 0.05])
    assert ev.summary.fr == 0.5
    np.testing.assert_allclose(ev.per_landmark_mean, [(0.5 + 0.0) / 2, (0.1 + 0.1) / 2])
    # PFL error: image 0 pred pair (3,4)-(10,1) -> sqrt(49+9); image 1 (0,0)-(20,-2) -> sqrt(404)
    np.testing.assert_allclose(ev.pfl_error_signed, [(np.sqrt(58) - 10) / 10, (np.sqrt(404) - 20) / 20])
    mm = evaluate_landmarks(PRED, GT, "mm", threshold=1.0, pfl_pair=(0, 1), pixel_spacing=0.5)
    np.testing.assert_allclose(mm.per_image, [1.5, 0.5])
    affines = np.stack([crop_affine((0, 0), 64.0), crop_affine((0, 0), 128.0)])  # 0.25 and 0.5 px/crop px
    crop = evaluate_landmarks(PRED, GT, "crop_px", threshold=5.0, pfl_pair=(0, 1), crop_affines=affines)
    np.testing.assert_allclose(crop.per_image, [12.0, 2.0])
    with pytest.raises(ValueError):
        evaluate_landmarks(PRED, GT, "mm", threshold=1.0, pfl_pair=(0, 1))
