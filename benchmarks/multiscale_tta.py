"""Multi-scale test-time averaging: does averaging a run's landmarks over several face-crop margins
lower its error? Validation decides, test is reported beside it (docs/accuracy.md).

    python benchmarks/multiscale_tta.py runs/cascade/face-s0 runs/cascade/face-s1 runs/cascade/face-s2 \
        --margins 0.15 0.25 0.35 --out benchmarks/results/multiscale_tta

Each run is evaluated on its own validation and test subjects (the run's split) once per margin
(the crop box is the landmarks' square with that margin, as in training), then with the per-image
mean and median of those predictions in source pixels. Prints a table and writes JSON + Markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--margins", nargs="+", type=float, default=[0.15, 0.25, 0.35])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "multiscale_tta")
    return ap.parse_args(argv)


def score(pred: np.ndarray, gt: np.ndarray, pair: tuple[int, int]) -> dict[str, float]:
    """ME (fraction of true PFL) and mean |PFL error| (fraction of true PFL), per ctd_runtime.metrics."""
    from ctd_runtime.metrics import evaluate_landmarks

    ev = evaluate_landmarks(pred, gt, "pfl", 0.1, pair)
    return {"me": float(ev.per_image.mean()), "pfl_error": float(ev.pfl_error_mean_abs)}


def evaluate(run_dir: Path, margins: list[float]) -> dict[str, dict[str, dict[str, float]]]:
    from ctd_train.checkpoint import load_run
    from ctd_train.config import TrainConfig, split_indices
    from ctd_train.data.annotations import read_annotations
    from ctd_train.data.dataset import LandmarkCropDataset
    from ctd_train.evaluate import predict_crops

    run = load_run(run_dir)
    cfg = TrainConfig.from_dict(run.config, where=run.checkpoint_path)
    if cfg.final_fit:
        raise SystemExit(f"{run_dir} is a final fit (--val-subjects 0): it has no validation split to choose on")
    images = read_annotations(cfg.data, validate_images=False)
    splits = split_indices(images.subjects, cfg)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split in ("val", "test"):
        preds, gt = {}, None
        for m in margins:
            ds = LandmarkCropDataset(images, splits[split], run.schema, run.normalization, run.codec, augment=None,
                                     margin=m, seed=cfg.seed, crop=cfg.crop, crop_scale=cfg.crop_scale)
            p = predict_crops(run.predictor, ds, run.codec, run.decode)
            preds[f"margin {m:g}"] = p.pred
            gt = run.schema.select(images.points[p.indices])
        stack = np.stack(list(preds.values()))
        preds["mean of margins"] = stack.mean(0)
        preds["median of margins"] = np.median(stack, 0)
        out[split] = {k: score(v, gt, run.schema.pfl_pair) for k, v in preds.items()}
    return out


def markdown(results: dict[str, dict]) -> str:
    variants = list(next(iter(results.values()))["val"])
    lines = ["| variant | val ME | val PFL error | test ME | test PFL error |", "|---|---|---|---|---|"]
    for v in variants:
        cells = []
        for split in ("val", "test"):
            for key in ("me", "pfl_error"):
                vals = [r[split][v][key] for r in results.values()]
                cells.append(f"{np.mean(vals):.4f} ({', '.join(f'{x:.4f}' for x in vals)})")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nMeans over the runs, each run's value in brackets.\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    from ctd_runtime.machine import describe_machine

    from _results import publish

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    results = {str(r): evaluate(r, args.margins) for r in args.runs}
    publish(args.out, {"machine": describe_machine(), "margins": args.margins, "runs": results}, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
