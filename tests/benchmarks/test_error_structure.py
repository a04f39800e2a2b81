"""benchmarks/error_structure.py: the RMS decomposition into per-subject bias and the spread within
subjects, and the annotation noise implied by two captures of one pose."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import error_structure  # noqa: E402


def test_a_pure_subject_bias_is_all_between_and_a_centred_one_all_within():
    subjects = ["a", "a", "b", "b"]
    bias = error_structure.decompose(np.array([0.1, 0.1, -0.2, -0.2]), subjects)
    assert bias["between_subject_rms"] == pytest.approx(math.sqrt((0.01 + 0.04) / 2))
    assert bias["within_subject_rms"] == pytest.approx(0.0)
    centred = error_structure.decompose(np.array([0.1, -0.1, 0.3, -0.3]), subjects)
    assert centred["between_subject_rms"] == pytest.approx(0.0)
    assert centred["within_subject_rms"] == pytest.approx(centred["total_rms"])
    mixed = error_structure.decompose(np.array([0.3, 0.1, -0.1, 0.2]), subjects)
    assert mixed["total_rms"] ** 2 == pytest.approx(mixed["between_subject_rms"] ** 2 + mixed["within_subject_rms"] ** 2)
    assert (mixed["n_images"], mixed["n_subjects"]) == (4, 2)


def test_pair_noise_is_the_pair_difference_over_root_two():
    true_pfl = np.array([40.0, 44.0, 30.0, 30.0, 50.0])   # subject a: 40 vs 44, b: 30 vs 30, c: one capture
    pred_pfl = np.array([41.0, 41.0, 31.0, 32.0, 50.0])
    out = error_structure.pair_noise(pred_pfl, true_pfl, ["a", "a", "b", "b", "c"], ["1", "5", "1", "5", "1"], "1", "5")
    assert out["n_pairs"] == 2
    truth = np.array([4 / 42, 0.0])
    assert out["annotation_diff_rms"] == pytest.approx(math.sqrt(np.mean(truth ** 2)))
    assert out["annotation_noise_rms"] == pytest.approx(out["annotation_diff_rms"] / math.sqrt(2))
    assert out["model_diff_mean_abs"] == pytest.approx(np.mean([0.0, 1 / 31.5]))
    assert out["floor_mean_abs_if_normal"] == pytest.approx(out["annotation_noise_rms"] * math.sqrt(2 / math.pi))
    assert error_structure.pair_noise(pred_pfl, true_pfl, ["a"] * 5, ["2"] * 5, "1", "5") == {"n_pairs": 0}


def test_a_run_without_image_types_gets_its_decomposition_and_no_pairs(tmp_path, monkeypatch, capsys):
    from ctd_train.trainer import train
    from tests.train._tiny_training import tiny_config, tiny_data, tiny_teachers

    tiny_teachers(monkeypatch)
    run = train(tiny_config(tiny_data(tmp_path / "data"), tmp_path / "run", method="ft", epochs=1),
                progress=False, evaluate_test=False)
    out = tmp_path / "res" / "es"
    assert error_structure.main([str(run), "--threads", "1", "--out", str(out)]) == 0
    import json
    row = json.loads(out.with_suffix(".json").read_text())["runs"][0]
    assert row["pairs"] == {"n_pairs": 0} and row["errors"]["n_images"] == 2
    assert "| run |" in capsys.readouterr().out


def test_relative_pfl_fit_sees_a_model_that_shrinks_every_eye_to_the_mean():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(40, 14, 2)) * 30 + 100
    pair = (0, 1)
    centre = (gt[:, 0] + gt[:, 1]) / 2
    half = (gt[:, 1] - gt[:, 0]) / 2
    shrunk = gt.copy()                       # the same face, every eye half-way to the mean relative size
    rel = np.linalg.norm(2 * half, axis=-1) / error_structure.face_scale(gt)
    factor = (0.5 + 0.5 * rel.mean() / rel)[:, None]
    shrunk[:, 0], shrunk[:, 1] = centre - half * factor, centre + half * factor
    assert error_structure.relative_pfl_fit(gt, gt, pair)["slope"] == pytest.approx(1.0)
    fit = error_structure.relative_pfl_fit(shrunk, gt, pair)
    assert 0.3 < fit["slope"] < 0.7 and fit["correlation"] > 0.9 and fit["sd_pred"] < fit["sd_true"]
