"""The demo's closing summary: every file it wrote and what it is, what each number means, and the
commands that do the same on real data. `DemoSummary` is also written as OUT/demo_summary.json."""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

SUMMARY_FILE = "demo_summary.json"

# what each file is, by its path under OUT (first match wins)
FILE_ROLES: tuple[tuple[str, str], ...] = (
    ("demo_config.json", "the demo's settings (rerun with the same options: it resumes)"),
    ("demo_summary.json", "this summary, as JSON"),
    ("runs/*/config.json", "the training run's full resolved TrainConfig"),
    ("runs/*/split.json", "which images trained, validated and tested (split by subject)"),
    ("runs/*/checkpoint_best.pt", "weights of the epoch with the lowest validation error"),
    ("runs/*/checkpoint_last.pt", "weights and optimizer state of the last epoch (for resuming)"),
    ("runs/*/metrics.jsonl", "one line per epoch: loss terms, validation errors, speed"),
    ("runs/*/eval_test.*", "the best checkpoint on the test split (summary JSON, per-image CSV)"),
    ("runs/*/ced.png", "the run's CED curve on its test split"),
    ("compare/compare.md", "the comparison table (the paper's Table 1 layout)"),
    ("compare/compare.json", "the same, as JSON"),
    ("compare/compare_ced.png", "CED plot: fraction of test images below each error, one curve per method"),
    ("export/model.onnx", "the fused FP32 model (uint8 image + crop in, landmarks out), parity-gated"),
    ("export/model.int8.onnx", "the INT8 (QDQ) variant, calibrated on training images"),
    ("export/export_config.json", "what the export did: options, parity numbers, files with SHA-256"),
    ("export/*", "a file of the export"),
    ("infer/results.jsonl", "one JSON object per capture: landmarks, PFL px/mm/3D, flags, timings"),
    ("infer/results.csv", "the same, one row per capture"),
    ("infer/overlays/*.png", "overlays: landmarks, the fissure line and its length"),
    ("bench/bench.json", "latency per stage and contender, with the machine"),
    ("bench/bench.png", "end-to-end latency bars"),
    ("heldout/*", "your folder's test split, linked (what the station step measured)"),
)

MEANINGS: tuple[str, ...] = (
    "ME +- SD: each test image's mean landmark error as a fraction of that image's true PFL (0.10 = a "
    "tenth of the eye's width), averaged over images; FR: the share of images above 0.10; AUC: the area "
    "under the CED curve up to 0.10 (1 would be perfect).",
    "parity: the largest landmark difference between ONNX Runtime and PyTorch on validation crops "
    "(source px); model.onnx is kept only below the tolerance. INT8: its landmark difference to FP32 "
    "(judged by the mean).",
    "PFL error: |measured - true| palpebral fissure length on held-out images no training saw; px in the "
    "image, mm through each image's pixel spacing (its .json sidecar), 3D mm along the OBJ surface "
    "through the mesh's UVs.",
    "bench: median ms per image end to end (read, face box, passes, decode, PFL) over a few iterations, "
    "interleaved; indicative only, especially on a shared machine.",
)
SYNTHETIC_CAVEAT = ("These faces are drawn by a program (ctd_train.synthetic): the numbers show the pipeline "
                    "works end to end, and say nothing about accuracy on real faces (README, Results: the IMM "
                    "faces).")
NEXT_COMMANDS: tuple[tuple[str, str], ...] = (
    ("ctd data import-imm ASF_DIR --images IMG_DIR --out data/mine", "your annotations to the folder format "
     "(import-pts for iBUG .pts)"),
    ("ctd demo --data data/mine --out runs/demo-mine", "this demo on your folder"),
    ("ctd train --data data/mine --out runs/mine --teacher dlib-resnet29 --lr 1e-5 --head-lr-scale 10",
     "the recipe (plain fine-tuning, 30 epochs) from the teacher the install brings, at the learning rates its "
     "encoder needs; --method ctd-ed for distillation, --crop schema --margin 1.2 --scale-max 3 --shift 0.1 for a "
     "model that finds faces itself; resumes when run again"),
    ("ctd evaluate runs/mine --by image_type", "test errors per image type (with a metadata.csv)"),
    ("ctd export runs/mine --out runs/mine/export --precision fp32,int8", "ONNX models behind the parity gate"),
    ("ctd infer runs/mine/export/model.onnx --watch STATION_DIR --out runs/mine/infer", "the station: measure "
     "each capture written into a folder"),
)


@dataclass
class DemoSummary:
    """The numbers a demo produced (what demo_summary.json holds)."""

    out: str
    data: dict[str, Any]
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    chosen: str | None = None
    export: dict[str, Any] = field(default_factory=dict)
    infer: dict[str, Any] = field(default_factory=dict)
    bench: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    files: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def role_of(relpath: str) -> str:
    """What the file at `relpath` (POSIX, under OUT) is; "" for one the table does not know."""
    return next((role for pattern, role in FILE_ROLES if fnmatch.fnmatch(relpath, pattern)), "")


def written_files(out: Path) -> list[dict[str, str]]:
    """Every file under OUT with its role, sorted; overlays and held-out links as one entry each."""
    rows: dict[str, dict[str, str]] = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(out).as_posix()
        group = next((g for g in ("infer/overlays/", "heldout/") if rel.startswith(g)), None)
        if group is None:
            rows[rel] = {"path": rel, "what": role_of(rel)}
            continue
        row = rows.setdefault(group, {"path": group, "what": role_of(rel), "count": "0"})
        row["count"] = str(int(row["count"]) + 1)
    for name in (SUMMARY_FILE,):
        rows.setdefault(name, {"path": name, "what": role_of(name)})
    return sorted(rows.values(), key=lambda r: r["path"])


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def print_summary(summary: DemoSummary, console: Console, synthetic: bool) -> None:
    """Files, numbers, their meaning and the next commands."""
    files = Table("file (under " + summary.out + ")", "what it is", title="files written", title_justify="left")
    for row in summary.files:
        count = f" ({row['count']} files)" if "count" in row else ""
        files.add_row(row["path"] + count, row["what"])
    console.print(files)
    numbers = Table("number", "value", title="what came out", title_justify="left")
    for label, value in summary_numbers(summary):
        numbers.add_row(label, value)
    console.print(numbers)
    for line in MEANINGS:
        console.print(f"- {line}", highlight=False)
    if synthetic:
        console.print(f"[bold yellow]{SYNTHETIC_CAVEAT}[/]", highlight=False)
    console.print("\nNext, on real data:", highlight=False)
    for command, what in NEXT_COMMANDS:
        console.print(f"  [bold]{command}[/]\n      {what}", highlight=False)


def summary_numbers(summary: DemoSummary) -> list[tuple[str, str]]:
    """The summary's headline numbers as (label, value) rows."""
    rows = []
    for method, m in summary.methods.items():
        t = m["test"]
        rows.append((f"{method}: test ME +- SD, FR, AUC (PFL)",
                     f"{t['me']:.4f} +- {t['sd']:.4f}, {100 * t['fr']:.1f}%, {t['auc']:.3f} ({t['n_images']} images)"))
    e = summary.export
    if e:
        rows.append((f"parity of model.onnx ({summary.chosen})", f"max {e['parity_max_px']:.2g} px over "
                     f"{e['parity_crops']} crops, tolerance {e['parity_tolerance_px']:g} px: "
                     f"{'passed' if e['parity_passed'] else 'FAILED'}"))
        if e.get("int8_mean_px") is not None:
            rows.append(("model.int8.onnx vs FP32", f"mean {e['int8_mean_px']:.3g} px, max {e['int8_max_px']:.3g} px"))
    i = summary.infer
    if i:
        rows.append(("held-out captures measured", f"{i['measured']}/{i['captures']} (no face: {i['not_found']}, "
                                                   f"failed: {i['failed']})"))
        rows.append(("mean |PFL error|, px", f"{_fmt(i['px'])} px of {_fmt(i['true_px'], 1)} px ({i['px_n']} images)"))
        rows.append(("mean |PFL error|, mm", f"{_fmt(i['mm'])} mm of {_fmt(i['true_mm'], 1)} mm ({i['mm_n']} images)"))
        if i["mm_3d_n"]:
            rows.append(("mean |PFL error|, 3D mm", f"{_fmt(i['mm_3d'])} mm of {_fmt(i['true_mm_3d'], 1)} mm "
                                                    f"({i['mm_3d_n']} captures)"))
    for name, ms in summary.bench.get("end_to_end_p50_ms", {}).items():
        rows.append((f"bench: {name}", f"{ms:.1f} ms per image end to end (p50)"))
    rows.append(("time", ", ".join(f"{k} {v:.0f} s" for k, v in summary.seconds.items())))
    return rows
