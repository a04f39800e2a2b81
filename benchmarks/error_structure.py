"""Where a run's PFL error comes from: the same answer for every capture of a subject (a per-subject
bias, which more training subjects or a better model would shrink), the spread around it within a
subject, and the annotation's own noise, which no model can remove (docs/accuracy.md).

    python benchmarks/error_structure.py runs/recipe-study/face-s0 [more runs] --out benchmarks/results/error_structure

Per test image, e = (PFL_pred - PFL_true) / PFL_true. Reported as root mean squares (they add):
total, between subjects (each subject's mean e over its images) and within (e minus its subject's
mean). The annotation's per-capture noise comes from the pairs of captures of one face in one pose
(IMM image types 1 and 5): if both annotations scatter independently about the same true PFL,
their relative difference has RMS sqrt(2) x the noise of one. The model's own difference over the
same pairs is printed beside it. Then "what the metric would be with perfect landmarks": the
annotation noise alone, as RMS and as the mean |error| of a normal with that RMS.

Last, how much of the individual variation of eye size the model sees: the relative PFL (PFL over
the face's scale, the RMS distance of the landmarks from their centroid, each from its own points)
predicted against the annotated one, their correlation and slope. A slope well below 1 is a model
that leans on the average face: it gets the face's size right and shrinks each eye towards the mean.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from _results import publish
from cascade import image_types


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--split", default="test")
    p.add_argument("--pair", nargs=2, default=["1", "5"], metavar=("TYPE_A", "TYPE_B"),
                   help="image types that are two captures of one pose")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "error_structure")
    return p.parse_args(argv)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else float("nan")


def decompose(signed: np.ndarray, subjects: list[str]) -> dict[str, float]:
    """Total, between-subject and within-subject RMS of the signed relative errors
    (total^2 = between^2 + within^2 when every subject has the same number of images)."""
    signed = np.asarray(signed, dtype=np.float64)
    subj = np.asarray(subjects)
    means = {s: float(signed[subj == s].mean()) for s in dict.fromkeys(subjects)}
    bias = np.array([means[s] for s in subjects])
    return {"mean_abs": float(np.mean(np.abs(signed))), "total_rms": rms(signed),
            "between_subject_rms": rms(np.array(list(means.values()))), "within_subject_rms": rms(signed - bias),
            "n_images": int(len(signed)), "n_subjects": len(means)}


def pair_noise(pred_pfl: np.ndarray, true_pfl: np.ndarray, subjects: list[str], types: list[str],
               a: str, b: str) -> dict[str, Any]:
    """Relative PFL differences between the two captures of each subject, for the annotation and
    for the model, and the per-capture annotation noise they imply."""
    from ctd_runtime.repeatability import pairs_of_values

    pairs = pairs_of_values(subjects, types, a, b)
    if not pairs:
        return {"n_pairs": 0}
    i, j = np.array(pairs).T

    def rel(x: np.ndarray) -> np.ndarray:
        return (x[j] - x[i]) / ((x[i] + x[j]) / 2)

    truth, model = rel(true_pfl), rel(pred_pfl)
    noise = rms(truth) / math.sqrt(2)
    return {"n_pairs": len(pairs), "annotation_diff_rms": rms(truth), "annotation_diff_mean_abs": float(np.mean(np.abs(truth))),
            "model_diff_rms": rms(model), "model_diff_mean_abs": float(np.mean(np.abs(model))),
            "annotation_noise_rms": noise, "floor_mean_abs_if_normal": noise * math.sqrt(2 / math.pi)}


def face_scale(points: np.ndarray) -> np.ndarray:
    """RMS distance of each image's landmarks from their centroid, [N]."""
    p = np.asarray(points, dtype=np.float64)
    return np.sqrt(np.mean(np.sum((p - p.mean(axis=1, keepdims=True)) ** 2, axis=-1), axis=1))


def relative_pfl_fit(pred: np.ndarray, gt: np.ndarray, pair: tuple[int, int]) -> dict[str, float]:
    """Correlation and least-squares slope of predicted on annotated PFL / face scale, and the sd of each."""
    from ctd_runtime.metrics import pfl

    rp, rt = pfl(pred, pair) / face_scale(pred), pfl(gt, pair) / face_scale(gt)
    slope = float(np.polyfit(rt, rp, 1)[0]) if len(rt) > 1 else float("nan")
    corr = float(np.corrcoef(rt, rp)[0, 1]) if len(rt) > 1 else float("nan")
    return {"correlation": corr, "slope": slope, "sd_true": float(np.std(rt / rt.mean())),
            "sd_pred": float(np.std(rp / rp.mean()))}


def run_structure(run: Path, split: str, pair: tuple[str, str]) -> dict[str, Any]:
    from ctd_runtime.metrics import pfl
    from ctd_train.evaluate import evaluate_run

    r = evaluate_run(run, split=split, write=False)
    types = image_types(Path(r.data), list(r.image_names))
    pred_pfl, true_pfl = pfl(r.pred, r.pfl_pair), pfl(r.gt, r.pfl_pair)
    signed = np.asarray(r.evaluations["pfl"].pfl_error_signed, dtype=np.float64)   # fraction of the true PFL
    by_type = {t: float(np.mean(np.abs(signed[np.asarray(types) == t]))) for t in sorted(set(types))}
    return {"run": str(run), "errors": decompose(signed, list(r.subjects)),
            "pairs": pair_noise(pred_pfl, true_pfl, list(r.subjects), types, *pair), "mean_abs_by_type": by_type,
            "relative_pfl": relative_pfl_fit(r.pred, r.gt, r.pfl_pair)}


def markdown(rows: list[dict[str, Any]], pair: tuple[str, str]) -> str:
    pct = lambda x: "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"  # noqa: E731
    lines = ["| run | mean abs PFL error | RMS total | between subjects | within subjects | "
             f"annotation noise per capture (types {pair[0]}/{pair[1]}) | annotation diff | model diff | floor (mean abs) | "
             "relative PFL: correlation / slope |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e, p = r["errors"], r["pairs"]
        lines.append(f"| {Path(r['run']).name} | {pct(e['mean_abs'])} | {pct(e['total_rms'])} | {pct(e['between_subject_rms'])} | "
                     f"{pct(e['within_subject_rms'])} | {pct(p.get('annotation_noise_rms'))} | "
                     f"{pct(p.get('annotation_diff_rms'))} | {pct(p.get('model_diff_rms'))} | "
                     f"{pct(p.get('floor_mean_abs_if_normal'))} | "
                     f"{r['relative_pfl']['correlation']:.2f} / {r['relative_pfl']['slope']:.2f} |")
    return "\n".join(lines) + "\n\nRoot mean squares of the signed relative PFL error; diffs are RMS over the pairs.\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    from ctd_runtime.machine import describe_machine

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    pair = (args.pair[0], args.pair[1])
    rows = [run_structure(r, args.split, pair) for r in args.runs]
    publish(args.out, {"machine": describe_machine(), "split": args.split, "pair": list(pair), "runs": rows},
            markdown(rows, pair))
    return 0


if __name__ == "__main__":
    sys.exit(main())
