"""Station models: the accuracy and size side of the speed/accuracy curve of smaller students
(narrower head, smaller input, trained by ft or by kd from a trained run), FP32 and INT8.

    python benchmarks/station_models.py runs/station-models/* runs/cascade/face-s0

For each run folder: export it (model.onnx and model.int8.onnx, by ctd_export.onnx_export.export_run,
into EXPORTS/<run name>; an export already complete for the same run is kept, a partial one is
completed), evaluate its checkpoint on its own test split (ctd_train.evaluate, PyTorch FP32), run
both ONNX files through ONNX Runtime on the same test crops, and count the graph's MACs
(ctd_export/flops.py). Writes benchmarks/results/station_models.{json,md}: per run and precision,
test ME and mean |PFL error| (fractions of the true PFL), ME in px, the largest landmark difference
against FP32, MACs. Nothing is timed here: time per image comes from `ctd bench` on the exported
models (the command is printed and written into the .md), run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ctd_runtime.atomic import write_json_atomic, write_text_atomic  # noqa: E402
from ctd_runtime.machine import describe_machine  # noqa: E402
from ctd_runtime.metrics import evaluate_landmarks  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
PRECISION_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="Run folders (e.g. runs/station-models/*).")
    ap.add_argument("--exports", type=Path, default=REPO / "runs" / "station-exports",
                    help="Export folders go to EXPORTS/<run folder name>.")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (torch and ONNX Runtime; the CPU is shared).")
    ap.add_argument("--calib-images", type=int, default=64, help="Training images of the INT8 calibration.")
    ap.add_argument("--max-images", type=int, default=16, help="Crops of the export's parity gate.")
    ap.add_argument("--split", default="test", help="The runs' split to evaluate on.")
    ap.add_argument("--out-dir", type=Path, default=RESULTS)
    ap.add_argument("--name", default="station_models", help="Results are NAME.json and NAME.md.")
    return ap.parse_args(argv)


# ------------------------------------------------------------------------------ export


def export_config_complete(out: Path, run_id: str, calib_images: int) -> bool:
    """Whether OUT holds a complete export of run `run_id` with both ONNX files (kept as it is)."""
    path = out / "export_config.json"
    if not path.is_file():
        return False
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    options = cfg.get("options", {})
    return (bool(cfg.get("complete")) and cfg.get("run_id") == run_id
            and set(PRECISION_FILES.values()) <= set(cfg.get("artifacts", {}).values())
            and options.get("calibration_images") == calib_images
            and all((out / f).is_file() for f in PRECISION_FILES.values()))


def export(run: Any, out: Path, args: argparse.Namespace) -> str:
    """Export the loaded run into `out` (FP32 + INT8) unless a complete export is there;
    "kept" or "exported"."""
    from ctd_export.onnx_export import ExportOptions, export_loaded_run

    if export_config_complete(out, run.run_id, args.calib_images):
        return "kept"
    options = ExportOptions(precisions=("fp32", "int8"), threads=args.threads, max_images=args.max_images,
                            calibration_images=args.calib_images)
    out.mkdir(parents=True, exist_ok=True)
    export_loaded_run(run, out, options, log=lambda line: print(f"  {line}", flush=True))
    return "exported"


# ------------------------------------------------------------------------------ accuracy


@dataclass
class TestCrops:
    """The run's test images with their crops as its evaluation made them, and the truth."""

    samples: list[tuple[np.ndarray, np.ndarray]]   # (image [1, H, W, 3], crop affine [1, 2, 3])
    gt: np.ndarray                                  # [N, K, 2] source px
    pfl_pair: tuple[int, int]
    image_size: tuple[int, int]                     # (H, W) of the first image, for the MAC count


def scores(pred: np.ndarray, gt: np.ndarray, pfl_pair: tuple[int, int]) -> dict[str, float]:
    """Test ME and mean |PFL error| as fractions of the true PFL, ME in px."""
    from ctd_train.evaluate import DEFAULT_THRESHOLD

    pfl = evaluate_landmarks(pred, gt, "pfl", DEFAULT_THRESHOLD, pfl_pair)
    px = evaluate_landmarks(pred, gt, "px", 1.0, pfl_pair)
    return {"me_pfl": pfl.summary.me, "sd_pfl": pfl.summary.sd, "pfl_error": pfl.pfl_error_mean_abs,
            "fr_pfl": pfl.summary.fr, "me_px": px.summary.me, "pfl_error_px": px.pfl_error_mean_abs}


def torch_evaluation(run: Any, split: str) -> tuple[dict[str, Any], TestCrops]:
    """The checkpoint on the run's split (ctd_train.evaluate, nothing written) and its crops."""
    from ctd_train.data.annotations import read_annotations
    from ctd_train.evaluate import evaluate_loaded

    report = evaluate_loaded(run, split=split, write=False)
    images = read_annotations(report.data, validate_images=False)
    index = {n: i for i, n in enumerate(images.image_names)}
    samples = []
    for name, affine in zip(report.image_names, report.affines):
        image = images.load_image(index[name])
        samples.append((np.ascontiguousarray(image[None]), np.asarray(affine, np.float32)[None]))
    crops = TestCrops(samples=samples, gt=report.gt, pfl_pair=tuple(report.pfl_pair),
                      image_size=tuple(samples[0][0].shape[1:3]))
    row = {"precision": "torch fp32", "n_images": report.n_images, "decode": report.decode,
           **scores(report.pred, report.gt, crops.pfl_pair)}
    return row, crops


def onnx_rows(export_dir: Path, crops: TestCrops, threads: int) -> list[dict[str, Any]]:
    """Each ONNX file on the test crops through ONNX Runtime: scores, landmark differences
    against FP32, MACs."""
    from ctd_export.flops import count_macs
    from ctd_export.precision_compare import landmark_differences, run_samples

    outputs = {p: run_samples(export_dir / f, crops.samples, threads=threads) for p, f in PRECISION_FILES.items()}
    h, w = crops.image_size
    rows = []
    for precision, (landmarks, sc) in outputs.items():
        macs = count_macs(export_dir / PRECISION_FILES[precision], {"image": [1, h, w, 3], "crop": [1, 2, 3]})
        diff = landmark_differences(outputs["fp32"], (landmarks, sc))
        rows.append({"precision": precision, "model": str(export_dir / PRECISION_FILES[precision]),
                     "n_images": int(landmarks.shape[0]), **scores(landmarks, crops.gt, crops.pfl_pair),
                     "max_diff_vs_fp32_px": diff.px_max, "gmacs": macs.macs / 1e9,
                     "macs_unknown_nodes": len(macs.unknown_nodes)})
    return rows


# ------------------------------------------------------------------------------ one run


def describe_run(run: Any) -> dict[str, Any]:
    """What distinguishes a station candidate: method, head, input size, teacher run."""
    config = run.config
    method = config.get("method", {})
    teacher_run = config.get("teacher_run")
    return {"run": str(run.run_dir), "name": Path(run.run_dir).name, "run_id": run.run_id, "epoch": run.epoch,
            "method": method.get("name"), "head_channels": method.get("head_channels"),
            "input_size": run.input_size, "teacher": config.get("teacher"), "data": config.get("data"),
            "teacher_run": None if teacher_run is None else Path(teacher_run).name,
            "parameters": int(sum(p.numel() for p in run.predictor.parameters()))}


def measure_run(run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    from ctd_train.checkpoint import load_run

    run = load_run(run_dir)
    info = describe_run(run)
    out = args.exports / Path(run.run_dir).name
    print(f"{info['name']}: {info['method']}, head {info['head_channels']}, input {info['input_size']}", flush=True)
    info["export"] = {"dir": str(out), "status": export(run, out, args)}
    torch_row, crops = torch_evaluation(run, args.split)
    info["rows"] = [torch_row] + onnx_rows(out, crops, args.threads)
    return info


# ------------------------------------------------------------------------------ the table


def markdown(results: list[dict[str, Any]], machine: dict[str, Any], split: str) -> str:
    head = ("| run | method | head | input | teacher run | precision | GMAC | test ME (PFL) | mean abs PFL error "
            "| ME (px) | max diff vs FP32 (px) | images |")
    lines = [
        "# Station models: accuracy and size (time per image: `ctd bench`, below)", "",
        f"{split} split of each run; errors as fractions of the true PFL unless px; ONNX Runtime CPU for the "
        f"ONNX files, the PyTorch checkpoint for torch fp32. Machine: {machine.get('cpu')}, "
        f"{machine.get('cores')} cores; written by `benchmarks/station_models.py`.", "",
        head, "|" + "---|" * head.count(" | ") + "---|",
    ]
    for r in results:
        for row in r["rows"]:
            gmac = f"{row['gmacs']:.4g}" if "gmacs" in row else ""
            diff = f"{row['max_diff_vs_fp32_px']:.3f}" if "max_diff_vs_fp32_px" in row else ""
            lines.append(
                f"| {r['name']} | {r['method']} | {r['head_channels']} | {r['input_size']} | {r['teacher_run'] or '-'} "
                f"| {row['precision']} | {gmac} | {row['me_pfl']:.4f} | {100 * row['pfl_error']:.2f}% "
                f"| {row['me_px']:.3f} | {diff} | {row['n_images']} |")
    exports = " ".join(r["export"]["dir"] for r in results)
    data = sorted({r["data"] for r in results})
    lines += ["", "Time per image, on a quiet machine (interleaved, every contender in one run):", "",
              f"    ctd bench {exports} --images {' '.join(data)} --threads {machine.get('cores')}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    results = [measure_run(r, args) for r in args.runs]
    machine = describe_machine(threads=args.threads)
    doc = {"machine": machine, "split": args.split, "runs": results}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out_dir / f"{args.name}.json", doc)
    text = markdown(results, machine, args.split)
    write_text_atomic(args.out_dir / f"{args.name}.md", text + "\n")
    print(text)
    return doc


if __name__ == "__main__":
    main()
