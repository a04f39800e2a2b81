"""`run_demo(config)`: the demo's seven steps in order, each saying what it does, then the summary.

    1 data      the synthetic faces (drawn on first use, cached) or --data, checked
    2 train     FT and CTD-ED from the dlib-resnet29 teacher (ctd train)
    3 compare   Table 1 on the test split and the CED plot (ctd evaluate --compare)
    4 export    model.onnx (parity gate) and model.int8.onnx, of the method better on validation
    5 infer     the held-out images and OBJ captures: PFL in px, mm and 3D mm, overlays (ctd infer)
    6 bench     a short latency table (ctd bench)
    7 summary   every file, what the numbers mean, the next commands; demo_summary.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ctd_runtime.annotations import read_annotations
from ctd_runtime.atomic import write_json_atomic
from ctd_runtime.errors import CtdError
from ctd_train.demo import data as demo_data
from ctd_train.demo import steps
from ctd_train.demo.config import TEACHER, DemoConfig, prepare_out
from ctd_train.demo.summary import SUMMARY_FILE, DemoSummary, print_summary, written_files
from ctd_train.demo.truth import pfl_errors, true_pfl_px

STEPS = 7


def _header(console: Console, n: int, title: str, what: str) -> float:
    console.rule(f"[bold]{n}/{STEPS} {title}", align="left")
    console.print(what, highlight=False)
    return time.perf_counter()


def run_demo(config: DemoConfig, console: Console | None = None, cache_dir: str | Path | None = None) -> DemoSummary:
    """Run (or resume) the demo `config` describes; its summary (also OUT/demo_summary.json).
    `cache_dir`: where the synthetic faces are cached (default: ctd_train.synthetic's)."""
    console = console or Console(highlight=False)
    config = config.resolved()
    if config.data is not None:
        data = demo_data.user_data(config.data)   # checked before anything is written
    prepare_out(config)
    out = Path(config.out)
    if config.fast:
        console.print(f"[yellow]--fast: a tiny budget that checks every step runs. {config.epochs} epoch(s)"
                      + ("" if config.data else f" on {config.subjects * config.images_per_subject} images")
                      + " learn next to nothing: expect errors near the mean shape and no face found in step 5. "
                      "Run `ctd demo` without --fast for the real thing.[/]")
    t_all = time.perf_counter()
    t0 = _header(console, 1, "data", "The built-in synthetic faces: drawn by a program with exactly known landmarks, "
                 "pixel spacings and 3dMD-style OBJ captures; no real faces, nothing downloaded."
                 if config.data is None else f"Your annotated folder {config.data}, checked with the readers of "
                 "`ctd train`.")
    if config.data is None:
        with console.status("drawing the synthetic faces (first run only; then cached)"):
            data = demo_data.synthetic_data(config, cache_dir)
    console.print(data.description, highlight=False)
    summary = DemoSummary(out=str(out), data={"description": data.description, "train": str(data.train),
                                              "schema": data.schema, "synthetic": data.synthetic})
    summary.seconds["data"] = time.perf_counter() - t0

    runs = _train(config, data, console, summary)
    _compare(config, runs, console, summary)
    export = _export(config, runs, console, summary)
    if not data.synthetic:
        split = json.loads((runs[summary.chosen or config.methods[0]] / "split.json").read_text())
        data.heldout = demo_data.link_heldout(data, split["test"], out)
    _infer(config, data, export.model_path, console, summary)
    _bench(config, export.out_dir, runs[summary.chosen], data.heldout, console, summary)
    summary.seconds["total"] = time.perf_counter() - t_all
    _header(console, 7, "summary", "Every file written, what the numbers mean, and what to run on real data.")
    write_json_atomic(out / SUMMARY_FILE, summary.to_dict())   # listed by written_files
    summary.files = written_files(out)
    write_json_atomic(out / SUMMARY_FILE, summary.to_dict())
    print_summary(summary, console, data.synthetic)
    return summary


def _train(config: DemoConfig, data: demo_data.DemoData, console: Console, summary: DemoSummary) -> dict[str, Path]:
    t0 = _header(console, 2, "train", f"Each method trains a student (the {TEACHER} face-recognition encoder + a "
                 f"deconvolution head) for {config.epochs} epoch(s) with the recipe's settings (TrainConfig), except "
                 f"the learning rates (encoder {config.lr:g}, head {config.lr * config.head_lr_scale:g}: dlib's "
                 "unnormalised encoder blows up at the recipe's 1e-4) and the station model's crop and zoom-out "
                 "augmentation (so that in step 5 it finds the face itself). ft fine-tunes the encoder; ctd-ed also "
                 "keeps its pooled features close to the frozen teacher's (encoder distillation).")
    runs = {}
    for method in config.methods:
        console.print(f"[bold]{method}[/]: runs/{method}", highlight=False)
        runs[method] = steps.train(config, data.train, data.schema, method, console)
    summary.seconds["train"] = time.perf_counter() - t0
    return runs


def _compare(config: DemoConfig, runs: dict[str, Path], console: Console, summary: DemoSummary) -> None:
    t0 = _header(console, 3, "compare", "Both runs on the test split (subjects no training saw), in the paper's "
                 "Table 1 layout, and their CED curves in one plot.")
    comp = steps.compare(config, runs)
    table = Table("Method", "ME +- SD", "FR", "AUC", "mean |PFL error|", "images",
                  title=comp.markdown().splitlines()[0], title_justify="left")
    for method, row in zip(runs, comp.rows()):
        table.add_row(row["method"], f"{row['me']:.4f} +- {row['sd']:.4f}", f"{100 * row['fr']:.2f}%",
                      f"{row['auc']:.3f}", f"{row['pfl_error_mean_abs']:.4f}", str(row["n_images"]))
        summary.methods[method] = {"run_dir": str(runs[method]), "best_val_me_pfl": steps.best_validation(runs[method]),
                                   "test": row}
    console.print(table)
    for kind, path in comp.files.items():
        console.print(f"wrote {path}", highlight=False)
    summary.chosen = steps.choose(runs)
    console.print(f"exported next: {summary.chosen} (the lower best validation error, "
                  f"{summary.methods[summary.chosen]['best_val_me_pfl']:.4f} PFL; chosen on validation, never on test)",
                  highlight=False)
    summary.seconds["compare"] = time.perf_counter() - t0


def _export(config: DemoConfig, runs: dict[str, Path], console: Console, summary: DemoSummary) -> Any:
    t0 = _header(console, 4, "export", "One fused ONNX graph (uint8 image + crop affine in, landmarks out), kept only "
                 "if ONNX Runtime matches PyTorch (the parity gate), then its INT8 variant.")
    result = steps.export(config, runs[summary.chosen], console)
    p = result.parity
    int8 = result.reports.get("int8", {}).get("onnxruntime_vs_fp32", {})
    summary.export = {"model": str(result.model_path), "int8": str(result.artifacts.get("int8", "")),
                      "parity_passed": bool(p.passed), "parity_max_px": float(p.max_px),
                      "parity_mean_px": float(p.mean_px),
                      "parity_tolerance_px": float(p.tolerance_px), "parity_crops": int(p.num_images),
                      "int8_mean_px": int8.get("px_mean"), "int8_max_px": int8.get("px_max")}
    console.print(p.summary(), highlight=False)
    if not p.passed:
        raise CtdError("the parity gate failed: model.onnx was not kept", path=result.out_dir)
    summary.seconds["export"] = time.perf_counter() - t0
    return result


def _infer(config: DemoConfig, data: demo_data.DemoData, model: Path, console: Console, summary: DemoSummary) -> None:
    what = "the 3dMD-style OBJ captures (3D PFL through their UVs)" if data.captures else "no OBJ captures (3D skipped)"
    t0 = _header(console, 5, "infer", f"`ctd infer` with model.onnx on held-out images ({data.heldout}) and {what}: "
                 "the model finds the face itself (coarse-to-fine passes), then PFL in px and mm.")
    images = demo_data.heldout_images(data)
    report = steps.infer(config, model, [data.heldout / "images", *data.captures], console)
    truth = true_pfl_px(images, data.schema)
    texture = {}
    if data.captures_root is not None and data.capture_images:
        root_truth = truth if data.captures_root == data.heldout else true_pfl_px(
            read_annotations(data.captures_root, validate_images=False), data.schema)
        texture = {obj: root_truth.get(str((data.captures_root / "images" / name).resolve()))
                   for obj, name in data.capture_images.items()}
        texture = {k: v for k, v in texture.items() if v is not None}
    errors = pfl_errors(report.results, truth, data.captures_truth, texture)
    summary.infer = errors.to_dict() | {"files": {k: str(v) for k, v in report.files.items()},
                                        "overlays": str(Path(config.out) / steps.INFER_DIR / "overlays")}
    _print_infer(report.results, console)
    summary.seconds["infer"] = time.perf_counter() - t0


def _print_infer(results: list[Any], console: Console) -> None:
    table = Table("capture", "kind", "status", "PFL px", "PFL mm", "PFL 3D mm", "flags",
                  title="held-out captures (first 8)", title_justify="left")
    for r in results[:8]:
        table.add_row(r.name, r.kind, r.status, *(("-" if v is None else f"{v:.2f}") for v in
                                                   (r.pfl_px, r.pfl_mm, r.pfl_3d_mm)),
                      ", ".join(dict.fromkeys(f["code"] for f in r.flags)) or (r.reason or ""))
    console.print(table)


def _bench(config: DemoConfig, export_dir: Path, run_dir: Path, images: Path | None, console: Console,
           summary: DemoSummary) -> None:
    t0 = _header(console, 6, "bench", f"`ctd bench`: ONNX Runtime FP32 and INT8 against the PyTorch eager pipeline, "
                 f"{config.bench_iters} iteration(s) x {config.bench_rounds} round(s) on {config.bench_images} "
                 "held-out image(s), interleaved: the numbers are indicative only.")
    outcome = steps.bench(config, export_dir, run_dir, images)
    console.print(bench_table(outcome.result))
    for path in outcome.files.values():
        console.print(f"wrote {path}", highlight=False)
    summary.bench = {"end_to_end_p50_ms": {name: per_batch["1"]["stages"]["end_to_end"]["p50_ms"]
                                           for name, per_batch in outcome.result["results"].items()},
                     "files": {k: str(v) for k, v in outcome.files.items()}}
    summary.seconds["bench"] = time.perf_counter() - t0


def bench_table(result: dict[str, Any]) -> Table:
    """The bench's few headline columns (bench.json holds every stage and percentile)."""
    table = Table("contender", "end to end p50 ms", "inference p50 ms", "passes", "images/s", "x PyTorch",
                  title=f"batch 1, {result['machine'].get('cpu', '')}, {result['config']['threads']} threads "
                        "(indicative)", title_justify="left")
    for name, per_batch in result["results"].items():
        row = per_batch["1"]
        st = row["stages"]
        ratio = row.get("ratio_vs_baseline", {}).get("end_to_end")
        table.add_row(name, f"{st['end_to_end']['p50_ms']:.1f}", f"{st['inference']['p50_ms']:.1f}",
                      f"{row['passes_mean']:.1f}", f"{row['throughput_images_per_s']:.1f}",
                      "" if ratio is None else f"{ratio:.2f}x")
    return table
