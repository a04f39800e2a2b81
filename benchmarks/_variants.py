"""Training variants for the benchmark scripts: `NAME:key=value,...` specs turned into TrainConfigs,
and a resumable "train unless finished" step, shared by lambda_sweep.py and cascade.py.

Keys: method lambda mu reduction ed head (the method; head defaults to simple, SimpleBaseline's,
as in every table measured before the skip head: give head=skip for the recipe's; likewise no
PFL-length term unless pfll= gives one: pfll=20 for the recipe's); lr hls ema epochs schema crop crop_scale input
pflw pfll select (the run; pflw: the PFL pair's loss weight, pfll: the PFL-length term's, select: me or pfl); scale rotation shift flip (augmentation; flip=1)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "imm-face"
DEFAULT_WEIGHTS = REPO.parent / "shared" / "teachers" / "hse-mobilenet-vggface2" / "faceres-deep.json"

_METHOD_KEYS = {"method": "name", "lambda": "lambda_", "mu": "mu", "reduction": "loss_reduction", "ed": "ed_features",
                "head": "head"}
_CONFIG_KEYS = {"lr": "lr", "hls": "head_lr_scale", "ema": "ema_decay", "epochs": "epochs", "schema": "schema", "crop": "crop",
                "crop_scale": "crop_scale", "input": "input_size", "pflw": "pfl_weight",
                "pfll": "pfl_length_weight", "select": "select"}
_CONFIG_TYPES = {"lr": float, "hls": float, "ema": float, "epochs": int, "schema": str, "crop": str, "crop_scale": float, "input": int,
                 "pflw": float, "pfll": float, "select": str}
_AUGMENT_KEYS = {"scale": "scale", "rotation": "rotation_deg", "shift": "shift", "flip": "flip"}


def parse_variant(spec: str) -> tuple[str, dict[str, str]]:
    """`NAME:k=v,k=v` -> (NAME, {k: v}); ValueError for an unknown key or a malformed pair."""
    name, _, rest = spec.partition(":")
    if not name or "/" in name:
        raise ValueError(f"variant {spec!r}: give NAME:key=value,...")
    values: dict[str, str] = {}
    for pair in filter(None, rest.split(",")):
        key, eq, value = pair.partition("=")
        if not eq or key not in {**_METHOD_KEYS, **_CONFIG_KEYS, **_AUGMENT_KEYS}:
            raise ValueError(f"variant {spec!r}: unknown or malformed {pair!r}")
        values[key] = value
    return name, values


def _flag(value: str) -> bool:
    """`1`/`true`/`yes` or `0`/`false`/`no` (a variant's on/off key)."""
    v = value.strip().lower()
    if v not in ("1", "true", "yes", "0", "false", "no"):
        raise ValueError(f"variant: {value!r} is not an on/off value (1/0, true/false, yes/no)")
    return v in ("1", "true", "yes")


def variant_config(args: argparse.Namespace, name: str, values: dict[str, str], seed: int):
    """The TrainConfig of one (variant, seed)."""
    from ctd_train.config import TrainConfig
    from ctd_train.data.augment import AugmentConfig
    from ctd_train.methods import MethodConfig

    method_kw = {field: (values[k] if field in ("name", "loss_reduction", "ed_features", "head") else float(values[k]))
                 for k, field in _METHOD_KEYS.items() if k in values}
    method = MethodConfig(**{"name": "ft", **method_kw})
    augment = AugmentConfig(**{f: (_flag(values[k]) if k == "flip" else float(values[k]))
                               for k, f in _AUGMENT_KEYS.items() if k in values})
    weights = args.teacher_weights or (DEFAULT_WEIGHTS if DEFAULT_WEIGHTS.exists() else None)
    config = TrainConfig(
        data=str(args.data), out=str(args.out / f"{name}-s{seed}"), teacher=args.teacher,
        teacher_weights=None if weights is None else str(weights), method=method, epochs=args.epochs,
        lr=args.lr, head_lr_scale=args.head_lr_scale, seed=seed, train_subjects=args.train_subjects,
        val_subjects=args.val_subjects, test_subjects=args.test_subjects, decode=args.decode, augment=augment,
        threads=args.threads, pfl_length_weight=0.0,
    )
    return replace(config, **{field: _CONFIG_TYPES[k](values[k]) for k, field in _CONFIG_KEYS.items() if k in values})


def add_run_args(p: argparse.ArgumentParser, *, epochs: int, train_subjects: int, out: str, name: str) -> None:
    """The options `variant_config` reads (data, teacher, schedule, split, threads) and the output
    ones, with each script's own defaults."""
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--teacher", default="hse-mobilenet-vggface2")
    p.add_argument("--teacher-weights", type=Path, default=None)
    p.add_argument("--epochs", type=int, default=epochs, help="unless a variant says")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--head-lr-scale", type=float, default=1.0)
    p.add_argument("--decode", default="dark")
    p.add_argument("--train-subjects", type=int, default=train_subjects, help="0: every training subject")
    p.add_argument("--val-subjects", type=int, default=5)
    p.add_argument("--test-subjects", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default every core; 1 on a busy machine)")
    p.add_argument("--out", type=Path, default=Path(out))
    p.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--name", default=name, help="results file stem")
    p.add_argument("--no-progress", action="store_true")


def history(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def train_unless_finished(config, console, progress: bool) -> Path:
    """Train `config` unless its run dir holds a finished run (test evaluation written, last epoch
    reached); an interrupted run resumes."""
    from ctd_train.trainer import train

    out = Path(config.out)
    hist = history(out)
    if (out / "eval_test.json").exists() and hist and hist[-1]["epoch"] >= config.epochs:
        console.print(f"[dim]skip {out} (finished)[/]")
    else:
        console.print(f"[bold]{out.name}[/] -> {out}")
        train(config, progress=progress, console=console)
    return out
