"""`ctd bench`: statistics, the interleaved order, ratios, FLOPs against a hand count, the JSON
of a real (tiny, 2-iteration) run with the PyTorch baseline and ONNX Runtime, and the CLI's
answers to bad input. Timings here are smoke runs: only their structure is asserted."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from ctd_runtime.annotations import write_annotations
from ctd_runtime.bench import BenchConfig, parse_batches, run_bench
from ctd_runtime.bench.contenders import BenchContext, resolve_target, runtime_contenders
from ctd_runtime.bench.harness import STAGES, add_ratios
from ctd_runtime.bench.peak import fraction_of_peak, matmul_peak_gflops
from ctd_runtime.bench.report import write_outputs
from ctd_runtime.bench.stats import interleaved_schedule, latency_summary, ratio, round_spread
from ctd_runtime.errors import CtdError
from tests.runtime._station_data import blob_png
from tests.runtime.test_infer_cli import ctd

# ---------------------------------------------------------------------------- statistics


def test_percentiles_in_ms():
    s = latency_summary([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p90_ms"] == pytest.approx(90.1)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["mean_ms"] == pytest.approx(50.5) and s["n"] == 100


def test_spread_is_over_the_round_medians():
    seconds = [0.010, 0.012, 0.011, 0.030, 0.031, 0.029]
    spread = round_spread(seconds, [0, 0, 0, 1, 1, 1])
    assert spread["round_median_min_ms"] == pytest.approx(11.0)
    assert spread["round_median_max_ms"] == pytest.approx(30.0)
    assert spread["rounds"] == 2 and spread["iqr_ms"] > 0


def test_interleaved_order_runs_each_contender_once_per_iteration_first_rotating():
    names = ["a", "b", "c"]
    order = interleaved_schedule(names, iters=4, rounds=2)
    assert len(order) == 3 * 4 * 2
    for k in range(0, len(order), 3):  # every iteration: all three, each once
        block = order[k:k + 3]
        assert sorted(n for *_, n in block) == names and len({(r, i) for r, i, _ in block}) == 1
    firsts = [order[k][2] for k in range(0, len(order), 3)]
    assert firsts[:4] == ["a", "b", "c", "a"]  # no contender always first
    assert all(order[k][2] != order[k + 1][2] for k in range(len(order) - 1))  # never two in a row


def test_ratios_against_the_baseline():
    assert ratio(40.0, 20.0) == pytest.approx(2.0)
    assert ratio(None, 20.0) is None and ratio(40.0, 0.0) is None

    def row(e2e, inf):
        return {1: {"stages": {"end_to_end": {"p50_ms": e2e}, "inference": {"p50_ms": inf}}}}

    results = {"eager": row(36.0, 30.0), "ort": row(24.0, 10.0)}
    add_ratios(results, "eager")
    assert results["ort"][1]["ratio_vs_baseline"] == {"end_to_end": pytest.approx(1.5), "inference": pytest.approx(3.0)}
    assert results["eager"][1]["ratio_vs_baseline"]["end_to_end"] == pytest.approx(1.0)


def test_batch_option_parsing():
    assert parse_batches("1,4") == (1, 4)
    for bad in ("", "0", "1,x", "-2"):
        with pytest.raises(CtdError, match="--batch"):
            parse_batches(bad)


def test_peak_probe_and_fraction():
    peak = matmul_peak_gflops(64, repeats=2)
    assert peak["gflops"] > 0 and peak["n"] == 64
    assert fraction_of_peak(2e9, 0.1, 40.0) == pytest.approx(0.5)  # 20 GFLOP/s of 40
    assert fraction_of_peak(None, 0.1, 40.0) is None


# ---------------------------------------------------------------------------- FLOPs


def test_no_flops_without_a_mac_counter(monkeypatch, tiny_model):
    """A station (no onnx, no ctd_export) has no MAC counter: the report says so, nothing fails."""
    from ctd_runtime.bench import harness

    monkeypatch.setattr(harness, "mac_counter", lambda: None)
    ref = SimpleNamespace(contender=SimpleNamespace(name="m", reference=True, model=tiny_model),
                          landmarker=SimpleNamespace(metadata=SimpleNamespace(input_size=64, run_id="r")))
    assert "no MAC counter" in harness.model_flops([ref])["note"]


def test_each_export_is_counted_on_its_own_graph(tiny_model, tmp_path):
    """A smaller station model's % of peak uses its own FLOPs; an INT8 file, its export's FP32
    graph; the eager pipeline, an export of its run."""
    import shutil

    from ctd_runtime.bench import harness

    other = tmp_path / "small" / "model.onnx"
    other.parent.mkdir()
    shutil.copy(tiny_model, other)
    counts = {str(tiny_model): 100.0, str(other): 25.0}
    counter = lambda graph, shapes: SimpleNamespace(to_dict=lambda: {"flops": counts[str(graph)]})  # noqa: E731

    def opened(name, model, run_id):
        return SimpleNamespace(contender=SimpleNamespace(name=name, model=model),
                               landmarker=SimpleNamespace(metadata=SimpleNamespace(input_size=64, run_id=run_id)))

    flops = harness.model_flops([opened("eager", None, "big"), opened("big fp32", tiny_model, "big"),
                                 opened("big int8", tiny_model.with_name("model.int8.onnx"), "big"),
                                 opened("small fp32", other, "small")], counter)
    assert set(flops["models"]) == {str(tiny_model), str(other)}
    assert [harness.contender_flops(flops, n) for n in ("eager", "big fp32", "big int8", "small fp32")] == \
        [100.0, 100.0, 100.0, 25.0]

    def failing(graph, shapes):
        raise ValueError("unreadable graph")

    flops = harness.model_flops([opened("big fp32", tiny_model, "big")], failing)
    assert "unreadable graph" in flops["models"][str(tiny_model)]["note"]
    assert harness.contender_flops(flops, "big fp32") is None


# ---------------------------------------------------------------------------- contenders


def test_targets_and_siblings(tiny_model, tmp_path):
    assert resolve_target(tiny_model) == ("model", tiny_model)
    assert resolve_target(tiny_model.parent) == ("model", tiny_model)
    assert resolve_target(tmp_path) == ("run", tmp_path)
    with pytest.raises(CtdError, match="not found"):
        resolve_target(tmp_path / "missing.onnx")
    found = runtime_contenders(tiny_model, BenchContext(1))
    assert [c.name for c in found.contenders] == ["onnxruntime fp32"] and found.contenders[0].reference
    assert "model.int8.onnx not found" in found.skipped["onnxruntime int8"]
    assert "model.plan not found" in found.skipped["tensorrt fp32/fp16"]


# ---------------------------------------------------------------------------- one real run


@pytest.fixture
def annotated(tmp_path):
    root = tmp_path / "data"
    names = [f"s{i}.png" for i in range(3)]
    points = [blob_png(root / "images" / n, i + 20) for i, n in enumerate(names)]
    write_annotations(root, names, [f"s{i}" for i in range(3)], np.stack(points))
    return root


def _tiny_run():
    from tests.export import _tiny_fused as tf

    return SimpleNamespace(predictor=tf.trained_predictor(0), normalization=tf.NORMALIZATION, codec=tf.CODEC,
                           decode="argmax", input_size=tf.INPUT_SIZE, schema=tf.tiny_metadata().schema,
                           run_id="tiny", config={"crop": "schema", "margin": 0.8})


def test_a_run_with_the_baseline_writes_the_json(tiny_model, annotated, tmp_path):
    from ctd_export.bench_contenders import pytorch_contenders

    run = _tiny_run()
    config = BenchConfig(batches=(1, 2), warmup=1, iters=2, rounds=2, threads=1, images=annotated, peak_n=64, gpu=False)
    (tmp_path / "run").mkdir()
    result = run_bench([tmp_path / "run", tiny_model], config,
                       extra=[lambda d, c: pytorch_contenders(d, c, run=run)])
    files = write_outputs(result, tmp_path / "out")
    data = json.loads(files["json"].read_text())
    names = ["run: pytorch eager fp32", f"{tiny_model.parent.name}: onnxruntime fp32"]
    assert data["baseline"] == names[0] and data["contenders"][names[0]]["baseline"]
    assert set(data["results"]) == set(names)
    for name in names:
        for batch in ("1", "2"):
            row = data["results"][name][batch]
            assert set(row["stages"]) == set(STAGES)
            assert row["stages"]["end_to_end"]["n"] == 2 * 2  # iters x rounds
            assert row["stages"]["end_to_end"]["p50_ms"] >= row["stages"]["inference"]["p50_ms"] > 0
            assert row["spread"]["rounds"] == 2 and row["throughput_images_per_s"] > 0
            assert 0 < row["fraction_of_peak"] and row["ratio_vs_baseline"]["end_to_end"] > 0
    base = data["results"][names[0]]["1"]
    assert base["ratio_vs_baseline"]["end_to_end"] == pytest.approx(1.0)
    assert base["stages"]["decode"]["p50_ms"] > 0  # eager decodes in numpy; the fused graph inside
    assert data["results"][names[1]]["1"]["stages"]["decode"]["p50_ms"] == 0
    # the tiny predictor by hand: four stride-2 3x3 convs, two 4x4 deconvs, a 1x1 conv (64 px input)
    hand = (16 * 32 * 32 * 27 + 16 * 16 * 16 * 144 + 32 * 8 * 8 * 144 + 32 * 4 * 4 * 288
            + 32 * 4 * 4 * 16 * 16 + 16 * 8 * 8 * 16 * 16 + 3 * 16 * 16 * 16)
    counted = data["flops"]["models"][str(tiny_model)]
    assert counted["macs"] == hand and not counted["unknown_nodes"] and data["peak"]["gflops"] > 0
    assert all(data["flops"]["contenders"][n]["flops"] == counted["flops"] for n in names)
    acc = data["accuracy"]
    assert set(acc) == set(names) and all(a["found"] == 3 for a in acc.values())
    assert acc[names[1]]["max_px_vs_fp32"] == 0.0 and acc[names[0]]["max_px_vs_fp32"] < 2.0
    assert acc[names[1]]["me_pfl"] < 0.2
    assert "skipped" in data and any("cuda" in k for k in data["skipped"])


def test_given_box_is_one_pass_and_needs_annotations(tiny_model, annotated, tmp_path):
    config = BenchConfig(warmup=0, iters=2, rounds=1, threads=1, images=annotated, given_box=True, peak_n=32, gpu=False,
                         max_images=2)
    data = run_bench([tiny_model], config)
    row = data["results"]["onnxruntime fp32"]["1"]
    assert row["passes_mean"] == 1.0  # the box's crop, no coarse passes: face_box holds no backend call
    acc = data["accuracy"]["onnxruntime fp32"]
    assert data["inputs"]["box"].startswith("given") and acc["found"] == acc["images"] == 2  # --max-images
    with pytest.raises(CtdError, match="--given-box needs an annotated"):
        run_bench([tiny_model], BenchConfig(iters=1, threads=1, given_box=True, peak_n=32, gpu=False))


# ---------------------------------------------------------------------------- CLI


def test_cli_bad_input_exit_codes(tiny_model, tmp_path, capsys):
    code, _, err = ctd(["bench", tmp_path / "missing.onnx", "--iters", "1"], capsys)
    assert code == 2 and "missing.onnx" in err and "not found" in err
    code, _, err = ctd(["bench", tiny_model, "--batch", "1,x"], capsys)
    assert code == 2 and "--batch" in err
    code, _, err = ctd(["bench", tiny_model, "--batch", "0"], capsys)
    assert code == 2 and "--batch" in err
    code, _, _ = ctd(["bench", tiny_model, "--iters", "0"], capsys)
    assert code == 2
    code, _, err = ctd(["bench", tiny_model, "--images", tmp_path / "nope"], capsys)
    assert code == 2 and "nope" in err
    (tmp_path / "notes.txt").write_text("x")
    code, _, err = ctd(["bench", tmp_path / "notes.txt"], capsys)
    assert code == 2 and "notes.txt" in err


def test_cli_smoke_run(tiny_model, tmp_path, capsys):
    code, out, _ = ctd(["bench", tiny_model, "--iters", "1", "--warmup", "0", "--rounds", "1", "--threads", "1",
                        "--no-gpu", "--out", tmp_path / "o"], capsys)
    assert code == 0 and "onnxruntime fp32" in out
    assert json.loads((tmp_path / "o" / "bench.json").read_text())["schema_version"] == 1


def test_a_contender_that_cannot_run_is_closed_and_skipped(tiny_model, tmp_path):
    from ctd_runtime.backends import create_backend
    from ctd_runtime.bench.contenders import Contender, ContenderSet
    from ctd_runtime.bench.harness import open_all, load_inputs

    class Broken:
        def __init__(self):
            self.inner = create_backend(tiny_model, threads=1).open()

        def open(self):
            inner = self.inner
            def refuse(image, crop):
                raise CtdError("refused on purpose")
            inner._run = refuse
            return inner

    broken = Broken()
    good = Contender("good", lambda: create_backend(tiny_model, threads=1).open(), "onnxruntime", reference=True)
    found = ContenderSet([good, Contender("broken", broken.open, "onnxruntime")], {"earlier": "why"})
    inputs = load_inputs(BenchConfig(), tmp_path)
    opened, skipped = open_all(found, 1, inputs.paths[0])
    assert [o.contender.name for o in opened] == ["good"]
    assert skipped == {"earlier": "why", "broken": "cannot run: refused on purpose"}
    assert not broken.inner.is_open
    opened[0].landmarker.close()


@pytest.mark.gpu
def test_pytorch_cuda_contenders_agree_with_and_without_a_cuda_graph(tiny_model, tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from ctd_export.bench_contenders import pytorch_contenders

    found = pytorch_contenders(tmp_path, BenchContext(1), run=_tiny_run())
    assert [c.name for c in found.contenders] == ["pytorch eager fp32", "pytorch cuda fp16",
                                                  "pytorch cuda fp16 + cuda graph"]
    from tests.export import _tiny_fused as tf

    samples, _ = tf.sample_set(4, seed=3)
    outs = {}
    for c in found.contenders:
        backend = c.open()
        outs[c.name] = np.stack([backend.run(img, a)[0] for img, a in samples])
        outs[c.name + " again"] = np.stack([backend.run(img, a)[0] for img, a in samples])  # graph replayed
        backend.close()
    graph, plain = outs["pytorch cuda fp16 + cuda graph"], outs["pytorch cuda fp16"]
    assert np.array_equal(graph, outs["pytorch cuda fp16 + cuda graph again"])
    assert np.abs(graph - plain).max() < 0.5 and np.abs(plain - outs["pytorch eager fp32"]).max() < 2.0
