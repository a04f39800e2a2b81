"""The demo's steps, each a thin call of the Python function the matching `ctd` command calls:
`train` (ctd train), `compare` (ctd evaluate --compare), `export` (ctd export), `infer` (ctd
infer), `bench` (ctd bench). Each is safe to repeat: the trainer resumes or finds its run
finished, the export completes what an earlier one left, the others rewrite their files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich.console import Console

from ctd_runtime.errors import CtdError
from ctd_train.demo.config import TEACHER, DemoConfig

RUNS_DIR, COMPARE_DIR, EXPORT_DIR, INFER_DIR, BENCH_DIR = "runs", "compare", "export", "infer", "bench"
DECODE = "dark"   # the recipe's decode (TrainConfig): the comparison uses the runs' own
# CTD-ED as the accuracy study's best distillation variant (docs/accuracy.md): L_ED on pooled
# embeddings, lambda 2e-4 against SimpleBaseline's scale of L_R
CTD_ED = {"lambda_": 2e-4, "loss_reduction": "simplebaseline", "ed_features": "pooled"}
# the station model's crop and zoom-out (README, "The station"): the demo's infer step lets the
# model find the face in the whole image, which a model trained on tight face crops only cannot
# (measured: 7 of 24 held-out images found after 8 epochs with the recipe's crop, 24 of 24 with this)
STATION_CROP = {"crop": "schema", "margin": 1.2}
STATION_AUGMENT = {"scale_max": 3.0, "shift": 0.1}


def method_config(name: str) -> Any:
    """The MethodConfig of a demo method: TrainConfig's FT, or the study's CTD-ED, both with
    SimpleBaseline's head (the recipe's skip head was measured with the HSE teacher, not with the
    demo's dlib one, and the demo's README numbers are SimpleBaseline's)."""
    from ctd_train.methods import MethodConfig

    return MethodConfig(name=name, head="simple", **(CTD_ED if name == "ctd-ed" else {}))


def train_config(config: DemoConfig, data: Path, schema: str, method: str) -> Any:
    """The TrainConfig of one method: the recipe's defaults with the demo's teacher, budget and
    learning rates (DemoConfig says why they differ from the recipe's), and the station model's
    crop and zoom-out augmentation. No PFL-length term: like the skip head, it was chosen with the
    HSE teacher on IMM, and the demo's numbers were measured without it."""
    from ctd_train.config import TrainConfig
    from ctd_train.data.augment import AugmentConfig

    return TrainConfig(data=str(data), out=str(Path(config.out) / RUNS_DIR / method), schema=schema, teacher=TEACHER,
                       method=method_config(method), epochs=config.epochs, lr=config.lr,
                       head_lr_scale=config.head_lr_scale, seed=config.seed, threads=config.threads,
                       pfl_length_weight=0.0, augment=AugmentConfig(**STATION_AUGMENT), **STATION_CROP)


def train(config: DemoConfig, data: Path, schema: str, method: str, console: Console) -> Path:
    """Train (or resume, or find finished) one method's run; its folder."""
    from ctd_train.trainer import train as train_run

    return train_run(train_config(config, data, schema, method), progress=True, console=console)


def best_validation(run_dir: Path) -> float:
    """The run's best validation ME (PFL units): what picks the model to export, never the test split."""
    from ctd_train.trainer import BEST_KEY, METRICS_FILE

    path = run_dir / METRICS_FILE
    try:
        values = [json.loads(line)[BEST_KEY] for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError, KeyError) as e:
        raise CtdError(f"cannot read the run's validation errors ({type(e).__name__}: {e})", path=path) from None
    if not values:
        raise CtdError("the run has no validated epoch", path=path)
    return float(min(values))


def choose(runs: dict[str, Path]) -> str:
    """The method with the lowest best validation ME (the first on a tie)."""
    return min(runs, key=lambda m: best_validation(runs[m]))


def compare(config: DemoConfig, runs: dict[str, Path]) -> Any:
    """Every run on its test split, one Table-1 row each, and the CED plot (compare.md/json, compare_ced.png)."""
    from ctd_train.evaluate import compare_runs

    return compare_runs(list(runs.values()), split="test", decode=DECODE, out_dir=Path(config.out) / COMPARE_DIR)


def export(config: DemoConfig, run_dir: Path, console: Console) -> Any:
    """model.onnx behind the parity gate, and model.int8.onnx (calibrated on training images)."""
    from ctd_export.onnx_export import ExportOptions, export_run
    from ctd_export.progress import ConsoleProgress

    options = ExportOptions(precisions=("fp32", "int8"), calibration_images=config.calibration_images,
                            max_images=config.parity_images, threads=config.threads)
    shown = ConsoleProgress(console)
    return export_run(run_dir, Path(config.out) / EXPORT_DIR, options, log=shown.log, progress=shown.progress)


def infer(config: DemoConfig, model: Path, inputs: list[Path], console: Console) -> Any:
    """`ctd infer MODEL INPUTS --out OUT/infer`: each capture's landmarks, PFL (px, mm, 3D), flags,
    overlay; results.jsonl and results.csv."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ctd_runtime.captures import find_captures
    from ctd_runtime.infer import InferOptions, run_batch
    from ctd_runtime.landmarker import Landmarker, LandmarkerOptions

    captures = find_captures(inputs)
    with Landmarker(model, LandmarkerOptions(threads=config.threads)) as lm:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("measuring", total=len(captures))

            def step(capture: Any, result: Any) -> None:
                bar.update(task, advance=1, description=f"{result.status:7s} {capture.name[:40]}")

            return run_batch(lm, captures, InferOptions(), Path(config.out) / INFER_DIR, progress=step)


@dataclass
class BenchOutcome:
    result: dict[str, Any]
    files: dict[str, Path]


def bench(config: DemoConfig, export_dir: Path, run_dir: Path, images: Path | None) -> BenchOutcome:
    """`ctd bench EXPORT RUN --images HELDOUT`: ONNX Runtime FP32 / INT8 and the PyTorch eager
    pipeline, interleaved, few iterations (indicative numbers only)."""
    from ctd_runtime.bench import BenchConfig, run_bench
    from ctd_runtime.bench.report import write_outputs
    from ctd_runtime.machine import usable_cores

    bench_config = BenchConfig(warmup=1, iters=config.bench_iters, rounds=config.bench_rounds,
                               threads=config.threads or usable_cores(), images=images,
                               max_images=config.bench_images, peak_n=512)
    result = run_bench([export_dir, run_dir], bench_config)
    return BenchOutcome(result, write_outputs(result, Path(config.out) / BENCH_DIR))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """fn's value and the seconds it took."""
    import time

    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0
