"""The head rewrite measured: the fused graph with each head op (`ctd export --head-op`:
ConvTranspose as trained, the 3x3 sub-pixel Conv + DepthToSpace, the 2x2 one) in ONNX Runtime CPU,
FP32 and INT8 (model.int8.onnx's TensorRT-ready QDQ), batch 1, the same crops for all.

    python benchmarks/head_rewrite.py                          # runs/cascade/face-s0 (trained)
    python benchmarks/head_rewrite.py --run RUN_DIR
    python benchmarks/head_rewrite.py --random                 # MobileNet student, random weights
    python benchmarks/head_rewrite.py --profile 50             # + ONNX Runtime's profile per op type
    python benchmarks/head_rewrite.py --iters 2 --rounds 1 --warmup 1   # a check that it runs, no result

Timing: every session comes from `ctd_runtime.backends.ort_session.open_session` with intra-op
spinning off (checked on each session: a spinning session takes the cores from the next one, so
interleaved contenders would measure each other), `--threads` intra-op threads. Each round runs
every contender once per iteration, in turn, the order rotated between rounds; a round's median per
contender is one sample; the table gives the median over rounds and their spread (min-max), and
each contender against the ConvTranspose graph of its precision. Do not read numbers from a
machine that is busy with other work.

`--profile N` then runs N more calls of each file with ONNX Runtime's profiler (`enable_profiling`)
on separate sessions (the profiler's cost stays out of the timing) and prints, per file, the
operator types that take the most kernel time per call.

Writes benchmarks/results/head_rewrite.json (`--out`). The graphs, INT8 files and profiles go to
`--work-dir` (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ctd_export.calibration import Sample, calibration_samples
from ctd_export.precision_compare import landmark_differences
from ctd_runtime.backends.ort_session import open_session
from ctd_runtime.machine import describe_machine, usable_cores

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_RUN = REPO / "runs" / "cascade" / "face-s0"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "imm-face"
HEAD_OPS = ("convtranspose", "subpixel", "subpixel2x2")
SPINNING_KEYS = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--run", type=Path, default=None, help=f"run dir (default: {DEFAULT_RUN.relative_to(REPO)})")
    src.add_argument("--random", action="store_true", help="the MobileNet student with random weights (latency only)")
    ap.add_argument("--teacher", default="hse-mobilenet-vggface2", help="skeleton of the --random student")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="annotated images (default: IMM)")
    ap.add_argument("--images", type=int, default=8, help="test crops timed and compared")
    ap.add_argument("--calibration", type=int, default=32, help="INT8 calibration images")
    ap.add_argument("--head-ops", default=",".join(HEAD_OPS), help="comma-separated subset of " + ", ".join(HEAD_OPS))
    ap.add_argument("--precisions", default="fp32,int8", help="comma-separated subset of fp32, int8")
    ap.add_argument("--threads", type=int, default=usable_cores(), help="ONNX Runtime intra-op threads")
    ap.add_argument("--warmup", type=int, default=5, help="untimed calls of each contender first")
    ap.add_argument("--iters", type=int, default=20, help="timed calls of each contender per round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds (each gives one median per contender)")
    ap.add_argument("--profile", type=int, default=0, metavar="N", help="profile N calls of each file (0: no)")
    ap.add_argument("--top", type=int, default=8, help="operator types listed per profiled file")
    ap.add_argument("--work-dir", type=Path, default=None, help="where the graphs are written (default: temp)")
    ap.add_argument("--out", type=Path, default=RESULTS / "head_rewrite.json")
    args = ap.parse_args(argv)
    args.head_ops = tuple(op for op in HEAD_OPS if op in args.head_ops.split(","))
    args.precisions = tuple(p for p in ("fp32", "int8") if p in args.precisions.split(","))
    if "convtranspose" not in args.head_ops or not args.precisions:
        ap.error("--head-ops must include convtranspose (the reference) and --precisions fp32 or int8")
    return args


# ---------------------------------------------------------------------------- model and samples


def random_run(teacher_name: str, num_landmarks: int = 14, input_size: int = 256) -> Any:
    """A run-like object: the SimpleBaseline student of `teacher_name`'s skeleton, random weights
    (seeded), so the graphs of every process are the same."""
    from types import SimpleNamespace

    import torch

    from ctd_runtime.codec import HeatmapCodec
    from ctd_runtime.schema import LandmarkSchema
    from ctd_train.models.student import build_student
    from ctd_train.teachers import teacher_skeleton

    torch.manual_seed(0)
    teacher = teacher_skeleton(teacher_name)
    names = tuple(f"p{i}" for i in range(num_landmarks))
    return SimpleNamespace(
        predictor=build_student(teacher, num_landmarks).eval().requires_grad_(False),
        normalization=teacher.input_spec.normalization, codec=HeatmapCodec(input_size, 4, 1.5), decode="argmax",
        input_size=input_size, run_id=f"random-{teacher_name}", run_dir=Path("."), config={"crop": "face"},
        schema=LandmarkSchema("random", names, tuple(range(num_landmarks)), pfl_pair=(0, 1)),
    )


def load_model(args: argparse.Namespace) -> tuple[Any, str]:
    """(the run or the random student; what it is, for the table title)."""
    if args.random:
        return random_run(args.teacher), f"{args.teacher} student with RANDOM weights: latency only"
    from ctd_train.checkpoint import load_run

    run_dir = args.run or DEFAULT_RUN
    run = load_run(run_dir)
    return run, f"run {run.run_id} ({run_dir})"


def sample_sets(run: Any, args: argparse.Namespace) -> tuple[list[Sample], np.ndarray | None, list[Sample]]:
    """(test crops, their ground truth or None, calibration crops): the run's test and training
    splits, or for a random model the last and the other images of `--data`."""
    from ctd_train.data.annotations import read_annotations

    images = read_annotations(args.data, validate_images=False)
    if not args.random:
        from ctd_train.config import TrainConfig, split_indices

        splits = split_indices(images.subjects, TrainConfig.from_dict(run.config))
        test_idx, calib_idx = splits["test"][: args.images], splits["train"]
    else:
        test_idx = list(range(len(images) - args.images, len(images)))
        calib_idx = list(range(len(images) - args.images))
    samples = calibration_samples(images, test_idx, run.input_size, len(test_idx), seed=1)
    gt = None if args.random else images.points[test_idx][:, list(run.schema.source_indices)]
    return samples, gt, calibration_samples(images, calib_idx, run.input_size, args.calibration, seed=0)


# ---------------------------------------------------------------------------- graphs


def write_graph(run: Any, head_op: str, path: Path) -> Path:
    """The fused FP32 graph with the head written as `head_op` (what `ctd export --head-op` builds)."""
    import onnx

    from ctd_export.metadata import metadata_for_run, set_metadata, set_metadata_props
    from ctd_export.onnx_export import HEAD_OP_KEY, build_fused_model, export_onnx_model

    fused = build_fused_model(run, run.decode, head_op=head_op)
    model = export_onnx_model(fused, "fused", run.schema.num_landmarks, run.input_size, run.codec.heatmap_size)
    set_metadata(model, metadata_for_run(run, run.decode))
    set_metadata_props(model, {HEAD_OP_KEY: head_op})
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def prepare_files(run: Any, calib: list[Sample], args: argparse.Namespace, work: Path) -> dict[str, Path]:
    """{"<head op> <precision>": file} for every contender, written into `work`."""
    from ctd_export.int8 import Int8Config, quantize_int8

    files: dict[str, Path] = {}
    for op in args.head_ops:
        fp32 = write_graph(run, op, work / op / "model.onnx")
        if "fp32" in args.precisions:
            files[f"{op} fp32"] = fp32
        if "int8" in args.precisions:
            t0 = time.perf_counter()
            res = quantize_int8(fp32, calib, config=Int8Config(num_images=args.calibration), threads=args.threads)
            print(f"  {op}: INT8 written in {time.perf_counter() - t0:.0f} s ({res.quantized_op_counts})", flush=True)
            files[f"{op} int8"] = res.path
    return files


# ---------------------------------------------------------------------------- timing


def config_entry(session: Any, key: str) -> str:
    """A session config entry; "unset" where the session has none (ONNX Runtime's default: spinning on)."""
    try:
        return session.get_session_options().get_session_config_entry(key)
    except RuntimeError:
        return "unset"


def checked_session(path: Path, threads: int, profile_prefix: str | None = None) -> Any:
    """`open_session` of `path`, refused unless its intra- and inter-op spinning are off."""
    session = open_session(path, threads=threads, profile_prefix=profile_prefix)
    spinning = {k: config_entry(session, k) for k in SPINNING_KEYS}
    if any(v != "0" for v in spinning.values()):
        raise RuntimeError(f"{path}: ONNX Runtime session spins ({spinning}); the contenders would measure each other")
    return session


def feeds_of(samples: list[Sample]) -> list[dict[str, np.ndarray]]:
    return [{"image": np.ascontiguousarray(img, np.uint8), "crop": np.ascontiguousarray(a, np.float32)}
            for img, a in samples]


def time_rounds(calls: dict[str, Callable[[int], Any]], n_inputs: int, args: argparse.Namespace) -> dict[str, list[list[float]]]:
    """Per contender, per round, the seconds of each timed call; the contenders take turns call by
    call, their order rotated each round."""
    keys = list(calls)
    for i in range(args.warmup):
        for key in keys:
            calls[key](i % n_inputs)
    times: dict[str, list[list[float]]] = {k: [] for k in keys}
    for r in range(args.rounds):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        this = {k: [] for k in keys}
        for i in range(args.iters):
            for key in order:
                t0 = time.perf_counter()
                calls[key](i % n_inputs)
                this[key].append(time.perf_counter() - t0)
        for key in keys:
            times[key].append(this[key])
    return times


def summary(rounds: list[list[float]]) -> dict[str, Any]:
    """Median over rounds of each round's median (ms), the rounds' min and max, all calls' p90."""
    medians = [statistics.median(r) * 1000 for r in rounds]
    calls = np.concatenate([np.asarray(r) for r in rounds]) * 1000
    return {"median_ms": statistics.median(medians), "round_medians_ms": medians, "spread_ms": [min(medians), max(medians)],
            "p90_ms": float(np.percentile(calls, 90)), "calls": int(calls.size)}


def run_all(files: dict[str, Path], samples: list[Sample], args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """(timing rows, outputs (landmarks, scores) on the test crops) of every file."""
    feeds = feeds_of(samples)
    sessions = {key: checked_session(path, args.threads) for key, path in files.items()}
    outputs = {}
    for key, s in sessions.items():
        outs = [s.run(["landmarks", "scores"], f) for f in feeds]
        outputs[key] = (np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]))
    calls = {key: (lambda i, s=s: s.run(["landmarks", "scores"], feeds[i])) for key, s in sessions.items()}
    times = time_rounds(calls, len(feeds), args)
    return {key: summary(times[key]) for key in files}, outputs


def add_comparisons(rows: dict[str, Any], outputs: dict[str, Any], gt: np.ndarray | None) -> None:
    """Each row against the ConvTranspose graph of its precision (speed, landmarks) and, for INT8,
    against the FP32 graph of its head op."""
    for key, row in rows.items():
        op, precision = key.split(" ")
        base = f"convtranspose {precision}"
        row["x_vs_convtranspose"] = rows[base]["median_ms"] / row["median_ms"]
        row["vs_convtranspose"] = landmark_differences(outputs[base], outputs[key], gt).to_dict()
        if precision == "int8" and f"{op} fp32" in outputs:
            row["vs_own_fp32"] = landmark_differences(outputs[f"{op} fp32"], outputs[key], gt).to_dict()


# ---------------------------------------------------------------------------- profile


def op_type_profile(trace_path: Path, calls: int, top: int) -> list[dict[str, Any]]:
    """ONNX Runtime's profile (Chrome trace JSON) summed per operator type: kernel ms per call and
    share of all kernel time, the `top` largest first."""
    events = json.loads(Path(trace_path).read_text())
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + float(e.get("dur", 0)) / 1000.0
    total = sum(per_op.values()) or 1.0
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
    return [{"op": op, "ms_per_call": ms / calls, "share": ms / total} for op, ms in ranked]


def profile_files(files: dict[str, Path], samples: list[Sample], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Per file: `args.profile` profiled calls (after warm-up) on a fresh session, summarised."""
    feeds = feeds_of(samples)
    (work / "profile").mkdir(parents=True, exist_ok=True)  # ONNX Runtime does not make it
    out = {}
    for key, path in files.items():
        session = checked_session(path, args.threads, profile_prefix=str(work / "profile" / key.replace(" ", "_")))
        for i in range(args.warmup + args.profile):
            session.run(["landmarks", "scores"], feeds[i % len(feeds)])
        trace = Path(session.end_profiling())
        # the warm-up calls are in the trace too: divide by every call made
        out[key] = {"trace": str(trace), "calls": args.warmup + args.profile,
                    "top_ops": op_type_profile(trace, args.warmup + args.profile, args.top)}
    return out


# ---------------------------------------------------------------------------- report


def print_tables(rows: dict[str, Any], profiles: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("graph", "median ms", "spread ms", "p90 ms", "x vs convtranspose", "max px vs convtranspose",
                  "max px vs own fp32", title=title, title_justify="left")
    for key, row in rows.items():
        own = row.get("vs_own_fp32")
        table.add_row(key, f"{row['median_ms']:.2f}", "{:.2f}-{:.2f}".format(*row["spread_ms"]), f"{row['p90_ms']:.2f}",
                      f"{row['x_vs_convtranspose']:.2f}", f"{row['vs_convtranspose']['px_max']:.3g}",
                      "" if own is None else f"{own['px_max']:.3g}")
    console = Console(width=max(Console().width, 150))
    console.print(table)
    for key, prof in profiles.items():
        ops = Table("op type", "ms per call", "share", title=f"profile: {key} ({prof['calls']} calls)", title_justify="left")
        for entry in prof["top_ops"]:
            ops.add_row(entry["op"], f"{entry['ms_per_call']:.2f}", f"{100 * entry['share']:.0f}%")
        console.print(ops)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    run, source = load_model(args)
    print(f"model: {source}", flush=True)
    samples, gt, calib = sample_sets(run, args)
    with tempfile.TemporaryDirectory(prefix="ctd-head-") as tmp:
        work = args.work_dir or Path(tmp)
        files = prepare_files(run, calib, args, work)
        rows, outputs = run_all(files, samples, args)
        add_comparisons(rows, outputs, gt)
        profiles = profile_files(files, samples, args, work) if args.profile else {}
    title = (f"ONNX Runtime CPU, batch 1, {args.threads} threads, spinning off; {args.rounds} rounds x {args.iters} "
             f"interleaved calls after {args.warmup} warm-up; {source}")
    print_tables(rows, profiles, title)
    result = {
        "model": source,
        "machine": describe_machine(threads=args.threads),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": rows,
        "profiles": profiles,
        "notes": ["medians over rounds of each round's median; spread = the rounds' min and max",
                  "random weights: landmark differences are not an accuracy measurement" if args.random else ""],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
