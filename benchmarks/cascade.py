"""The PFL recipe with every training subject: a face model alone, and the face model followed by
the eye refinement stage (ctd_train.cascade), on the test subjects of several seeds.

Per seed, the face variant and the eye variant train into `OUT/<name>-s<seed>` (resumable; the
same subject split for both, so the eye model never sees a test subject); the test images are
then measured through the face model alone and through the cascade, whose eye crop comes from the
face model's own corners. Every number is also given per image type (IMM's metadata.csv) and as
the test-retest PFL difference between types 1 and 5 of each subject.

    python benchmarks/cascade.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ctd_runtime.machine import cpu_model, usable_cores

from _variants import add_run_args, parse_variant, train_unless_finished, variant_config

FACE = "face:method=ft,epochs=30"
EYE = "eye:method=ft,epochs=30,schema=imm-eye,crop=pfl,crop_scale=2.5,shift=0.05,scale=0.15,rotation=10"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--face", default=FACE, help="face-model variant (default %(default)s)")
    p.add_argument("--eye", default=EYE, help="eye-model variant (default %(default)s)")
    p.add_argument("--iterations", type=int, default=1, help="refinement passes")
    p.add_argument("--no-refine", action="store_true", help="train and measure the face model only")
    add_run_args(p, epochs=30, train_subjects=0, out="runs/cascade", name="cascade")
    args = p.parse_args(argv)
    args.train_subjects = args.train_subjects or None
    return args


def image_types(data: Path, names: list[str]) -> list[str]:
    """IMM's image type (1-6) of each image from metadata.csv ('?' for every image where absent)."""
    from ctd_runtime.repeatability import read_column

    path = data / "metadata.csv"
    return read_column(path, "image_type", names) if path.exists() else ["?"] * len(names)


def stage_result(pred: np.ndarray, gt: np.ndarray, subjects: list[str], types: list[str],
                 pair: tuple[int, int]) -> tuple[dict[str, Any], float | None]:
    """One stage's PFL numbers (ctd_runtime.metrics and .repeatability) and the annotation's
    test-retest over the same type-1 / type-5 pairs."""
    from ctd_runtime.metrics import evaluate_landmarks
    from ctd_runtime.repeatability import grouped_report

    ev = evaluate_landmarks(pred, gt, "pfl", 0.1, pair)
    err = np.asarray(ev.pfl_error_signed, dtype=np.float64)
    g = grouped_report(pred, gt, types, subjects, pair, "image_type", ("1", "5"))
    corners = np.linalg.norm(pred[:, list(pair)] - gt[:, list(pair)], axis=-1)
    some = g.retest_pred.n_pairs > 0
    return {
        "pfl_abs": float(np.mean(np.abs(err))), "pfl_signed": float(np.mean(err)), "corner_px": float(corners.mean()),
        "me": float(np.mean(ev.per_image)),
        "retest": g.retest_pred.mean if some else None,
        "per_type": {v.value: v.pfl_abs for v in g.by_value},
        "per_image_pfl_abs": [float(x) for x in np.abs(err)],
    }, (g.retest_truth.mean if some else None)


def seed_result(args: argparse.Namespace, face_dir: Path, eye_dir: Path | None) -> dict[str, Any]:
    from ctd_train.cascade import evaluate_cascade
    from ctd_train.evaluate import evaluate_run

    if eye_dir is None:
        first, refined, summary = evaluate_run(face_dir, split="test", decode=args.decode, write=False), None, {}
    else:
        report = evaluate_cascade(face_dir, eye_dir, split="test", decode=args.decode, iterations=args.iterations)
        first, refined, summary = report.first, report.refined_pred, report.summary()
    pair = first.pfl_pair
    types = image_types(Path(first.data), first.image_names)
    out: dict[str, Any] = {"summary": summary, "images": first.image_names, "types": types}
    stages = [("first_stage", first.pred)] + ([("cascade", refined)] if refined is not None else [])
    for label, pred in stages:
        out[label], out["annotator_retest"] = stage_result(pred, first.gt, first.subjects, types, pair)
    return out


def markdown(meta: dict[str, Any], seeds: dict[int, dict[str, Any]]) -> str:
    def mean_sd(key: str, stage: str, scale: float = 100.0, fmt: str = ".2f") -> str:
        vals = [r[stage][key] for r in seeds.values() if r[stage][key] is not None]
        return f"{scale * np.mean(vals):{fmt}} ± {scale * np.std(vals):{fmt}}" if vals else "—"

    lines = [
        f"# {meta['name']}: face model alone vs face model + eye refinement",
        "",
        f"- machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores; seeds {meta['seeds']}; decode {meta['decode']}",
        f"- face `{meta['face']}`; eye `{meta['eye']}`; lr {meta['lr']:g}; {meta['iterations']} refinement pass(es)",
        f"- per seed {meta['train_subjects'] or 'every remaining'} training, {meta['val_subjects']} validation, "
        f"{meta['test_subjects']} test subjects; ground-truth face box for the first stage",
        "- mean ± sd over seeds; PFL errors as % of the true PFL; test-retest = mean |PFL(type 1) - PFL(type 5)| / PFL",
        "",
        "| stage | mean abs PFL error | signed PFL error | eye-corner error (px) | test-retest |",
        "|---|---|---|---|---|",
    ]
    refined = all("cascade" in r for r in seeds.values())
    for stage, label in (("first_stage", "face model alone"), ("cascade", "+ eye refinement"))[: 2 if refined else 1]:
        lines.append(f"| {label} | {mean_sd('pfl_abs', stage)}% | {mean_sd('pfl_signed', stage)}% | "
                     f"{mean_sd('corner_px', stage, 1.0, '.2f')} | {mean_sd('retest', stage)}% |")
    ann = [r["annotator_retest"] for r in seeds.values() if r["annotator_retest"] is not None]
    if ann:
        lines.append(f"| annotators (ground truth) | — | — | — | {100 * np.mean(ann):.2f}% |")
    lines.append("")
    if refined:
        paired = [np.mean(np.asarray(r["cascade"]["per_image_pfl_abs"]) - np.asarray(r["first_stage"]["per_image_pfl_abs"]))
                  for r in seeds.values()]
        lines += [f"Paired (cascade - face alone) mean abs PFL error per seed: "
                  f"{', '.join(f'{100 * d:+.2f}%' for d in paired)}; mean {100 * np.mean(paired):+.2f}% "
                  f"± {100 * np.std(paired):.2f}%.", ""]
    stage = "cascade" if refined else "first_stage"
    types = sorted({t for r in seeds.values() for t in r[stage]["per_type"]})
    lines += [f"Mean abs PFL error by IMM image type ({'cascade; face alone in brackets' if refined else 'face model'}):",
              "", "| " + " | ".join(f"type {t}" for t in types) + " |", "|" + "---|" * len(types)]
    cells = []
    for t in types:
        f = [r["first_stage"]["per_type"].get(t) for r in seeds.values()]
        face = f"{100 * np.mean([x for x in f if x is not None]):.2f}%"
        if refined:
            c = [r["cascade"]["per_type"].get(t) for r in seeds.values()]
            face = f"{100 * np.mean([x for x in c if x is not None]):.2f}% ({face})"
        cells.append(face)
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rich.console import Console

    from ctd_runtime.atomic import write_json_atomic, write_text_atomic
    from ctd_runtime.errors import CtdError

    console = Console(stderr=True, width=160)
    t0 = time.perf_counter()
    try:
        face_name, face_values = parse_variant(args.face)
        eye_name, eye_values = parse_variant(args.eye)
        seeds: dict[int, dict[str, Any]] = {}
        for seed in args.seeds:
            face_dir = train_unless_finished(variant_config(args, face_name, face_values, seed), console,
                                             not args.no_progress)
            eye_dir = None if args.no_refine else train_unless_finished(
                variant_config(args, eye_name, eye_values, seed), console, not args.no_progress)
            seeds[seed] = seed_result(args, face_dir, eye_dir)
    except (CtdError, ValueError) as e:
        console.print(f"[bold red]error:[/] {e}")
        return 2
    meta = {"name": args.name, "machine": {"cpu": cpu_model(), "cores": usable_cores()}, "face": args.face,
            "eye": args.eye, "seeds": args.seeds, "decode": args.decode, "lr": args.lr, "iterations": args.iterations,
            "train_subjects": args.train_subjects, "val_subjects": args.val_subjects,
            "test_subjects": args.test_subjects, "wall_time_s": time.perf_counter() - t0}
    args.results.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.results / f"{args.name}.json", {"meta": meta, "seeds": {str(k): v for k, v in seeds.items()}})
    text = markdown(meta, seeds)
    write_text_atomic(args.results / f"{args.name}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
