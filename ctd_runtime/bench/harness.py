"""`ctd bench`: the contenders timed side by side in one process, per stage, interleaved.

Every contender runs through the same `Landmarker` (the station's passes) on the same images:
image decode (`image_io.read_image`), face box (the coarse-to-fine passes before the last, or
none with a given box), inference (the last pass's backend call, less the backend's own decode
sub-stage), decode (the eager pipeline's numpy decode; inside the fused graph it is part of
inference and shows 0), PFL (quality flags and the PFL measurement), end to end (all of it).
Contenders take turns one iteration at a time (`stats.interleaved_schedule`) over `rounds`
repeats; ONNX Runtime sessions come from `open_session` (spinning off) and the torch plug-ins set
their thread count, so none keeps the cores busy while another is timed (each one's CPU use while
idle right after a call is measured and reported). Pipeline contenders (`pipelines`: whole
ready-made tools, image in, PFL-pair corners out) take their turns in the same schedule, timed
end to end, under their own key of the result.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ctd_runtime.artifacts import onnx_variant
from ctd_runtime.bench import pipelines as pipes
from ctd_runtime.bench import stats
from ctd_runtime.bench.contenders import BenchContext, Contender, ContenderSet, find_contenders
from ctd_runtime.bench.memory import memory_method, resident_mib
from ctd_runtime.bench.peak import matmul_peak_gflops
from ctd_runtime.bench.timing import TimedBackend
from ctd_runtime.errors import CtdError
from ctd_runtime.image_io import read_image
from ctd_runtime.landmarker import Landmarker, LandmarkerOptions
from ctd_runtime.machine import describe_machine, usable_cores
from ctd_runtime.station_eval import ground_truth_box

STAGES = ("image_decode", "face_box", "inference", "decode", "pfl", "end_to_end")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BenchConfig:
    """Options of one `ctd bench` run (saved in the JSON)."""

    batches: tuple[int, ...] = (1,)
    warmup: int = 3
    iters: int = 20
    rounds: int = 3
    threads: int = field(default_factory=usable_cores)
    images: Path | None = None
    given_box: bool = False
    max_images: int = 64
    peak_n: int = 1024
    gpu: bool = True

    def __post_init__(self) -> None:
        if not self.batches or any(b < 1 for b in self.batches):
            raise CtdError(f"batch sizes must be positive integers, not {list(self.batches)}")
        if self.warmup < 0 or self.iters < 1 or self.rounds < 1 or self.threads < 1:
            raise CtdError("need --warmup >= 0, --iters >= 1, --rounds >= 1 and --threads >= 1")


def parse_batches(text: str) -> tuple[int, ...]:
    """"1,4" -> (1, 4); CtdError for anything but positive integers."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise CtdError(f"--batch takes comma-separated positive integers (e.g. 1,4), not {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise CtdError(f"--batch takes comma-separated positive integers (e.g. 1,4), not {text!r}")
    return values


@dataclass
class Inputs:
    """The image files timed, and their annotations (schema points) when the folder has them."""

    paths: list[Path]
    annotated: Any = None  # ctd_runtime.annotations.AnnotatedImages
    note: str = ""


def load_inputs(config: BenchConfig, scratch: Path) -> Inputs:
    """--images DIR (annotated: images/ + annotations.csv; else its image files), or one synthetic
    640x480 image written to `scratch` (latency only)."""
    folder = config.images
    if folder is None:
        import cv2

        path = scratch / "synthetic.png"
        rng = np.random.default_rng(0)
        cv2.imwrite(str(path), rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
        return Inputs([path], note="no --images: one synthetic 640x480 noise image (latency only, no face)")
    if not folder.is_dir():
        raise CtdError("--images folder not found" if not folder.exists() else "--images is not a folder", path=folder)
    if (folder / "annotations.csv").is_file():
        from ctd_runtime.annotations import read_annotations

        ann = read_annotations(folder, validate_images=False)
        return Inputs(list(ann.image_paths[: config.max_images]), ann)
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[: config.max_images]
    if not paths:
        raise CtdError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder", path=folder)
    return Inputs(paths)


@dataclass
class Opened:
    contender: Contender
    backend: TimedBackend
    landmarker: Landmarker
    memory_mib: float = 0.0
    idle_cpu_ms: float = 0.0
    samples: dict[int, list[dict[str, float]]] = field(default_factory=dict)


def gt_boxes(lm: Landmarker, inputs: Inputs, idx: list[int], gt: np.ndarray | None) -> list | None:
    if gt is None:
        return None
    return [ground_truth_box(lm.crop_spec.rule, inputs.annotated.points[i], gt[i], lm.schema.pfl_pair) for i in idx]


def time_iteration(o: Opened, inputs: Inputs, idx: list[int], gt: np.ndarray | None) -> dict[str, float]:
    """One timed call of `detect_batch` on the images `idx`, split into stages (seconds)."""
    o.backend.reset()
    t0 = time.perf_counter()
    images = [read_image(inputs.paths[i]) for i in idx]
    t1 = time.perf_counter()
    boxes = gt_boxes(o.landmarker, inputs, idx, gt)
    t2 = time.perf_counter()
    dets = o.landmarker.detect_batch(images, boxes)
    t3 = time.perf_counter()
    calls = o.backend.calls
    last = calls[-1]
    decode = last.stages.get("decode", 0.0)
    return {
        "image_decode": t1 - t0,
        "face_box": sum(c.seconds for c in calls[:-1]) + (t2 - t1),
        "inference": last.seconds - decode,
        "decode": decode,
        "pfl": sum(d.timings.get("flags", 0.0) for d in dets),
        "end_to_end": (t1 - t0) + (t3 - t1),
        "network_seconds": sum(c.seconds - c.stages.get("decode", 0.0) for c in calls),
        "network_images": float(sum(c.images for c in calls)),
        "passes": float(len(calls)),
    }


def open_all(found: ContenderSet, threads: int, first_image: Path) -> tuple[list[Opened], dict[str, str]]:
    """Open each contender and run it once on `first_image`, measuring the memory that adds (the
    model and its first run's buffers); a contender whose open fails is skipped, with the reason."""
    opened, skipped = [], dict(found.skipped)
    image = read_image(first_image)
    for c in found.contenders:
        before = resident_mib()
        try:
            backend = TimedBackend(c.open())
        except CtdError as e:
            skipped[c.name] = f"cannot open: {e}"
            continue
        try:
            lm = Landmarker(backend, LandmarkerOptions(threads=threads))
            lm.detect(image)
        except CtdError as e:
            backend.close()
            backend.inner.close()  # opened by c.open() even where the wrapper never was
            skipped[c.name] = f"cannot run: {e}"
            continue
        opened.append(Opened(c, backend, lm, memory_mib=resident_mib() - before, idle_cpu_ms=pipes.idle_cpu_ms()))
    return opened, skipped


def run_schedule(opened: list[Opened], inputs: Inputs, config: BenchConfig, gt: np.ndarray | None,
                 pipelines: Sequence[pipes.OpenedPipeline] = ()) -> None:
    """Warm-up, then the timed interleaved rounds (model and pipeline contenders alike), for every
    batch size; fills `samples`."""
    timers: dict[str, tuple[Any, Callable[[list[int]], dict[str, float]]]] = {
        o.contender.name: (o, lambda idx, o=o: time_iteration(o, inputs, idx, gt)) for o in opened}
    for p in pipelines:
        timers[p.contender.name] = (p, lambda idx, p=p: pipes.time_pipeline(p, inputs.paths, idx))
    names = list(timers)
    n = len(inputs.paths)
    for batch in config.batches:
        for r, i, name in stats.interleaved_schedule(names, config.warmup, 1):
            timers[name][1]([(i * batch + j) % n for j in range(batch)])
        for holder, _ in timers.values():
            holder.samples[batch] = []
        for r, i, name in stats.interleaved_schedule(names, config.iters, config.rounds):
            idx = [((r * config.iters + i) * batch + j) % n for j in range(batch)]
            holder, timed = timers[name]
            holder.samples[batch].append(timed(idx) | {"round": r})


def summarize_samples(samples: list[dict[str, float]], batch: int, flops: float | None, peak: float | None) -> dict[str, Any]:
    """Per stage p50/p90/p99 (ms), the spread over rounds, throughput and fraction of the peak."""
    rounds = [int(s["round"]) for s in samples]
    e2e = [s["end_to_end"] for s in samples]
    net_s = sum(s["network_seconds"] for s in samples)
    net_images = sum(s["network_images"] for s in samples)
    gflops_per_s = flops * net_images / net_s / 1e9 if flops and net_s else None
    return {
        "stages": {k: stats.latency_summary([s[k] for s in samples]) for k in STAGES},
        "spread": stats.round_spread(e2e, rounds),
        "throughput_images_per_s": batch / float(np.median(e2e)),
        "passes_mean": float(np.mean([s["passes"] for s in samples])),
        "network_gflops_per_s": gflops_per_s,
        "fraction_of_peak": gflops_per_s / peak if gflops_per_s and peak else None,
    }


def accuracy(opened: list[Opened], inputs: Inputs, gt: np.ndarray, given_box: bool) -> dict[str, dict[str, Any]]:
    """ME, FR, AUC (PFL units, threshold 0.1), mean |PFL error| and the eye-corner error (the PFL
    pair's, as the pipelines are scored) of every contender on the annotated images, and its
    largest landmark difference (px) against the FP32 reference."""
    from ctd_runtime.metrics import evaluate_landmarks

    preds = {}
    for o in opened:
        pred = np.full(gt.shape, np.nan)
        for i in range(len(inputs.paths)):
            boxes = gt_boxes(o.landmarker, inputs, [i], gt if given_box else None)
            det = o.landmarker.detect_batch([read_image(inputs.paths[i])], boxes)[0]
            if det.found:
                pred[i] = det.landmarks
        preds[o.contender.name] = pred
    ref = next((o.contender.name for o in opened if o.contender.reference), None)
    pair = opened[0].landmarker.schema.pfl_pair
    out = {}
    for name, pred in preds.items():
        found = np.all(np.isfinite(pred), axis=(1, 2))
        row: dict[str, Any] = {"found": int(found.sum()), "images": len(found)}
        if found.any():
            ev = evaluate_landmarks(pred[found], gt[found], "pfl", 0.10, pair)
            row |= {"me_pfl": ev.summary.me, "fr_pfl": ev.summary.fr, "auc_pfl": ev.summary.auc,
                    "pfl_error_mean_abs_pfl": ev.pfl_error_mean_abs}
            row |= {k: v for k, v in pipes.pair_scores(pred[:, list(pair)], gt[:, list(pair)]).items()
                    if k.startswith("eye_corner") or k == "pfl_error_mean_signed_pfl"}
        if ref is not None:
            both = found & np.all(np.isfinite(preds[ref]), axis=(1, 2))
            diff = np.linalg.norm(pred[both] - preds[ref][both], axis=-1)
            row["max_px_vs_fp32"] = float(diff.max()) if diff.size else None
        out[name] = row
    return out


def add_ratios(results: dict[str, dict[int, dict[str, Any]]], baseline: str | None,
               reference: dict[str, dict[int, dict[str, Any]]] | None = None) -> None:
    """Each contender's speed-up over the baseline (baseline p50 / contender p50), end to end and
    for inference, per batch size; the baseline's row is in `reference` (default `results`)."""
    if baseline is None:
        return
    reference = results if reference is None else reference
    for per_batch in results.values():
        for batch, row in per_batch.items():
            ref = reference[baseline][batch]["stages"]
            row["ratio_vs_baseline"] = {k: stats.ratio(ref[k].get("p50_ms"), row["stages"][k].get("p50_ms"))
                                        for k in ("end_to_end", "inference")}


MACS_GROUP = "ctd.bench_macs"


def mac_counter() -> Any:
    """The graph MAC counter another package offers (entry point group MACS_GROUP; the export package's
    reads the graph with onnx, which a station lacks), or None."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=MACS_GROUP):
        try:
            return ep.load()
        except ImportError:
            continue
    return None


def _fp32_graph(o: Opened) -> Path | None:
    """The FP32 ONNX graph of a contender's export (its own file, or the model.onnx beside an
    FP16/INT8 file or an engine); None for a contender without a model file."""
    if o.contender.model is None:
        return None
    graph = onnx_variant(Path(o.contender.model).with_suffix(".onnx"), "fp32")
    return graph if graph.is_file() else None


def model_flops(opened: list[Opened], counter: Any = None) -> dict[str, Any]:
    """FLOPs of one network pass per contender, counted by `counter` (default `mac_counter()`) on
    the FP32 graph of its export: a smaller station model is measured against its own count. A
    contender without a graph (the PyTorch eager pipeline) takes the count of an export of the
    same training run (the first given), or of the one export there is."""
    graphs = {o.contender.name: _fp32_graph(o) for o in opened}
    if not any(graphs.values()):
        return {"note": "no ONNX model among the contenders: FLOPs not counted", "models": {}, "contenders": {}}
    counter = counter or mac_counter()
    if counter is None:
        return {"note": "no MAC counter installed (pip install 'ctd[train]' adds the export package's): FLOPs not counted",
                "models": {}, "contenders": {}}
    models: dict[str, dict[str, Any]] = {}
    by_run: dict[str, str] = {}
    for o in opened:
        graph = graphs[o.contender.name]
        if graph is None or str(graph) in models:
            continue
        size = o.landmarker.metadata.input_size
        try:  # a graph the counter cannot read costs its % of peak, not the timings already made
            models[str(graph)] = counter(graph, {"image": [1, size, size, 3], "crop": [1, 2, 3]}).to_dict()
        except Exception as e:  # noqa: BLE001 - the counter is another package's
            models[str(graph)] = {"note": f"not counted: {type(e).__name__}: {e}"}
        by_run.setdefault(o.landmarker.metadata.run_id, str(graph))
    contenders = {}
    for o in opened:
        graph = graphs[o.contender.name]
        only = next(iter(models)) if len(models) == 1 else None
        key = str(graph) if graph is not None else by_run.get(o.landmarker.metadata.run_id, only)
        contenders[o.contender.name] = None if key is None else {"model": key, "flops": models[key].get("flops")}
    return {"models": models, "contenders": contenders}


def contender_flops(flops: dict[str, Any], name: str) -> float | None:
    """FLOPs of one pass of contender `name` (None: not counted)."""
    entry = flops.get("contenders", {}).get(name)
    return None if entry is None else entry.get("flops")


def choose_baseline(opened: list[Opened]) -> tuple[str | None, str]:
    base = next((o.contender.name for o in opened if o.contender.baseline), None)
    if base is not None:
        return base, "the PyTorch eager pipeline"
    ref = next((o.contender.name for o in opened if o.contender.reference), None)
    return ref, "no PyTorch baseline (give a run folder with torch installed): ratios are against ONNX Runtime FP32"


PIPELINES_NOTE = ("ready-made tools, image in, PFL-pair corners out, timed end to end (their own face detection "
                  "included, a batch's images one after another) on the same images, interleaved with the "
                  "contenders; scored on the PFL pair only (their other points follow another schema)")


def pipeline_results(opened: list[pipes.OpenedPipeline], skipped: dict[str, str], acc: dict[str, Any],
                     config: BenchConfig, baseline: str | None, results: dict[str, Any]) -> dict[str, Any]:
    """The JSON's "pipelines": what each is, its rows per batch (ratios against the baseline), accuracy."""
    rows = {o.contender.name: {b: pipes.summarize_pipeline(o.samples[b], b, STAGES) | {"memory_mib": o.memory_mib}
                               for b in config.batches} for o in opened}
    add_ratios(rows, baseline, results)
    return {"note": PIPELINES_NOTE, "contenders": pipes.describe(opened), "skipped": skipped,
            "results": {name: {str(b): row for b, row in per_batch.items()} for name, per_batch in rows.items()},
            "accuracy": acc}


def _unique_pipelines(pipelines: pipes.PipelineSet | None, opened: list[Opened]) -> pipes.PipelineSet:
    names = [o.contender.name for o in opened] + [c.name for c in (pipelines.contenders if pipelines else [])]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise CtdError(f"pipeline contender {dup!r} has the name of another contender")
    return pipelines or pipes.PipelineSet()


def run_bench(targets: list[str | Path], config: BenchConfig,
              extra: list[Callable[[Path, BenchContext], ContenderSet]] | None = None,
              pipelines: pipes.PipelineSet | None = None) -> dict[str, Any]:
    """Find, open, time (interleaved) and score the contenders, and the `pipelines` beside them;
    the result as JSON-ready dict."""
    found = find_contenders(targets, BenchContext(config.threads, config.gpu), extra)
    with tempfile.TemporaryDirectory(prefix="ctd-bench-") as scratch:
        inputs = load_inputs(config, Path(scratch))
        if config.given_box and inputs.annotated is None:
            raise CtdError("--given-box needs an annotated --images folder (images/ + annotations.csv)")
        opened, skipped = open_all(found, config.threads, inputs.paths[0])
        if not opened:
            raise CtdError("no contender could be opened: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
        piped: list[pipes.OpenedPipeline] = []
        try:
            piped, pipe_skipped = pipes.open_pipelines(_unique_pipelines(pipelines, opened), read_image(inputs.paths[0]))
            gt = None if inputs.annotated is None else opened[0].landmarker.schema.select(
                inputs.annotated.points[: len(inputs.paths)], where=inputs.annotated.root / "annotations.csv")
            run_schedule(opened, inputs, config, gt if config.given_box else None, piped)
            peak = matmul_peak_gflops(config.peak_n)
            flops = model_flops(opened)
            acc = accuracy(opened, inputs, gt, config.given_box) if gt is not None else {}
            pair = list(opened[0].landmarker.schema.pfl_pair)
            pipe_acc = pipes.pipeline_accuracy(piped, inputs.paths, gt[:, pair]) if gt is not None else {}
        finally:
            for o in opened:
                o.landmarker.close()
            for p in piped:
                pipes.close(p.detect)
    results = {o.contender.name: {b: summarize_samples(o.samples[b], b, contender_flops(flops, o.contender.name),
                                                       peak["gflops"])
                                  | {"memory_mib": o.memory_mib} for b in config.batches} for o in opened}
    baseline, baseline_note = choose_baseline(opened)
    add_ratios(results, baseline)
    pipelines_out = pipeline_results(piped, pipe_skipped, pipe_acc, config, baseline, results)
    return {
        "schema_version": SCHEMA_VERSION,
        "machine": describe_machine(threads=config.threads, numpy=np.__version__),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "targets": [str(t) for t in targets],
        "inputs": {"images": len(inputs.paths), "annotated": inputs.annotated is not None, "note": inputs.note,
                   "box": "given (annotations)" if config.given_box else "auto (coarse-to-fine passes)"},
        "contenders": {o.contender.name: {"kind": o.contender.kind, "precision": o.contender.precision,
                                          "device": o.contender.device, "model": str(o.contender.model or ""),
                                          "baseline": o.contender.name == baseline,
                                          pipes.IDLE_KEY: o.idle_cpu_ms} for o in opened},
        "skipped": skipped,
        "baseline": baseline, "baseline_note": baseline_note,
        "results": {name: {str(b): row for b, row in per_batch.items()} for name, per_batch in results.items()},
        "accuracy": acc,
        "pipelines": pipelines_out,
        "flops": flops, "peak": peak | {"threads": "numpy's BLAS default (every usable core)"},
        "memory_method": memory_method(),
        "order": "interleaved: each iteration runs every contender (and pipeline) once, the first one rotating",
    }
