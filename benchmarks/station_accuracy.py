"""Station accuracy and speed: PFL from whole photographs (the automatic face box) against the same
exported model given the ground-truth box, on a run's test subjects; and the end-to-end time per
image of `ctd infer`.

    python benchmarks/station_accuracy.py --model /tmp/ctd_station/export/model.onnx --run runs/sweep/ft-s0

For every test image of the run's split.json: the Landmarker with the ground-truth box (the
bounding box of the points the training crop rule uses: all 58 IMM points for rule "face"), and
without a box (coarse-to-fine passes from the whole photograph). Reported: PFL error (|predicted -
true|) in px and as a fraction of the true PFL for both, ME, how many faces were found, and how
often pass 2 (and the final pass) of the automatic search gives a PFL within 0.1 true-PFL of the
ground-truth-box PFL. Rule "face" models cannot rebuild their crop from their own landmarks; the
search uses a face-from-schema fit: row auto_train_fit fits it on the run's training images only
(no test subject seen); row auto_builtin_fit uses the built-in fit (measured on all IMM
annotations, test subjects included).

The `ctd infer` timing runs the real command on the test images (a fresh process: startup counted
once, then per image), and also reports the per-capture total_s it writes. Runs only ONNX Runtime
(no torch). Writes benchmarks/results/station_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ctd_runtime.annotations import read_annotations  # noqa: E402
from ctd_runtime.crop_rule import FaceFromSchema, face_fit_for  # noqa: E402
from ctd_runtime.landmarker import Landmarker, LandmarkerOptions  # noqa: E402
from ctd_runtime.machine import describe_machine  # noqa: E402
from ctd_runtime.metrics import pfl  # noqa: E402
from ctd_runtime.station_eval import ground_truth_box  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
AGREE = 0.10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="Exported model.onnx of the run.")
    ap.add_argument("--run", type=Path, required=True, help="The run folder (its split.json names the test images).")
    ap.add_argument("--data", type=Path, default=None, help="Data folder (default: the run's config data).")
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (the CPU is shared).")
    ap.add_argument("--timing-images", type=int, default=20, help="Images for the ctd infer timing.")
    ap.add_argument("--out", type=Path, default=RESULTS / "station_accuracy.json")
    return ap.parse_args(argv)


def load_split(args: argparse.Namespace) -> tuple[Any, list[int], list[int]]:
    """(annotations, test indices, train indices)."""
    config = json.loads((args.run / "config.json").read_text())
    data = args.data or Path(config["data"])
    images = read_annotations(data, validate_images=False)
    split = json.loads((args.run / "split.json").read_text())
    index = {n: i for i, n in enumerate(images.image_names)}
    return images, [index[n] for n in split[args.split]], [index[n] for n in split["train"]]


def predict(lm: Landmarker, images: Any, idx: list[int], gt: np.ndarray, use_box: bool) -> dict[str, Any]:
    """Final landmarks [N, K, 2] (NaN where not found), pass-2 landmarks, found, passes, seconds."""
    n, k = len(idx), gt.shape[1]
    final, second = np.full((n, k, 2), np.nan), np.full((n, k, 2), np.nan)
    found, passes = np.zeros(n, bool), np.zeros(n, int)
    t0 = time.perf_counter()
    for j, i in enumerate(idx):
        box = ground_truth_box(lm.crop_spec.rule, images.points[i], gt[j], lm.schema.pfl_pair) if use_box else None
        det = lm.detect(images.load_image(i), box)
        found[j], passes[j] = det.found, len(det.passes)
        if det.found:
            final[j] = det.landmarks
        if len(det.passes) > 1:
            second[j] = det.passes[1].landmarks
    return {"final": final, "second": second, "found": found, "passes": passes,
            "seconds_per_image": (time.perf_counter() - t0) / n}


def pfl_stats(pred: np.ndarray, gt: np.ndarray, pair: tuple[int, int]) -> dict[str, float]:
    true = pfl(gt, pair)
    err = np.abs(pfl(pred, pair) - true)
    ok = np.isfinite(err)
    me = np.linalg.norm(pred - gt, axis=-1).mean(-1)
    return {"n": int(ok.sum()), "pfl_error_px": float(np.mean(err[ok])), "pfl_error_frac": float(np.mean(err[ok] / true[ok])),
            "pfl_error_frac_median": float(np.median(err[ok] / true[ok])), "me_px": float(np.mean(me[ok])),
            "me_pfl": float(np.mean(me[ok] / true[ok]))}


def agreement(pred: np.ndarray, ref: np.ndarray, gt: np.ndarray, pair: tuple[int, int]) -> float:
    """Fraction of images whose PFL is within AGREE true-PFL of the reference's (NaN: a miss)."""
    d = np.abs(pfl(pred, pair) - pfl(ref, pair)) / pfl(gt, pair)
    return float(np.mean(d <= AGREE))


def time_infer(model: Path, paths: list[Path], threads: int) -> dict[str, float]:
    """Wall time of `ctd infer` on 1 image and on all, and the median per-capture total_s it writes."""
    def run(files: list[Path], out: Path) -> float:
        cmd = [sys.executable, "-c", "from ctd_runtime.cli import main; main()", "infer", str(model),
               *map(str, files), "--out", str(out), "--threads", str(threads)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        one = run(paths[:1], Path(tmp) / "one")
        many = run(paths, Path(tmp) / "many")
        totals = [json.loads(line)["timings"]["total_s"] for line in (Path(tmp) / "many" / "results.jsonl").open()]
    return {"images": len(paths), "wall_1_image_s": one, "wall_all_s": many,
            "per_image_s": (many - one) / max(len(paths) - 1, 1), "capture_total_s_median": float(np.median(totals))}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    images, test, train = load_split(args)
    runs: dict[str, dict[str, Any]] = {}
    with Landmarker(args.model, LandmarkerOptions(threads=args.threads)) as lm:
        schema, pair = lm.schema, lm.schema.pfl_pair
        gt = schema.select(images.points[test])
        train_fit = FaceFromSchema.fit(schema.select(images.points[train]), images.points[train])
        runs["gt_box"] = predict(lm, images, test, gt, use_box=True)
        runs["auto_train_fit"] = predict(Landmarker(lm.backend, LandmarkerOptions(face_fit=train_fit)), images, test, gt, False)
        runs["auto_builtin_fit"] = predict(lm, images, test, gt, use_box=False)
        crop = lm.crop_spec
    ref = runs["gt_box"]["final"]
    rows = {}
    for name, r in runs.items():
        rows[name] = {**pfl_stats(r["final"], gt, pair), "found": int(r["found"].sum()), "images": len(test),
                      "mean_passes": float(r["passes"].mean()), "seconds_per_image": r["seconds_per_image"]}
        if name != "gt_box":
            rows[name]["final_within_0.1pfl_of_gt_box"] = agreement(r["final"], ref, gt, pair)
            rows[name]["pass2_within_0.1pfl_of_gt_box"] = agreement(r["second"], ref, gt, pair)
    timing = time_infer(args.model, [images.image_paths[i] for i in test[: args.timing_images]], args.threads)
    result = {
        "machine": describe_machine(threads=args.threads),
        "model": str(args.model), "run": str(args.run), "split": args.split, "crop_rule": crop.rule,
        "face_fit": {"builtin": face_fit_for(schema).__dict__, "train": train_fit.__dict__},
        "rows": rows, "ctd_infer": timing,
    }
    print_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=list) + "\n")
    print(f"wrote {args.out}")
    return result


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"station accuracy: {result['split']} subjects, {result['rows']['gt_box']['images']} images "
                    f"(crop rule {result['crop_rule']})")
    for col in ("box", "found", "PFL err px", "PFL err / PFL", "median", "ME px", "ME / PFL", "passes",
                "final within 0.1 PFL of gt box", "pass 2 within", "s / image"):
        t.add_column(col, justify="left" if col == "box" else "right")
    for name, r in result["rows"].items():
        t.add_row(name, f"{r['found']}/{r['images']}", f"{r['pfl_error_px']:.2f}", f"{r['pfl_error_frac']:.4f}",
                  f"{r['pfl_error_frac_median']:.4f}", f"{r['me_px']:.2f}", f"{r['me_pfl']:.4f}", f"{r['mean_passes']:.2f}",
                  f"{100 * r['final_within_0.1pfl_of_gt_box']:.1f}%" if "final_within_0.1pfl_of_gt_box" in r else "-",
                  f"{100 * r['pass2_within_0.1pfl_of_gt_box']:.1f}%" if "pass2_within_0.1pfl_of_gt_box" in r else "-",
                  f"{r['seconds_per_image']:.3f}")
    console = Console(width=160)
    console.print(t)
    ti = result["ctd_infer"]
    console.print(f"ctd infer, {ti['images']} images: {ti['per_image_s']:.3f} s per image end to end "
                  f"(process start + first image {ti['wall_1_image_s']:.2f} s; per-capture total_s median "
                  f"{ti['capture_total_s_median']:.3f} s); machine: {result['machine']['cpu']}, "
                  f"{result['machine']['cores']} cores, {result['machine']['threads']} ORT thread(s)")


if __name__ == "__main__":
    main()
