"""`ctd evaluate MODEL.onnx --data DIR`: the exported model through the Landmarker on every image of
an annotated folder, scored with the run metrics; works on a station without torch or ctd_train."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ctd_runtime.annotations import read_annotations, write_annotations
from ctd_runtime.crop_rule import CropSpec
from ctd_runtime.errors import CtdError
from ctd_runtime.landmarker import Landmarker
from ctd_runtime.metrics import evaluate_landmarks
from ctd_runtime.station_eval import StationEvalOptions, evaluate_station, ground_truth_box
from tests.runtime._station_data import blob_png
from tests.runtime.test_no_torch import TORCH, TRAINING, _ctd


@pytest.fixture
def blob_folder(tmp_path):
    """images/ + annotations.csv: five blob images, the blob centres as the three annotated points."""
    root = tmp_path / "data"
    names, subjects, points = [], [], []
    for seed in range(5):
        name = f"s{seed}.png"
        points.append(blob_png(root / "images" / name, seed + 10))
        names.append(name)
        subjects.append(f"subj{seed}")
    write_annotations(root, names, subjects, np.stack(points))
    return root


def test_scores_every_image_with_both_boxes(tiny_model, blob_folder, tmp_path):
    report = evaluate_station(tiny_model, blob_folder, StationEvalOptions(unit="px", threshold=3.0),
                              out_dir=tmp_path / "out")
    gt = read_annotations(blob_folder).points
    assert set(report.results) == {"gt", "auto"} and len(report.image_names) == 5
    # the gt box result is exactly what the Landmarker gives with the points' box
    lm = Landmarker(tiny_model)
    images = [cv2.imread(str(blob_folder / "images" / n)) for n in report.image_names]
    direct = np.stack([lm.detect(img, ground_truth_box("schema", p, p, (0, 1))).landmarks for img, p in zip(images, gt)])
    assert np.allclose(report.results["gt"].landmarks, direct, atol=1e-4)
    want = evaluate_landmarks(direct, gt, "px", 3.0, (0, 1))
    got = report.results["gt"].evaluations["px"]
    assert got.summary.me == pytest.approx(want.summary.me, rel=1e-5)
    assert got.pfl_error_mean_abs == pytest.approx(want.pfl_error_mean_abs, rel=1e-5)
    auto = report.results["auto"]
    assert auto.evaluations["px"].summary.n_images == 5 - auto.not_found
    assert 0.0 <= report.agreement <= 1.0
    saved = json.loads((tmp_path / "out" / "station_eval.json").read_text())
    assert saved["boxes"]["gt"]["units"]["px"]["me"] == pytest.approx(got.summary.me)
    assert saved["images"] == 5 and "pfl" in saved["boxes"]["auto"]["units"]
    rows = (tmp_path / "out" / "station_eval.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 5 and rows[0].startswith("image,box,found")


def test_ground_truth_box_follows_the_crop_rule():
    all_pts = np.array([[0.0, 0.0], [100.0, 80.0], [40.0, 40.0], [60.0, 50.0]])
    schema_pts = all_pts[2:]
    assert ground_truth_box("face", all_pts, schema_pts, (0, 1)) == (0.0, 0.0, 100.0, 80.0)
    assert ground_truth_box("schema", all_pts, schema_pts, (0, 1)) == (40.0, 40.0, 20.0, 10.0)
    assert ground_truth_box("pfl", all_pts, schema_pts, (0, 1)) == (40.0, 40.0, 20.0, 10.0)
    assert CropSpec("pfl").rule == "pfl"


def test_options_are_checked():
    with pytest.raises(CtdError, match="box mode"):
        StationEvalOptions(boxes=("given",))
    with pytest.raises(CtdError, match="pixel-spacing"):
        StationEvalOptions(unit="mm")


@pytest.mark.parametrize("blocked", [TORCH, TRAINING], ids=["no-torch", "no-training-packages"])
def test_cli_on_a_station(tiny_model, blob_folder, tmp_path, blocked):
    out = tmp_path / f"out-{len(blocked)}"
    proc = _ctd(["evaluate", str(tiny_model), "--data", str(blob_folder), "--out", str(out)], blocked)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "station evaluation" in proc.stdout and "ground-truth-box PFL" in proc.stdout
    assert json.loads((out / "station_eval.json").read_text())["images"] == 5
    proc = _ctd(["evaluate", str(tiny_model)], blocked)
    assert proc.returncode == 2 and "--data" in proc.stderr


def test_a_run_folder_on_a_station_without_the_training_packages(tmp_path):
    proc = _ctd(["evaluate", str(tmp_path), "--data", str(tmp_path)], TRAINING)
    assert proc.returncode == 2 and "pip install 'ctd[train]'" in " ".join(proc.stderr.split())
