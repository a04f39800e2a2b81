"""The two-stage evaluation: the eye run replaces exactly the face run's eye landmarks, on crops
built from the face run's own predicted corners (tiny fake teacher, synthetic data)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ctd_runtime.errors import CtdError
from ctd_runtime.schema import LandmarkSchema, get_schema
from ctd_train.cascade import evaluate_cascade, shared_landmarks
from ctd_train.trainer import train
from tests.train._tiny_training import tiny_config, tiny_data, tiny_teachers


@pytest.fixture()
def runs(tmp_path, monkeypatch):
    tiny_teachers(monkeypatch)
    data = tiny_data(tmp_path / "data")
    face = train(tiny_config(data, tmp_path / "face", method="ft", epochs=1), progress=False)
    eye_cfg = dataclasses.replace(tiny_config(data, tmp_path / "eye", method="ft", epochs=1), schema="imm-eye",
                                  crop="pfl", crop_scale=2.5)
    eye = train(eye_cfg, progress=False)
    return face, eye


def test_shared_landmarks_map_eye_points_into_the_face_schema():
    pairs = shared_landmarks(get_schema("imm14"), get_schema("imm-eye"))
    assert pairs == [(i, i) for i in range(8)]
    with pytest.raises(CtdError, match="lacks its points"):
        shared_landmarks(get_schema("imm-eye"), LandmarkSchema(
            name="x", landmark_names=("a", "b"), source_indices=(0, 1), pfl_pair=(0, 1)))


def test_cascade_replaces_only_the_eye(runs):
    face, eye = runs
    report = evaluate_cascade(face, eye, split="test")
    first = report.first.pred
    refined = report.refined_pred
    assert refined.shape == first.shape == (2, 14, 2)
    assert np.array_equal(refined[:, 8:], first[:, 8:])         # nose and mouth untouched
    assert not np.allclose(refined[:, :8], first[:, :8])          # the eye comes from the second stage
    s = report.summary()
    assert s["n_images"] == 2 and np.isfinite(s["cascade"]["me"]) and np.isfinite(s["first_stage"]["me"])
    twice = evaluate_cascade(face, eye, split="test", iterations=2)
    assert np.array_equal(twice.refined_pred[:, 8:], first[:, 8:])


def test_a_face_run_is_refused_as_refinement(runs):
    face, _ = runs
    with pytest.raises(CtdError, match="fissure crops"):
        evaluate_cascade(face, face)
