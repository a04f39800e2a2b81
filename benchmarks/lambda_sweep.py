"""Distillation weights chosen on validation, never on test: a grid of training variants over
seeds, each compared with a baseline (plain fine-tuning) image by image on the same test images.

A variant is `NAME:key=value,key=value` (keys: benchmarks/_variants.py), e.g.

`ft:method=ft` or `ed-pool:method=ctd-ed,lambda=0.002,reduction=simplebaseline,ed=pooled`.
Every (variant, seed) trains into `OUT/<variant>-s<seed>`; a finished run is skipped and an
interrupted one resumes, so the sweep can be stopped and restarted and widened later.

The choice is made by the mean over seeds of each run's best validation error (the number that
picked its checkpoint); test numbers are reported beside it but never used to choose. The paired
comparison takes, per seed, the per-image test errors of the variant minus the baseline's (the
same images) and reports their mean over seeds with the spread of the per-seed means.

    python benchmarks/lambda_sweep.py --seeds 0 --variants ft:method=ft ed:method=ctd-ed,lambda=0.002,reduction=simplebaseline
    python benchmarks/lambda_sweep.py --seeds 0 1 2 --variants ... --name confirm   # the few best, three seeds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ctd_runtime.machine import cpu_model, usable_cores

from _variants import add_run_args, history, parse_variant, train_unless_finished, variant_config

def run_summary(run: Path, decode: str) -> dict[str, Any]:
    """Best validation error, the test evaluation and per-image test errors of one finished run."""
    from ctd_train.evaluate import evaluate_run

    hist = history(run)
    best = min(hist, key=lambda h: h["val_me_pfl"])
    report = evaluate_run(run, split="test", decode=decode, write=False)
    ev = report.evaluation
    return {
        "run_dir": str(run), "best_epoch": best["epoch"], "val_me_pfl": best["val_me_pfl"],
        "val_pfl_error_px": best.get("val_pfl_error_px"),
        "test_me_pfl": ev.summary.me, "test_fr": ev.summary.fr, "test_auc": ev.summary.auc,
        "test_pfl_error_mean_abs": ev.pfl_error_mean_abs,
        "ld_ratio_last": hist[-1].get("ld_ratio"),
        "train_time_s": float(sum(h.get("train_time_s", 0.0) + h.get("val_time_s", 0.0) for h in hist)),
        "per_image": [float(x) for x in ev.per_image],
    }


def paired(variant: list[dict[str, Any]], baseline: list[dict[str, Any]]) -> dict[str, Any]:
    """Per seed: mean over the same test images of (variant - baseline) per-image error; their mean
    over seeds with the sd of the per-seed means, and the ratio of mean errors."""
    per_seed = [float(np.mean(np.asarray(v["per_image"]) - np.asarray(b["per_image"])))
                for v, b in zip(variant, baseline)]
    ratio = float(np.mean([v["test_me_pfl"] for v in variant]) / np.mean([b["test_me_pfl"] for b in baseline]))
    return {"per_seed_mean_diff": per_seed, "mean_diff": float(np.mean(per_seed)),
            "sd_of_seed_means": float(np.std(per_seed)), "me_ratio": ratio,
            "images_better": int(sum(int(np.sum(np.asarray(v["per_image"]) < np.asarray(b["per_image"])))
                                     for v, b in zip(variant, baseline))),
            "images": int(sum(len(v["per_image"]) for v in variant))}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", required=True, help="NAME:key=value,... (see above)")
    p.add_argument("--baseline", default=None, help="variant the others are paired with (default: the first)")
    add_run_args(p, epochs=20, train_subjects=10, out="runs/lambda_sweep", name="lambda_sweep")
    args = p.parse_args(argv)
    if args.val_subjects == 0:
        p.error("--val-subjects 0 is a final fit, without the validation split this sweep chooses on")
    if args.train_subjects == 0:
        args.train_subjects = None
    return args


def train_all(args: argparse.Namespace, variants: list[tuple[str, dict[str, str]]], console) -> dict:
    """Train every (variant, seed), seed-major so a stopped sweep has whole seeds done."""
    runs: dict[tuple[str, int], Path] = {}
    for seed in args.seeds:
        for name, values in variants:
            config = variant_config(args, name, values, seed)
            runs[(name, seed)] = train_unless_finished(config, console, progress=not args.no_progress)
    return runs


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]], baseline: str) -> str:
    lines = [
        f"# {meta['name']}: distillation variants vs {baseline}, chosen on validation",
        "",
        f"- machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores",
        f"- teacher {meta['teacher']}; {meta['train_subjects'] or 'all'} training, {meta['val_subjects']} validation, "
        f"{meta['test_subjects']} test subjects per seed; {meta['epochs']} epochs; lr {meta['lr']:g} "
        f"(head x{meta['head_lr_scale']:g} unless the variant says); decode {meta['decode']}; seeds {meta['seeds']}",
        "- errors: mean point-to-point error as a fraction of each image's true PFL; "
        "paired diff = mean over seeds of (variant - baseline) per-image test error, ± sd of the per-seed means",
        "",
        "| variant | spec | val ME (choice) | test ME | test mean abs PFL err | λL_D/L_R | paired diff vs baseline | ME ratio | images better |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r.get("paired")
        pair = f"{p['mean_diff']:+.4f} ± {p['sd_of_seed_means']:.4f}" if p else "—"
        ratio = f"{p['me_ratio']:.3f}" if p else "—"
        better = f"{p['images_better']}/{p['images']}" if p else "—"
        ld = "—" if r["ld_ratio"] is None else f"{r['ld_ratio']:.3g}"
        lines.append(f"| {r['variant']} | `{r['spec']}` | {r['val_me']['mean']:.4f} ± {r['val_me']['sd']:.4f} | "
                     f"{r['test_me']['mean']:.4f} ± {r['test_me']['sd']:.4f} | {r['test_pfl']['mean']:.4f} | {ld} | "
                     f"{pair} | {ratio} | {better} |")
    return "\n".join(lines) + "\n"


def _mean_sd(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "sd": float(a.std())}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from rich.console import Console

    from ctd_runtime.atomic import write_json_atomic, write_text_atomic
    from ctd_runtime.errors import CtdError

    console = Console(stderr=True, width=160)
    try:
        variants = [parse_variant(s) for s in args.variants]
    except ValueError as e:
        console.print(f"[bold red]error:[/] {e}")
        return 2
    baseline = args.baseline or variants[0][0]
    t0 = time.perf_counter()
    try:
        runs = train_all(args, variants, console)
    except CtdError as e:
        console.print(f"[bold red]error:[/] {e}")
        return 2
    summaries = {key: run_summary(path, args.decode) for key, path in runs.items()}
    rows = []
    for name, values in variants:
        runs_of = [summaries[(name, s)] for s in args.seeds]
        base = [summaries[(baseline, s)] for s in args.seeds]
        ld = [r["ld_ratio_last"] for r in runs_of if r["ld_ratio_last"] is not None]
        rows.append({
            "variant": name, "spec": ",".join(f"{k}={v}" for k, v in values.items()),
            "val_me": _mean_sd([r["val_me_pfl"] for r in runs_of]),
            "test_me": _mean_sd([r["test_me_pfl"] for r in runs_of]),
            "test_pfl": _mean_sd([r["test_pfl_error_mean_abs"] for r in runs_of]),
            "ld_ratio": float(np.mean(ld)) if ld else None,
            "paired": None if name == baseline else paired(runs_of, base),
            "runs": runs_of,
        })
    chosen = min(rows, key=lambda r: r["val_me"]["mean"])
    meta = {"name": args.name, "machine": {"cpu": cpu_model(), "cores": usable_cores()}, "teacher": args.teacher,
            "epochs": args.epochs, "lr": args.lr, "head_lr_scale": args.head_lr_scale, "decode": args.decode,
            "seeds": args.seeds, "train_subjects": args.train_subjects, "val_subjects": args.val_subjects,
            "test_subjects": args.test_subjects, "baseline": baseline, "chosen_by_validation": chosen["variant"],
            "wall_time_s": time.perf_counter() - t0}
    args.results.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.results / f"{args.name}.json", {"meta": meta, "rows": rows})
    text = markdown(meta, rows, baseline) + f"\nChosen by mean validation ME: **{chosen['variant']}**.\n"
    write_text_atomic(args.results / f"{args.name}.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
