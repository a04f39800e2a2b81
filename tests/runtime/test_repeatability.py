"""Test-retest PFL differences and per-value breakdowns on numbers whose answer is known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ctd_runtime.errors import CtdError
from ctd_runtime.repeatability import (
    errors_by_value,
    pairs_of_values,
    pairs_within_groups,
    read_column,
    retest,
    retest_pairs,
)

PAIR = (0, 1)


def eyes(*lengths: float) -> np.ndarray:
    """One image per length: endocanthion at the origin, exocanthion `length` px along x."""
    return np.array([[[0.0, 0.0], [length, 0.0]] for length in lengths])


def test_pairs_within_groups_all_combinations_and_none_is_no_group():
    keys = [("s1", "frontal"), None, ("s1", "frontal"), ("s2", "frontal"), ("s1", "frontal"), ("s3", "left")]
    assert pairs_within_groups(keys) == [(0, 2), (0, 4), (2, 4)]
    assert pairs_within_groups([None, None]) == []


def test_pairs_of_values_pairs_types_per_subject():
    subjects = ["01", "01", "01", "02", "02", "03"]
    types = ["1", "5", "2", "5", "1", "1"]
    assert pairs_of_values(subjects, types, "1", "5") == [(0, 1), (4, 3)]  # 03 has no type 5
    with pytest.raises(ValueError, match="two images with value"):
        pairs_of_values(["01", "01"], ["1", "1"], "1", "5")
    with pytest.raises(ValueError, match="must differ"):
        pairs_of_values(["01"], ["1"], "1", "1")


def test_retest_by_hand():
    # pairs (40, 44): diff 4 px, mean 42 -> 2/21; (30, 30): 0; (50, 40): 10 px, mean 45 -> 2/9
    pts = eyes(40, 44, 30, 30, 50, 40)
    s = retest(pts, PAIR, [(0, 1), (2, 3), (4, 5)])
    frac = np.array([4 / 42, 0.0, 10 / 45])
    assert s.n_pairs == 3 and s.n_skipped == 0
    assert s.mean == pytest.approx(frac.mean()) and s.median == pytest.approx(4 / 42)
    assert s.sd == pytest.approx(frac.std())
    assert s.mean_px == pytest.approx(14 / 3) and s.median_px == 4.0
    assert s.sd_px == pytest.approx(np.std([4.0, 0.0, 10.0]))


def test_retest_uses_the_schema_pair_and_is_order_free():
    # 3 landmarks; the PFL pair is (2, 0): a 3-4-5 triangle gives PFL 5, doubled gives 10
    a = np.array([[0.0, 0.0], [99.0, 99.0], [3.0, 4.0]])
    pts = np.stack([a, 2 * a])
    rp = retest_pairs(pts, (2, 0), [(1, 0)])
    np.testing.assert_allclose([rp.pfl_a[0], rp.pfl_b[0]], [10.0, 5.0])
    np.testing.assert_allclose(rp.diff_fraction, [5 / 7.5])


def test_missing_predictions_are_skipped_and_counted():
    pts = eyes(40, 44, 30, 33)
    pts[2, 1] = np.nan  # image 2 has no prediction
    s = retest(pts, PAIR, [(0, 1), (2, 3)])
    assert s.n_pairs == 1 and s.n_skipped == 1 and s.mean == pytest.approx(4 / 42)
    none = retest(pts, PAIR, [(2, 3)])
    assert none.n_pairs == 0 and none.n_skipped == 1 and math.isnan(none.mean)
    assert none.to_dict()["mean"] is None


def test_retest_rejects_bad_pairs_and_shapes():
    with pytest.raises(ValueError, match="outside"):
        retest(eyes(40, 44), PAIR, [(0, 2)])
    with pytest.raises(ValueError, match=r"\[N, K, 2\]"):
        retest(np.zeros((2, 4)), PAIR, [(0, 1)])
    with pytest.raises(ValueError, match="zero PFL"):
        retest(eyes(0, 0), PAIR, [(0, 1)])


def test_errors_by_value_by_hand():
    gt = eyes(40, 40, 20)
    pred = gt.copy()
    pred[0, 1, 0] = 44.0       # type 1: exocanthion 4 px long -> ME 2 px, PFL +10%
    pred[1, 0, 0] = 2.0        # type 1: endocanthion 2 px right -> ME 1 px, PFL -5%
    pred[2, :, 1] += 3.0       # type 3: both corners 3 px down -> ME 3 px, PFL exact
    rows = errors_by_value([1, 1, 3], pred, gt, PAIR, unit="px")
    assert [r.value for r in rows] == ["1", "3"]
    one, three = rows
    assert one.n_images == 2 and one.n_missing == 0
    assert one.me == pytest.approx(1.5) and one.pfl_abs == pytest.approx(0.075)
    assert one.pfl_signed == pytest.approx(0.025)
    assert three.me == pytest.approx(3.0) and three.pfl_abs == 0.0 and three.unit == "px"
    in_pfl = errors_by_value([1, 1, 3], pred, gt, PAIR, unit="pfl")
    assert in_pfl[0].me == pytest.approx((2 / 40 + 1 / 40) / 2) and in_pfl[1].me == pytest.approx(3 / 20)


def test_errors_by_value_counts_missing_and_sorts_numbers_numerically():
    gt = eyes(40, 40, 40)
    pred = gt.copy()
    pred[1] = np.nan
    rows = errors_by_value(["10", "2", "2"], pred, gt, PAIR)
    assert [r.value for r in rows] == ["2", "10"]
    assert rows[0].n_images == 2 and rows[0].n_missing == 1 and rows[0].me == 0.0
    all_missing = errors_by_value(["a"], pred[1:2], gt[1:2], PAIR)
    assert all_missing[0].n_missing == 1 and math.isnan(all_missing[0].me)
    assert all_missing[0].to_dict()["pfl_abs"] is None
    with pytest.raises(ValueError, match="one value per image"):
        errors_by_value(["1"], pred, gt, PAIR)


def test_read_column(tmp_path):
    meta = tmp_path / "metadata.csv"
    meta.write_text("image,subject,image_type\n01-1m.jpg,01,1\n01-5m.jpg,01,5\n")
    assert read_column(meta, "image_type", ["01-5m.jpg", "01-1m.jpg"]) == ["5", "1"]
    with pytest.raises(CtdError, match="no column 'pose'") as e:
        read_column(meta, "pose", ["01-1m.jpg"])
    assert str(meta) in str(e.value)
    with pytest.raises(CtdError, match="no row, e.g. '02-1m.jpg'"):
        read_column(meta, "image_type", ["02-1m.jpg"])
    with pytest.raises(CtdError, match="cannot read"):
        read_column(tmp_path / "absent.csv", "image_type", [])


def test_grouped_report_of_predictions_and_truth():
    """Two subjects with types 1 and 5: the model's PFL moves 10% between the captures of subject a
    and not at all for b, the annotation never; the breakdown counts each type."""
    from ctd_runtime.repeatability import grouped_report

    def eye(length):
        return np.array([[0.0, 0.0], [length, 0.0]])

    gt = np.stack([eye(40), eye(40), eye(30), eye(30)])
    pred = np.stack([eye(40), eye(44), eye(30), eye(30)])
    r = grouped_report(pred, gt, ["1", "5", "1", "5"], ["a", "a", "b", "b"], (1, 0), "image_type", ("1", "5"))
    assert r.retest_pred.n_pairs == 2 and r.retest_truth.n_pairs == 2
    assert r.retest_pred.mean == pytest.approx((4 / 42 + 0) / 2)
    assert r.retest_truth.mean == 0.0
    assert [v.value for v in r.by_value] == ["1", "5"] and [v.n_images for v in r.by_value] == [2, 2]
    assert r.by_value[1].pfl_abs == pytest.approx(0.05)
    assert r.to_dict()["repeat"] == ["1", "5"]
