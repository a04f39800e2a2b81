"""Does averaging the landmarks of several trained models lower the PFL error? Every subset of the
member runs (trained on the same split) is scored on validation, which decides, and on test,
reported beside it (docs/accuracy.md). A final fit (--val-subjects 0) has no validation: where a
member is one, every subset of that seed is scored on test only.

    python benchmarks/ensemble.py --root runs/recipe-study --members face ft100 hg100 --seeds 0 \
        --out benchmarks/results/ensemble

Member NAME of seed S is the run folder ROOT/NAME-sS (benchmarks/cascade.py's layout); the members
of one seed must share its split. Each member is evaluated once per split (the run's own decode,
the ground-truth face box), and a subset's prediction is the per-image mean of its members'
landmarks in source pixels. Scores: mean |PFL error|, signed, eye-corner px, ME and the test-retest
of image types 1 and 5 (benchmarks/cascade.py's stage_result). Prints a table, writes JSON + Markdown.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np

from _results import publish_by_seed
from cascade import image_types, stage_result

SPLITS = ("val", "test")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="folder of the member runs (NAME-sSEED)")
    p.add_argument("--members", nargs="+", required=True)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--max-size", type=int, default=3, help="largest subset scored")
    p.add_argument("--schema", default=None,
                   help="score every member on this schema's points (e.g. imm14 for an imm58 member beside imm14 "
                        "ones); default: the members' own, which must then agree")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="score each member's best checkpoint (its own validation choice) or its last epoch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "ensemble")
    return p.parse_args(argv)


def schema_columns(run_schema, common) -> list[int]:
    """The columns of a run's landmarks that are `common`'s points, in `common`'s order (the
    cascade's `shared_landmarks`: the same source point); SystemExit when the run lacks one."""
    from ctd_runtime.errors import CtdError
    from ctd_train.cascade import shared_landmarks

    try:
        pairs = shared_landmarks(run_schema, common)
    except CtdError:
        pairs = []
    found = {j: i for i, j in pairs}
    missing = [src for j, src in enumerate(common.source_indices) if j not in found]
    if missing or run_schema.num_source_points != common.num_source_points:
        raise SystemExit(f"a {run_schema.name} run cannot be scored on {common.name}: it lacks source points {missing}")
    return [found[j] for j in range(common.num_landmarks)]


def member_predictions(run: Path, common_schema: str | None = None, checkpoint: str = "best") -> dict[str, Any]:
    """Per split: predictions, truth, image names, subjects, types and the PFL pair of one run's
    `checkpoint` (on `common_schema`'s points when given). The run is loaded once for both splits."""
    from ctd_runtime.schema import get_schema
    from ctd_train.checkpoint import load_run
    from ctd_train.config import TrainConfig
    from ctd_train.evaluate import evaluate_loaded

    loaded = load_run(run, which=checkpoint)
    columns, pair = None, None
    if common_schema is not None:
        common = get_schema(common_schema)
        columns, pair = schema_columns(loaded.schema, common), tuple(common.pfl_pair)
    final_fit = TrainConfig.from_dict(loaded.config, where=loaded.checkpoint_path).final_fit
    out: dict[str, Any] = {}
    for split in SPLITS:
        if split == "val" and final_fit:
            out[split] = None  # a final fit (--val-subjects 0) has no validation split: scored on test only
            continue
        r = evaluate_loaded(loaded, split=split, write=False)
        pred, gt = (r.pred, r.gt) if columns is None else (r.pred[:, columns], r.gt[:, columns])
        out[split] = {"pred": pred, "gt": gt, "images": list(r.image_names), "subjects": list(r.subjects),
                      "types": image_types(Path(r.data), list(r.image_names)),
                      "pair": tuple(r.pfl_pair) if pair is None else pair}
    return out


def score_subsets(members: dict[str, dict[str, Any]], max_size: int) -> dict[str, dict[str, Any]]:
    """{"a+b": {"val": stage_result, "test": stage_result}} for every subset up to max_size; a
    split that some member lacks (a final fit's val) is None for every subset of that seed."""
    names = list(members)
    first = members[names[0]]
    splits = [s for s in SPLITS if all(members[n][s] is not None for n in names)]
    for name in names[1:]:
        for split in splits:
            if members[name][split]["gt"].shape != first[split]["gt"].shape:
                raise SystemExit(f"member {name} has other landmarks than {names[0]}: give --schema to score "
                                 "them on common points")
            if members[name][split]["images"] != first[split]["images"]:
                raise SystemExit(f"member {name} was evaluated on other {split} images than {names[0]}: "
                                 "members of one seed must share its split")
    out: dict[str, dict[str, Any]] = {}
    for k in range(1, min(max_size, len(names)) + 1):
        for subset in itertools.combinations(names, k):
            row: dict[str, Any] = {split: None for split in SPLITS}
            for split in splits:
                ref = first[split]
                pred = np.mean([members[n][split]["pred"] for n in subset], axis=0)
                row[split], _ = stage_result(pred, ref["gt"], ref["subjects"], ref["types"], ref["pair"])
                row[split].pop("per_image_pfl_abs")
            out["+".join(subset)] = row
    return out


def markdown(meta: dict[str, Any], seeds: dict[int, dict[str, dict[str, Any]]]) -> str:
    subsets = list(next(iter(seeds.values())))

    def cell(subset: str, split: str, key: str, scale: float = 100.0, fmt: str = ".2f", unit: str = "%") -> str:
        vals = [s[subset][split][key] for s in seeds.values()
                if s[subset][split] is not None and s[subset][split][key] is not None]
        return f"{scale * np.mean(vals):{fmt}}{unit}" if vals else "—"

    def validation_choice(subset: str) -> float:  # subsets without validation (final fits) go last
        vals = [v[subset]["val"] for v in seeds.values()]
        return float(np.mean([r["pfl_abs"] for r in vals])) if all(r is not None for r in vals) else float("inf")

    order = sorted(subsets, key=validation_choice)
    lines = [f"# ensemble: landmark averages of {', '.join(meta['members'])}", "",
             f"- machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores; runs {meta['root']}/NAME-sSEED; "
             f"seeds {meta['seeds']}; means over seeds; PFL errors in % of the true PFL"
             + (f"; every member scored on the {meta['schema']} points" if meta.get("schema") else "")
             + ("; each member's last epoch, not its best" if meta.get("checkpoint") == "last" else ""),
             "- sorted by validation mean |PFL error| (the choice); test beside it", "",
             "| members | val abs PFL error | val ME | val retest | test abs PFL error | test signed | test ME | "
             "test corner px | test retest |", "|---|---|---|---|---|---|---|---|---|"]
    for s in order:
        lines.append(f"| {s} | {cell(s, 'val', 'pfl_abs')} | {cell(s, 'val', 'me', 1.0, '.4f', '')} | "
                     f"{cell(s, 'val', 'retest')} | {cell(s, 'test', 'pfl_abs')} | {cell(s, 'test', 'pfl_signed')} | "
                     f"{cell(s, 'test', 'me', 1.0, '.4f', '')} | {cell(s, 'test', 'corner_px', 1.0, '.2f', '')} | "
                     f"{cell(s, 'test', 'retest')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import torch

    from ctd_runtime.machine import describe_machine

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds: dict[int, dict[str, dict[str, Any]]] = {}
    for seed in args.seeds:
        runs = {m: args.root / f"{m}-s{seed}" for m in args.members}
        missing = [str(p) for p in runs.values() if not (p / "checkpoint_best.pt").is_file()]
        if missing:
            raise SystemExit(f"no finished run at {', '.join(missing)}")
        seeds[seed] = score_subsets({m: member_predictions(p, args.schema, args.checkpoint) for m, p in runs.items()},
                                    args.max_size)
    meta = {"machine": describe_machine(), "root": str(args.root), "members": args.members, "seeds": args.seeds,
            "schema": args.schema, "checkpoint": args.checkpoint}
    publish_by_seed(args.out, meta, seeds, markdown(meta, seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
