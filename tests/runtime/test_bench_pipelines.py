"""`ctd bench` pipeline contenders (ready-made tools: image in, PFL-pair corners out) with a fake
pipeline: they take turns with the model contenders, are timed end to end, scored on the PFL pair
against the same annotations, reported under their own key; a broken one is skipped. Timings are
smoke runs: only their structure (and a floor set by the fake's own sleep) is asserted."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest

from ctd_runtime.annotations import write_annotations
from ctd_runtime.bench import BenchConfig, run_bench
from ctd_runtime.bench.contenders import BenchContext, runtime_contenders
from ctd_runtime.bench.harness import STAGES, load_inputs, open_all, run_schedule
from ctd_runtime.bench.pipelines import (IDLE_KEY, PipelineContender, PipelineSet, open_pipelines,
                                         pair_scores)
from ctd_runtime.bench.report import print_report, write_outputs
from ctd_runtime.errors import CtdError
from ctd_runtime.image_io import read_image
from tests.runtime._station_data import blob_png

N_IMAGES = 4
SLEEP_S = 0.004


def _key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


@pytest.fixture
def annotated(tmp_path):
    """An annotated folder of blob images, and each image's PFL-pair truth (points 0, 1) by content."""
    root = tmp_path / "data"
    names = [f"s{i}.png" for i in range(N_IMAGES)]
    points = np.stack([blob_png(root / "images" / n, i + 40) for i, n in enumerate(names)])
    write_annotations(root, names, [f"s{i}" for i in range(N_IMAGES)], points)
    truth = {_key(read_image(root / "images" / n)): points[i, :2] for i, n in enumerate(names)}
    return root, truth


class FakePipeline:
    """Answers the true PFL pair shifted by `shift` px (None on `blind` images), after a sleep;
    logs its calls in `log`."""

    def __init__(self, truth: dict[str, np.ndarray], shift: float, blind: set[str], log: list[str], name: str):
        self.truth, self.shift, self.blind, self.log, self.name = truth, shift, blind, log, name
        self.closed = False

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        self.log.append(self.name)
        time.sleep(SLEEP_S)
        key = _key(image)
        if key in self.blind or key not in self.truth:
            return None
        return self.truth[key] + [self.shift, 0.0]

    def close(self) -> None:
        self.closed = True


def test_pair_scores_of_shifted_and_missing_corners():
    gt = np.array([[[0.0, 0.0], [40.0, 0.0]]] * 3)
    pred = gt.copy()
    pred[0, 1, 0] = 44.0          # exocanthion 4 px out: PFL +10%, corners (0 + 4) / 2 = 2 px
    pred[1] += [3.0, 4.0]         # both 5 px off, PFL exact
    pred[2] = np.nan              # no face
    s = pair_scores(pred, gt)
    assert (s["found"], s["images"]) == (2, 3)
    assert s["pfl_error_mean_abs_pfl"] == pytest.approx(0.05)
    assert s["pfl_error_mean_signed_pfl"] == pytest.approx(0.05)
    assert s["eye_corner_me_px"] == pytest.approx((2.0 + 5.0) / 2)
    assert s["eye_corner_me_pfl"] == pytest.approx((2.0 + 5.0) / 2 / 40)
    assert pair_scores(np.full_like(gt, np.nan), gt) == {"found": 0, "images": 3}


def test_pipelines_take_turns_with_the_model_contenders(tiny_model, annotated, tmp_path):
    root, truth = annotated
    log: list[str] = []
    config = BenchConfig(warmup=1, iters=3, rounds=2, threads=1, images=root, peak_n=32, gpu=False)
    found = runtime_contenders(tiny_model, BenchContext(1))
    opened, _ = open_all(found, 1, load_inputs(config, tmp_path).paths[0])
    for o in opened:  # log the model's calls in the same list
        inner_run = o.backend.inner._run
        o.backend.inner._run = lambda image, crop, f=inner_run: (log.append("model"), f(image, crop))[1]
    fakes = [PipelineContender(n, lambda n=n: FakePipeline(truth, 0.0, set(), log, n), "fake") for n in ("p", "q")]
    piped, skipped = open_pipelines(PipelineSet(fakes), read_image(root / "images" / "s0.png"))
    assert [p.contender.name for p in piped] == ["p", "q"] and skipped == {}
    log.clear()
    try:
        run_schedule(opened, load_inputs(config, tmp_path), config, None, piped)
    finally:
        opened[0].landmarker.close()
    # every iteration (warm-up and timed) runs each of the three once: no pipeline runs two iterations in a row
    turns = [e for i, e in enumerate(log) if e != "model" or i == 0 or log[i - 1] != "model"]
    assert len(turns) == 3 * (1 + 3 * 2)
    for k in range(0, len(turns), 3):
        assert sorted(turns[k:k + 3]) == ["model", "p", "q"]
    assert turns[::3] == ["model"] + ["model", "p", "q"] * 2  # warm-up, then the first of each iteration rotates
    for p in piped:
        samples = p.samples[1]
        assert len(samples) == 3 * 2 and sorted({s["round"] for s in samples}) == [0, 1]
        assert all(s["end_to_end"] >= SLEEP_S + s["image_decode"] for s in samples)


def test_a_run_reports_pipelines_beside_the_contenders(tiny_model, annotated, tmp_path, capsys):
    root, truth = annotated
    blind = {next(iter(truth))}  # the first image: no face
    made: list[FakePipeline] = []

    def opener(name: str, shift: float, blind_keys: set[str]):
        def open_():
            made.append(FakePipeline(truth, shift, blind_keys, [], name))
            return made[-1]
        return open_

    def broken():
        raise RuntimeError("model file missing")

    class WrongShape(FakePipeline):
        def __call__(self, image):
            return np.zeros((3, 2))

    def wrong_shape():
        made.append(WrongShape(truth, 0.0, set(), [], "wrong"))
        return made[-1]

    found = PipelineSet([PipelineContender("shifted", opener("shifted", 2.0, blind), "fake", "a fake", "1, ours"),
                         PipelineContender("exact", opener("exact", 0.0, set()), "fake", "a fake", "1, ours"),
                         PipelineContender("broken", broken, "fake"),
                         PipelineContender("wrong", wrong_shape, "fake")], {"absent": "package not installed"})
    config = BenchConfig(batches=(1, 2), warmup=0, iters=2, rounds=2, threads=1, images=root, peak_n=32, gpu=False)
    result = run_bench([tiny_model], config, pipelines=found)
    files = write_outputs(result, tmp_path / "out")
    data = json.loads(files["json"].read_text())
    pipes = data["pipelines"]
    assert set(data["results"]) == {"onnxruntime fp32"}  # pipelines under their own key
    assert set(pipes["results"]) == {"shifted", "exact"}
    assert pipes["skipped"]["absent"] == "package not installed"
    assert "model file missing" in pipes["skipped"]["broken"] and "[2, 2]" in pipes["skipped"]["wrong"]
    assert all(f.closed for f in made)
    for name in ("shifted", "exact"):
        assert pipes["contenders"][name]["threads"] == "1, ours" and IDLE_KEY in pipes["contenders"][name]
        for batch in ("1", "2"):
            row = pipes["results"][name][batch]
            assert set(row["stages"]) == set(STAGES)
            e2e = row["stages"]["end_to_end"]
            assert e2e["n"] == 2 * 2 and e2e["p50_ms"] >= 1e3 * SLEEP_S * int(batch)  # a batch: one after another
            assert row["stages"]["inference"] == {"n": 0}
            assert row["ratio_vs_baseline"]["end_to_end"] > 0 and row["spread"]["rounds"] == 2
    shifted, exact = pipes["accuracy"]["shifted"], pipes["accuracy"]["exact"]
    assert (shifted["found"], shifted["images"], exact["found"]) == (N_IMAGES - 1, N_IMAGES, N_IMAGES)
    # the truth as written to annotations.csv (rounded) against the fake's unrounded centres
    assert shifted["eye_corner_me_px"] == pytest.approx(2.0, abs=0.01)
    assert shifted["pfl_error_mean_abs_pfl"] == pytest.approx(0.0, abs=1e-3)
    assert exact["eye_corner_me_px"] == pytest.approx(0.0, abs=0.01) and "me_pfl" not in exact  # ME: other schemas
    model_acc = data["accuracy"]["onnxruntime fp32"]
    assert {"eye_corner_me_px", "eye_corner_me_pfl", "pfl_error_mean_abs_pfl"} <= set(model_acc)
    assert IDLE_KEY in data["contenders"]["onnxruntime fp32"]
    from ctd_runtime.cli import table_console

    print_report(result, table_console())
    out = capsys.readouterr().out
    assert "shifted" in out and "skipped broken" in out and "eye px" in out
    assert files.get("png") is None or files["png"].stat().st_size > 0


def test_a_pipeline_named_like_a_contender_is_refused(tiny_model, annotated):
    root, truth = annotated
    clash = PipelineSet([PipelineContender("onnxruntime fp32", lambda: FakePipeline(truth, 0, set(), [], "x"), "fake")])
    with pytest.raises(CtdError, match="onnxruntime fp32"):
        run_bench([tiny_model], BenchConfig(iters=1, warmup=0, threads=1, images=root, peak_n=32, gpu=False),
                  pipelines=clash)
