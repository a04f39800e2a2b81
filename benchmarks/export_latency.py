"""Export latency on this CPU: PyTorch eager vs the fused ONNX graphs (FP32, FP16, INT8) in ONNX
Runtime, batch 1, the same images and crops; p50/p90/p99 after warm-up, and each variant's
landmark differences against model.onnx.

    python benchmarks/export_latency.py --run RUN_DIR --export-dir EXPORT_DIR
    python benchmarks/export_latency.py --export-dir /tmp/bench     # no run: a SimpleBaseline-
                                                                     # ResNet-50 with random weights

The ONNX Runtime models are timed interleaved (one run of each in turn); eager is timed first,
per stage (OpenCV warp, numpy normalisation, predictor, numpy decode); a fused
graph runs as one call. Missing variants are written into the export dir first (model.onnx from
the run or the random model; model.fp16.onnx; model.int8.onnx, TensorRT-ready symmetric INT8;
model.int8_u8.onnx, ONNX Runtime-only asymmetric UINT8 activations). ONNX Runtime's CPU provider
runs FP16 Conv in FP32 after inserted Casts: its FP16 row measures that, not FP16 arithmetic.
Writes benchmarks/results/export_latency.json and .png.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ctd_export.calibration import Sample, calibration_samples
from ctd_export.precision_compare import landmark_differences
from ctd_runtime import geometry
from ctd_runtime.artifacts import onnx_variant
from ctd_runtime.backends import create_backend
from ctd_runtime.machine import describe_machine, usable_cores

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "imm-face"
EAGER_STAGES = ("warp (OpenCV)", "normalise (numpy)", "predictor (torch)", "decode (numpy)")
Outputs = tuple[np.ndarray, np.ndarray]  # landmarks [N, K, 2], scores [N, K]


def percentiles(times_s: list[float]) -> dict[str, float]:
    t = np.asarray(times_s) * 1000.0
    return {"p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean()), "n": int(t.size)}


def time_interleaved(calls: dict[str, Callable[[int], Any]], n_inputs: int, runs: int, warmup: int) -> dict[str, list[float]]:
    """Per call: `warmup` untimed runs, then `runs` timed ones, the calls taking turns."""
    for i in range(warmup):
        for fn in calls.values():
            fn(i % n_inputs)
    out: dict[str, list[float]] = {k: [] for k in calls}
    for i in range(runs):
        for key, fn in calls.items():
            t0 = time.perf_counter()
            fn(i % n_inputs)
            out[key].append(time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------------------- models


def random_run(num_landmarks: int = 14, input_size: int = 256):
    """A run-like object: SimpleBaseline on the ResNet-50 (VGGFace2) skeleton, random weights."""
    from types import SimpleNamespace

    from ctd_runtime.codec import HeatmapCodec
    from ctd_runtime.schema import LandmarkSchema
    from ctd_train.models.student import build_student
    from ctd_train.teachers import teacher_skeleton

    import torch

    torch.manual_seed(0)  # the same random model in every process (model.onnx may come from an earlier one)
    teacher = teacher_skeleton("resnet50-vggface2")
    predictor = build_student(teacher, num_landmarks).eval().requires_grad_(False)
    names = tuple(f"p{i}" for i in range(num_landmarks))
    return SimpleNamespace(
        predictor=predictor, normalization=teacher.input_spec.normalization,
        codec=HeatmapCodec(input_size, 4, 1.5), decode="argmax", input_size=input_size,
        schema=LandmarkSchema("random", names, tuple(range(num_landmarks)), pfl_pair=(0, 1)),
        run_id="random-resnet50", run_dir=Path("."), config=None,
    )


def ensure_fp32(run, path: Path) -> None:
    import onnx

    from ctd_export.metadata import metadata_for_run, set_metadata
    from ctd_export.onnx_export import build_fused_model, export_onnx_model

    if path.is_file():
        return
    fused = build_fused_model(run, run.decode)
    model = export_onnx_model(fused, "fused", run.schema.num_landmarks, run.input_size, run.codec.heatmap_size)
    set_metadata(model, metadata_for_run(run, run.decode))
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


# ---------------------------------------------------------------------------- steps of main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, help="run dir (default: random SimpleBaseline-ResNet-50)")
    ap.add_argument("--export-dir", type=Path, required=True, help="folder with (or for) model*.onnx")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="annotated images (default: IMM)")
    ap.add_argument("--images", type=int, default=8, help="test images timed and compared")
    ap.add_argument("--calibration", type=int, default=32, help="INT8 calibration images")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=usable_cores(), help="ONNX Runtime intra-op threads")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch threads (default: --threads); on a shared, loaded machine torch's OpenMP "
                         "threads can wait on each other many-fold longer than one thread computes")
    ap.add_argument("--out", type=Path, default=RESULTS / "export_latency.json")
    return ap.parse_args(argv)


def load_model(run_dir: Path | None) -> tuple[Any, str]:
    """(the run, or the random model; what it is, for the table title)."""
    if run_dir is None:
        return random_run(), "SimpleBaseline-ResNet-50 (resnet50-vggface2 skeleton) with RANDOM weights: latency only"
    from ctd_train.checkpoint import load_run

    run = load_run(run_dir)
    return run, f"run {run.run_id} ({run_dir})"


def sample_sets(run: Any, args: argparse.Namespace) -> tuple[list[Sample], np.ndarray | None, list[Sample]]:
    """(test samples, their ground truth in source px or None for the random model, calibration
    samples): the run's own split (calibrate on training images, measure on test images), or the
    last images of the data for the random model."""
    from ctd_train.data.annotations import read_annotations

    images = read_annotations(args.data, validate_images=False)
    n = len(images)
    if args.run is not None:
        from ctd_train.config import TrainConfig, split_indices

        splits = split_indices(images.subjects, TrainConfig.from_dict(run.config))
        test_idx, calib_idx = splits["test"][: args.images], splits["train"]
    else:
        test_idx = list(range(n - max(args.images, 1), n))
        calib_idx = list(range(0, n - len(test_idx)))
    samples = calibration_samples(images, test_idx, run.input_size, len(test_idx), seed=1)
    # every test image is taken, in order, so the ground truth lines up with the samples
    gt = images.points[test_idx][:, list(run.schema.source_indices)] if args.run is not None else None
    return samples, gt, calibration_samples(images, calib_idx, run.input_size, args.calibration, seed=0)


def eager_pipeline(run: Any, net: Callable[[Any], Any] | None = None) -> Callable[[Sample], tuple[Any, list[float]]]:
    """The PyTorch eager pipeline of one sample: ((landmarks, scores), stage end times)."""
    import torch

    predictor = net if net is not None else run.predictor.cpu().eval()

    def call(sample: Sample) -> tuple[Any, list[float]]:
        image, crop = sample
        t = [time.perf_counter()]
        c = geometry.warp_to_crop(image[0], crop[0].astype(np.float64), run.input_size)
        t.append(time.perf_counter())
        x = torch.from_numpy(run.normalization.apply(c))
        t.append(time.perf_counter())
        with torch.no_grad():
            hm = predictor(x).float().numpy()
        t.append(time.perf_counter())
        xy, scores = run.codec.decode(hm, run.decode)
        lm = geometry.apply_affine(crop[0], xy[0])
        t.append(time.perf_counter())
        return (lm, scores[0]), t

    return call


def outputs_of(call: Callable[[Sample], tuple[Any, list[float]]], samples: list[Sample]) -> Outputs:
    out = [call(s)[0] for s in samples]
    return np.stack([o[0] for o in out]).astype(np.float32), np.stack([o[1] for o in out]).astype(np.float32)


def time_eager(run: Any, samples: list[Sample], runs: int, warmup: int) -> tuple[dict[str, Any], Outputs]:
    """(the eager row: p50/p90/p99 in total and per stage, its outputs)."""
    call = eager_pipeline(run)
    for i in range(warmup):
        call(samples[i % len(samples)])
    stages: dict[str, list[float]] = {k: [] for k in EAGER_STAGES}
    total = []
    for i in range(runs):
        _, t = call(samples[i % len(samples)])
        total.append(t[-1] - t[0])
        for k, (a, b) in zip(EAGER_STAGES, zip(t, t[1:])):
            stages[k].append(b - a)
    row = {**percentiles(total), "stages": {k: percentiles(v) for k, v in stages.items()}}
    return row, outputs_of(call, samples)


def half_outputs(run: Any, samples: list[Sample]) -> Outputs:
    """FP16 arithmetic (what a TensorRT FP16 engine computes), for accuracy only: torch's CPU half
    kernels are not a latency reference."""
    half = copy.deepcopy(run.predictor.cpu().eval()).half()
    return outputs_of(eager_pipeline(run, lambda x: half(x.half())), samples)


def variant_files(export_dir: Path) -> dict[str, Path]:
    model = export_dir / "model.onnx"
    return {"onnx fp32": model, "onnx fp16": onnx_variant(model, "fp16"),
            "onnx int8 (s8, TensorRT-ready)": onnx_variant(model, "int8"),
            "onnx int8 (u8, ORT only)": export_dir / "model.int8_u8.onnx"}


def prepare_variants(run: Any, files: dict[str, Path], calib: list[Sample], args: argparse.Namespace) -> dict[str, Any]:
    """Write the missing variants; the INT8 quantisation details of those written."""
    from ctd_export.fp16 import convert_fp16
    from ctd_export.int8 import Int8Config, quantize_int8

    ensure_fp32(run, files["onnx fp32"])
    if not files["onnx fp16"].is_file():
        convert_fp16(files["onnx fp32"])
    configs = {"onnx int8 (s8, TensorRT-ready)": Int8Config(num_images=args.calibration),
               "onnx int8 (u8, ORT only)": Int8Config(num_images=args.calibration, activation_type="uint8",
                                                      tensorrt_compatible=False)}
    info = {}
    for key, cfg in configs.items():
        if not files[key].is_file():
            res = quantize_int8(files["onnx fp32"], calib, files[key], cfg, calibration_source=str(args.data))
            info[key] = res.to_dict()
    return info


def time_backends(files: dict[str, Path], samples: list[Sample], threads: int, runs: int,
                  warmup: int) -> tuple[dict[str, Any], dict[str, Outputs]]:
    """(rows, outputs) of every file through its backend (`create_backend`; ONNX Runtime with
    `threads`, spinning off), timed interleaved: run r of every model back to back, so a change of
    the machine's load shifts all alike."""
    backends = {key: create_backend(path, threads=threads).open() for key, path in files.items()}
    try:
        calls = {key: (lambda i, b=b: b.run(*samples[i])) for key, b in backends.items()}
        outputs = {}
        for key, call in calls.items():
            outs = [call(i) for i in range(len(samples))]
            outputs[key] = (np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]))
        times = time_interleaved(calls, len(samples), runs, warmup)
    finally:
        for b in backends.values():
            b.close()
    rows = {key: {**percentiles(times[key]), "size_mb": round(path.stat().st_size / 2**20, 2)}
            for key, path in files.items()}
    return rows, outputs


def add_comparisons(rows: dict[str, Any], outputs: dict[str, Outputs], gt: np.ndarray | None) -> None:
    """Each row's speed-up over and landmark differences against model.onnx."""
    ref = outputs["onnx fp32"]
    base = rows["onnx fp32"]["p50_ms"]
    for key, row in rows.items():
        row["speedup_vs_onnx_fp32"] = base / row["p50_ms"]
        row["vs_onnx_fp32"] = landmark_differences(ref, outputs[key], gt).to_dict()


def print_table(rows: dict[str, Any], accuracy_only: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("backend", "p50 ms", "p90 ms", "p99 ms", "x vs onnx fp32", "max px vs fp32", "mean px",
                  title=title, title_justify="left")
    for key, row in rows.items():
        diff = row["vs_onnx_fp32"]
        table.add_row(key, f"{row['p50_ms']:.1f}", f"{row['p90_ms']:.1f}", f"{row['p99_ms']:.1f}",
                      f"{row['speedup_vs_onnx_fp32']:.2f}", f"{diff['px_max']:.3g}", f"{diff['px_mean']:.3g}")
        for stage, st in row.get("stages", {}).items():
            table.add_row(f"  {stage}", f"{st['p50_ms']:.2f}", f"{st['p90_ms']:.2f}", f"{st['p99_ms']:.2f}", "", "", "")
    console = Console()
    console.print(table)
    for key, row in accuracy_only.items():
        diff = row["vs_pytorch_fp32"]
        me = "" if diff["me_change"] is None else f", ME change {diff['me_change']:+.3g} px"
        console.print(f"{key}: landmarks vs FP32 max {diff['px_max']:.3g} px, mean {diff['px_mean']:.3g} px{me}",
                      highlight=False)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch

    args = parse_args(argv)
    torch_threads = args.torch_threads or args.threads
    torch.set_num_threads(torch_threads)
    run, source = load_model(args.run)
    print(f"model: {source}")
    samples, gt, calib = sample_sets(run, args)
    eager_row, eager_out = time_eager(run, samples, args.runs, args.warmup)
    accuracy_only = {"pytorch half predictor (fp16 arithmetic)": {
        "vs_pytorch_fp32": landmark_differences(eager_out, half_outputs(run, samples), gt).to_dict()}}
    # the variants are prepared after the eager timing: ONNX Runtime's calibration sessions leave
    # spinning threads behind that slow torch down several-fold on a small machine
    t0 = time.perf_counter()
    files = variant_files(args.export_dir)
    int8_info = prepare_variants(run, files, calib, args)
    print(f"prepared the variants in {time.perf_counter() - t0:.0f} s")
    gc.collect()
    rows, outputs = time_backends(files, samples, args.threads, args.runs, args.warmup)
    rows = {"pytorch eager fp32": eager_row, **rows}
    add_comparisons(rows, {"pytorch eager fp32": eager_out, **outputs}, gt)
    title = (f"batch 1, {args.runs} runs after {args.warmup} warm-up, {args.threads} ORT / {torch_threads} torch "
             f"threads; {source}")
    print_table(rows, accuracy_only, title)
    result = {
        "model": source,
        "machine": describe_machine(threads=args.threads, torch_threads=torch_threads, torch=torch.__version__,
                                    numpy=np.__version__),
        "settings": {"batch": 1, "runs": args.runs, "warmup": args.warmup, "images": len(samples),
                     "input_size": run.input_size, "decode": run.decode, "data": str(args.data),
                     "calibration_images": args.calibration},
        "results": rows,
        "accuracy_only": accuracy_only,
        "int8": int8_info,
        "notes": ["ONNX Runtime CPU runs FP16 Conv/ConvTranspose in FP32 after inserted Casts: "
                  "the fp16 row measures FP16-rounded weights, not FP16 arithmetic",
                  "random weights give flat heatmaps: landmark differences of a random model are not "
                  "an accuracy measurement" if args.run is None else ""],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out.with_suffix(".png"), source)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return result


def plot(rows: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    p50 = [rows[k]["p50_ms"] for k in names]
    err = [[0] * len(names), [rows[k]["p90_ms"] - rows[k]["p50_ms"] for k in names]]
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(names) + 1.5))
    ax.barh(names[::-1], p50[::-1], xerr=[err[0][::-1], err[1][::-1]], color="#4c72b0", capsize=3)
    p90 = [rows[k]["p90_ms"] for k in names]
    for y, (v, w) in enumerate(zip(p50[::-1], p90[::-1])):
        ax.text(w, y, f"  {v:.0f} ms", va="center", fontsize=8)
    ax.set_xlim(0, max(p90) * 1.18)
    ax.set_xlabel("latency per image, ms (bar: p50, whisker: p90)")
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
