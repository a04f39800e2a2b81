"""The demo's settings: one dataclass, two budgets (default: the whole demo in about 5 minutes on
2 CPU cores; `--fast`: a tiny one for CI), saved as OUT/demo_config.json.

A rerun into the same folder with the same settings resumes (the trainings and the export pick up
where they stopped) or repeats the cheap steps; other settings are refused, naming the file, so
a folder never mixes two demos.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ctd_runtime.atomic import write_json_atomic
from ctd_runtime.config_dict import checked_kwargs
from ctd_runtime.errors import CtdError

CONFIG_FILE = "demo_config.json"
DEFAULT_OUT = "runs/demo"
DEFAULT_FAST_OUT = "runs/demo-fast"
TEACHER = "dlib-resnet29"     # the one teacher the install brings (PyPI face-recognition-models)
# fields that may change between a run and its resumption (speed only)
RESUME_FREE = ("threads",)


@dataclass
class DemoConfig:
    """Everything a demo depends on. Sizes: the synthetic training set (`subjects` x
    `images_per_subject`; 10% validation and 20% test subjects, the rest trains), the held-out set
    the station step measures (`heldout_subjects`, with `heldout_captures` OBJ captures). `data`
    replaces the synthetic sets by a user's annotated folder (its test split is held out).
    `epochs`, `lr` and `head_lr_scale`: both trainings; the rest of the recipe is `TrainConfig`'s.

    Why not the recipe's lr 1e-4: it was chosen for the HSE MobileNet. dlib-resnet29 has no
    normalisation layer and convolution weights of ~1e-3 (5e-4 in level 0), so Adam's steps of
    1e-4 change them by 10-20% each and the encoder's features blow up within an epoch (the head's
    first BatchNorm saw running variances of 1e11 and more; validation stalls at the mean shape,
    ~0.35 PFL, whatever the lr from 1e-4 up). The encoder at 1e-5 with the head at 1e-4 (x10)
    measured 0.079 PFL on validation after 8 epochs of the default set, against 0.35."""

    out: str = DEFAULT_OUT
    fast: bool = False
    data: str | None = None
    seed: int = 0
    methods: tuple[str, ...] = ("ft", "ctd-ed")
    epochs: int = 10
    lr: float = 1e-5
    head_lr_scale: float = 10.0
    subjects: int = 20
    images_per_subject: int = 6
    heldout_subjects: int = 4
    heldout_captures: int = 3
    calibration_images: int = 32
    parity_images: int = 12
    bench_iters: int = 5
    bench_rounds: int = 2
    bench_images: int = 8
    threads: int | None = None

    @classmethod
    def for_budget(cls, fast: bool, out: str | None = None, data: str | None = None, **kw: Any) -> "DemoConfig":
        """The default budget, or `--fast`'s (1 epoch on 6 subjects x 3 images: it shows every step
        works, not that anything was learnt). `out` None: runs/demo or runs/demo-fast."""
        budget: dict[str, Any] = dict(fast=True, epochs=1, subjects=6, images_per_subject=3, heldout_subjects=2,
                                      heldout_captures=1, calibration_images=4, parity_images=4, bench_iters=2,
                                      bench_rounds=1, bench_images=1) if fast else {}
        default_out = DEFAULT_FAST_OUT if fast else DEFAULT_OUT
        return cls(out=out or default_out, data=data, **{**budget, **kw})

    def check(self) -> None:
        """CtdError for values that cannot work, before anything is written."""
        for name in ("epochs", "subjects", "images_per_subject", "heldout_subjects", "calibration_images",
                     "parity_images", "bench_iters", "bench_rounds", "bench_images"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise CtdError(f"demo config: {name} must be a positive integer, not {value!r}")
        if self.subjects < 3:
            raise CtdError(f"demo config: subjects must be at least 3 (train, validation, test), not {self.subjects}")
        if not 0 <= self.heldout_captures <= self.heldout_subjects:
            raise CtdError("demo config: heldout_captures must be between 0 and heldout_subjects")
        if not (self.lr > 0 and self.head_lr_scale > 0 and math.isfinite(self.lr * self.head_lr_scale)):
            raise CtdError(f"demo config: lr and head_lr_scale must be positive numbers, not {self.lr}, "
                           f"{self.head_lr_scale}")
        if self.threads is not None and self.threads < 1:
            raise CtdError(f"demo config: threads must be positive, not {self.threads}")
        if self.seed < 0:
            raise CtdError(f"demo config: seed must be >= 0, not {self.seed}")
        if not self.methods:
            raise CtdError("demo config: give at least one method")

    def resolved(self) -> "DemoConfig":
        """A copy with absolute paths (what demo_config.json records)."""
        self.check()
        d = asdict(self)
        d["out"] = str(Path(self.out).expanduser().resolve())
        if self.data is not None:
            d["data"] = str(Path(self.data).expanduser().resolve())
        d["methods"] = tuple(self.methods)
        return DemoConfig(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["methods"] = list(self.methods)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str | Path | None = None) -> "DemoConfig":
        kw = checked_kwargs(cls, d, "demo config", where)
        if "methods" in kw:
            kw["methods"] = tuple(kw["methods"])
        return cls(**kw)

    def differences(self, other: "DemoConfig") -> list[str]:
        """`field: other's != mine` for every field that differs (speed-only fields aside)."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{f.name}: {b[f.name]!r} != {a[f.name]!r}" for f in fields(self)
                if f.name not in RESUME_FREE and a[f.name] != b[f.name]]


def prepare_out(config: DemoConfig) -> Path:
    """Create OUT (or accept a demo's OUT with the same settings) and write demo_config.json.
    CtdError for a file, an unwritable place, a non-empty folder that is no demo, or a demo with
    other settings."""
    out = Path(config.out)
    path = out / CONFIG_FILE
    if out.exists() and not out.is_dir():
        raise CtdError("the demo's output path exists and is not a folder", path=out)
    if path.is_file():
        previous = _read(path)
        diffs = config.differences(previous)
        if diffs:
            raise CtdError("this folder holds a demo with other settings (" + "; ".join(diffs[:4]) + " (existing != "
                           "new)); rerun with the same options, or give another --out", path=path)
    elif out.is_dir() and any(out.iterdir()):
        raise CtdError(f"the output folder is not empty and holds no {CONFIG_FILE} (not a demo); give a new or "
                       "empty --out", path=out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CtdError(f"cannot create the output folder ({e.strerror})", path=out) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise CtdError("the output folder is not writable", path=out)
    write_json_atomic(path, config.to_dict())
    return path


def _read(path: Path) -> DemoConfig:
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CtdError(f"cannot read the demo's config ({e})", path=path) from None
    try:
        return DemoConfig.from_dict(d, where=path)
    except TypeError as e:
        raise CtdError(f"not a demo config ({e})", path=path) from None
