"""Evaluation: predictions on ground-truth-box crops mapped back to source pixels, the numbers of
`ctd_runtime.metrics` in every unit, the per-image CSV, the CED plot, and run comparison."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch

from ctd_runtime import geometry
from ctd_runtime.errors import CtdError
from ctd_runtime.metrics import evaluate_landmarks
from ctd_runtime.schema import get_schema
from ctd_train.evaluate import compare_runs, evaluate_predictions, evaluate_run
from tests.train._tiny_training import tiny_config, tiny_data, tiny_teachers

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny trained runs (ctd-com and ft), sharing one data folder."""
    from ctd_train.trainer import train

    root = tmp_path_factory.mktemp("eval")
    with pytest.MonkeyPatch.context() as mp:
        tiny_teachers(mp)
        data = tiny_data(root / "data", n_subjects=4, per_subject=3)
        a = train(tiny_config(data, root / "com", method="ctd-com", epochs=1), progress=False, evaluate_test=False)
        b = train(tiny_config(data, root / "ft", method="ft", epochs=1), progress=False, evaluate_test=False)
        yield data, a, b


def test_report_equals_runtime_metrics(runs):
    data, run, _ = runs
    report = evaluate_run(run, split="test")
    assert report.n_images == 3 and report.split == "test" and report.unit == "pfl"
    sch = get_schema("imm14")
    for unit in ("px", "crop_px", "pfl"):
        ref = evaluate_landmarks(report.pred, report.gt, unit, 0.10, sch.pfl_pair, crop_affines=report.affines)
        ev = report.evaluations[unit]
        np.testing.assert_array_equal(ev.per_image, ref.per_image)
        assert ev.summary == ref.summary
        np.testing.assert_array_equal(ev.per_landmark_mean, ref.per_landmark_mean)
        assert ev.pfl_error_mean_abs == ref.pfl_error_mean_abs
    assert "mm" not in report.evaluations

    files = report.files
    assert files["json"].name == "eval_test.json" and files["csv"].name == "eval_test.csv"
    assert files["ced"].name == "ced.png" and files["ced"].read_bytes()[:8] == PNG
    js = json.loads(files["json"].read_text())
    s = report.evaluation.summary
    assert js["summary"]["me"] == s.me and js["summary"]["fr"] == s.fr and js["summary"]["auc"] == s.auc
    assert js["threshold"] == 0.10 and set(js["per_landmark"]) == set(sch.landmark_names)
    rows = list(csv.DictReader(io.StringIO(files["csv"].read_text())))
    assert len(rows) == 3
    np.testing.assert_allclose([float(r["error_pfl"]) for r in rows], report.evaluations["pfl"].per_image, rtol=1e-5)
    np.testing.assert_allclose([float(r["error_px"]) for r in rows], report.evaluations["px"].per_image, rtol=1e-5)
    lm = [[float(r[f"err_{n}_pfl"]) for n in sch.landmark_names] for r in rows]
    np.testing.assert_allclose(np.mean(lm, axis=1), report.evaluations["pfl"].per_image, rtol=1e-4)
    xy = np.array([[float(r[f"{c}_{n}"]) for n in sch.landmark_names for c in "xy"] for r in rows])
    np.testing.assert_allclose(xy.reshape(3, -1, 2), report.pred, atol=1e-3)


def test_predictions_are_the_decoded_crops_mapped_back(runs):
    """Recompute one image by hand: crop of the GT box, predictor, argmax, affine to source px."""
    from ctd_train.checkpoint import load_run
    from ctd_train.data.annotations import read_annotations

    data, run_dir, _ = runs
    report = evaluate_run(run_dir, split="test", write=False)
    run = load_run(run_dir)
    images = read_annotations(data)
    i = report.image_names.index(report.image_names[0])
    idx = images.image_names.index(report.image_names[i])
    center, side = geometry.square_box(images.points[idx], 0.25)
    affine = geometry.crop_affine(center, side, 64)
    crop = geometry.warp_to_crop(images.load_image(idx), affine, 64)
    with torch.no_grad():
        hm = run.predictor(torch.from_numpy(run.normalization.apply(crop))).numpy()
    xy, _ = run.codec.decode(hm, "argmax")
    np.testing.assert_allclose(geometry.apply_affine(affine, xy[0]), report.pred[i], atol=1e-3)
    np.testing.assert_allclose(report.gt[i], run.schema.select(images.points[idx]))


def test_units_threshold_and_decode(runs, tmp_path):
    _, run, _ = runs
    base = evaluate_run(run, write=False)
    mm = evaluate_run(run, unit="mm", pixel_spacing=0.2, threshold=1.5, decode="dark", out_dir=tmp_path)
    np.testing.assert_allclose(mm.evaluations["mm"].per_image, mm.evaluations["px"].per_image * 0.2)
    assert mm.evaluation.summary.unit == "mm" and mm.evaluation.summary.threshold == 1.5
    assert mm.files["csv"].name == "eval_test_dark_mm1.5.csv" and mm.files["ced"].name == "ced_dark_mm1.5.png"
    assert base.decode == "argmax" and mm.decode == "dark"
    with pytest.raises(CtdError, match="pixel-spacing"):
        evaluate_run(run, unit="mm", write=False)
    with pytest.raises(CtdError, match="unknown unit"):
        evaluate_run(run, unit="inch", write=False)
    with pytest.raises(CtdError, match="unknown split"):
        evaluate_run(run, split="holdout", write=False)
    with pytest.raises(CtdError, match="unknown decode"):
        evaluate_run(run, decode="softargmax", write=False)
    val = evaluate_run(run, split="val", write=False)
    assert val.n_images == 3 and not set(val.image_names) & set(base.image_names)
    assert evaluate_run(run, split="all", write=False).n_images == 12


def test_perfect_predictions():
    sch = get_schema("imm14")
    rng = np.random.default_rng(0)
    gt = rng.uniform(50, 150, size=(5, 14, 2))
    aff = np.stack([geometry.crop_affine((100, 100), 200, 256)] * 5)
    ev = evaluate_predictions(gt.copy(), gt, aff, sch)
    s = ev["pfl"].summary
    assert s.me == 0 and s.fr == 0 and s.auc == 1.0


def test_compare_runs(runs, tmp_path):
    _, a, b = runs
    comp = compare_runs([a, b], out_dir=tmp_path)
    md = (tmp_path / "compare.md").read_text()
    assert "| Method | ME +- SD | FR | AUC |" in md and "threshold 0.1 pfl" in md
    assert "| CTD-Com |" in md and "| FT |" in md
    assert (tmp_path / "compare_ced.png").read_bytes()[:8] == PNG
    rows = comp.rows()
    assert [r["method"] for r in rows] == ["CTD-Com", "FT"]
    assert rows[0]["me"] == evaluate_run(a, write=False).evaluation.summary.me
    same = compare_runs([a, a])
    assert same.labels[0] != same.labels[1]
    with pytest.raises(CtdError, match="at least one"):
        compare_runs([])


def test_another_folder_is_evaluated_whole_and_decoded_as_the_run(runs, tmp_path):
    """A folder that is not the run's own data has no split of this run: all of its images are
    evaluated (it used to apply the run's split options and fail on a small folder); the decode is
    the run's own unless asked."""
    import dataclasses

    from ctd_train.checkpoint import load_run
    from ctd_train.evaluate import evaluate_loaded

    _, run, _ = runs
    other = tiny_data(tmp_path / "other", n_subjects=2, per_subject=2, seed=5)
    report = evaluate_run(run, data=other)
    assert report.split == "all" and report.n_images == 4
    with pytest.raises(CtdError, match="not the run's own data"):
        evaluate_run(run, data=other, split="test")
    loaded = load_run(run)
    assert evaluate_loaded(loaded, write=False).decode == loaded.decode
    dark = dataclasses.replace(loaded, decode="dark")
    assert evaluate_loaded(dark, write=False).decode == "dark"
    assert evaluate_loaded(dark, decode="argmax", write=False).decode == "argmax"
