"""The training configuration: one dataclass, resolved once and saved as `config.json` in the run dir.

Resolution (`TrainConfig.resolved`) makes paths absolute, fixes the run id, the numbers of
validation and test subjects and, where left to the machine, bfloat16 autocast (`auto_bf16`), so
the saved file alone says what the run did. The split is made by
subject and depends only on the data's subjects and the seed (`split_indices`).
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

from ctd_runtime.codec import DECODE_METHODS
from ctd_runtime.config_dict import checked_kwargs
from ctd_runtime.errors import CtdError
from ctd_train.data.augment import AugmentConfig
from ctd_train.data.splits import limit_images, limit_subjects, split_subjects
from ctd_train.methods import MethodConfig

CONFIG_FILE = "config.json"
# TrainConfig.select -> the validation number (lower is better) that picks checkpoint_best.pt
SELECT_KEYS = {"me": "val_me_pfl", "pfl": "val_pfl_abs"}

# fields that may change between an interrupted run and its resumption (speed or bookkeeping only)
RESUME_FREE_FIELDS = ("workers", "out", "run_id", "threads", "device")

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.2


@dataclass
class TrainConfig:
    """Everything a training run depends on.

    Limited labels: `train_subjects` keeps all images of that many training subjects,
    `train_images` exactly that many images (whole subjects first); give at most one.
    `val_subjects` / `test_subjects` default to 10% / 20% of the subjects (at least one each).
    `val_subjects` 0 is the final fit: every subject but the test ones trains, nothing validates,
    and the last epoch is the checkpoint kept (the recipe's epochs were chosen on validation before).
    `threads` None uses every core.
    """

    data: str
    out: str
    schema: str = "imm14"
    teacher: str = "hse-mobilenet-vggface2"
    teacher_weights: str | None = None
    teacher_run: str | None = None  # method kd: the trained landmark run that teaches (ctd_train.kd)
    # the recipe, chosen on validation (docs/accuracy.md): fine-tuning with the skip head (a saved
    # method config without `head` is SimpleBaseline's, as every run before the skip head was)
    method: MethodConfig = field(default_factory=lambda: MethodConfig(name="ft", head="skip"))
    epochs: int = 30            # the recipe: 30 epochs with every training subject (README, benchmarks/cascade.py)
    batch_size: int = 2
    lr: float = 1e-4            # measured: 1e-3 (the paper's, for a BN ResNet) wipes out the HSE MobileNet's features
    lr_power: float = 0.9
    head_lr_scale: float = 1.0  # the new head's learning rate is lr x this (the encoder keeps lr)
    ema_decay: float = 0.0      # > 0: validate, keep and export a moving average of the weights (ctd_train.ema)
    seed: int = 0
    train_subjects: int | None = None
    train_images: int | None = None
    val_subjects: int | None = None
    test_subjects: int | None = None
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    margin: float = 0.25
    crop: str = "face"          # face: square around the annotation; schema: around the schema's points; pfl: fissure crop
    crop_scale: float = 2.5     # pfl crops: side = crop_scale x PFL
    input_size: int = 256
    sigma: float = 1.5
    pfl_weight: float = 1.0     # heatmap-loss weight of the schema's PFL pair (the other landmarks 1)
    # the recipe's weight of the relative PFL-length term (ctd_train.losses.pfl_length_loss; 0: off), chosen on
    # validation PFL error (docs/accuracy.md section 9); a saved config without it predates the term (0)
    pfl_length_weight: float = 20.0
    select: str = "me"          # the checkpoint kept as best: lowest validation ME ("me") or mean |PFL error| ("pfl")
    workers: int = 0            # measured on 2 cores: worker processes do not help (docs/cpu_training.md)
    channels_last: bool = True  # measured: faster on the CPU (docs/cpu_training.md)
    # bfloat16 autocast for the training step (validation stays float32); None: on where the device
    # computes in bfloat16 (a CUDA GPU that supports it, a CPU with AVX-512 BF16 or AMX), resolved
    # and saved when the run starts (auto_bf16; measured: benchmarks/train_settings.py)
    bf16: bool | None = None
    threads: int | None = None
    device: str = "auto"        # auto (cuda when available) | cpu | cuda | cuda:N
    decode: str = "dark"        # measured better than argmax and quarter on IMM (README)
    run_id: str | None = None

    # ------------------------------------------------------------------ checks and resolution

    def check(self) -> None:
        """CtdError for values that cannot work (before any file is touched)."""
        def positive(name: str, value: Any, allow_none: bool = False) -> None:
            if value is None and allow_none:
                return
            if value is None or not value > 0 or not math.isfinite(value):
                raise CtdError(f"config: {name} must be a positive number, not {value}")

        positive("epochs", self.epochs)
        positive("batch_size", self.batch_size)
        positive("lr", self.lr)
        positive("head_lr_scale", self.head_lr_scale)
        positive("input_size", self.input_size)
        positive("sigma", self.sigma)
        positive("pfl_weight", self.pfl_weight)
        if not (self.pfl_length_weight >= 0 and math.isfinite(self.pfl_length_weight)):
            raise CtdError(f"config: pfl_length_weight must be 0 (off) or a positive number, not {self.pfl_length_weight}")
        positive("crop_scale", self.crop_scale)
        if self.crop not in ("face", "schema", "pfl"):
            raise CtdError(f"config: crop must be face, schema or pfl, not {self.crop!r}")
        if self.bf16 is not None and not isinstance(self.bf16, bool):
            raise CtdError(f"config: bf16 must be true, false or null (auto), not {self.bf16!r}")
        if self.select not in SELECT_KEYS:
            raise CtdError(f"config: select must be {' or '.join(SELECT_KEYS)}, not {self.select!r}")
        positive("train_subjects", self.train_subjects, allow_none=True)
        positive("train_images", self.train_images, allow_none=True)
        if self.val_subjects is not None and not (self.val_subjects >= 0 and math.isfinite(self.val_subjects)):
            raise CtdError(f"config: val_subjects must be 0 (the final fit: no validation) or a positive "
                           f"number, not {self.val_subjects}")
        positive("test_subjects", self.test_subjects, allow_none=True)
        positive("threads", self.threads, allow_none=True)
        if not (self.lr_power >= 0 and math.isfinite(self.lr_power)):
            raise CtdError(f"config: lr_power must be a number >= 0, not {self.lr_power}")
        if not (self.margin >= 0 and math.isfinite(self.margin)):
            raise CtdError(f"config: margin must be a number >= 0, not {self.margin}")
        if not (0.0 <= self.ema_decay < 1.0):
            raise CtdError(f"config: ema_decay must be in [0, 1) (0: no weight average), not {self.ema_decay}")
        if self.workers < 0:
            raise CtdError(f"config: workers must be >= 0, not {self.workers}")
        if not (self.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", self.device)):
            raise CtdError(f"config: device must be auto, cpu, cuda or cuda:N, not {self.device!r}")
        if self.seed < 0:
            raise CtdError(f"config: seed must be >= 0, not {self.seed}")
        if self.train_subjects is not None and self.train_images is not None:
            raise CtdError("config: give train_subjects or train_images, not both")
        if self.decode not in DECODE_METHODS:
            raise CtdError(f"config: unknown decode {self.decode!r}; choose from {', '.join(DECODE_METHODS)}")
        if self.input_size % 4:
            raise CtdError(f"config: input_size {self.input_size} is not a multiple of the heatmap stride 4")
        if (self.method.name == "kd") != (self.teacher_run is not None):
            raise CtdError("config: method kd (landmark distillation from a trained run) needs teacher_run "
                           "(--teacher-run RUN_DIR), and only kd takes one"
                           + ("" if self.teacher_run is None else f", not method {self.method.name!r}"))

    @property
    def final_fit(self) -> bool:
        """No validation subjects: train on everything but the test split, keep the last epoch."""
        return self.val_subjects == 0

    def resolved(self, num_subjects: int | None = None) -> "TrainConfig":
        """A copy with absolute paths, a run id, bf16 decided for this machine when left to it (None),
        and (given the data's subject count) the split sizes."""
        self.check()
        c = replace(self)
        c.data = str(Path(self.data).expanduser().resolve())
        c.out = str(Path(self.out).expanduser().resolve())
        if self.teacher_weights is not None:
            c.teacher_weights = str(Path(self.teacher_weights).expanduser().resolve())
        if self.teacher_run is not None:
            c.teacher_run = str(Path(self.teacher_run).expanduser().resolve())
        schema_path = Path(self.schema).expanduser()
        if schema_path.suffix == ".json" or schema_path.exists():
            c.schema = str(schema_path.resolve())
        if c.run_id is None:
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            c.run_id = f"{Path(c.out).name}-{stamp}-{secrets.token_hex(3)}"
        if c.bf16 is None:
            c.bf16 = auto_bf16(c.device)
        if num_subjects is not None:
            c.val_subjects, c.test_subjects = split_sizes(num_subjects, self.val_subjects, self.test_subjects)
        return c

    # ------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "method":
                v = v.to_dict()
            elif f.name == "augment":
                v = None if v is None else v.to_dict()
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str | Path | None = None) -> "TrainConfig":
        kw = checked_kwargs(cls, d, "training config", where)
        kw.setdefault("pfl_length_weight", 0.0)   # runs saved before the term trained without it
        try:
            if isinstance(kw.get("method"), dict):
                kw["method"] = MethodConfig.from_dict(kw["method"])
            elif isinstance(kw.get("method"), str):
                kw["method"] = MethodConfig(name=kw["method"])
            if isinstance(kw.get("augment"), dict):
                kw["augment"] = AugmentConfig.from_dict(kw["augment"])
            return cls(**kw)
        except CtdError as e:
            raise CtdError(str(e), path=where) from None
        except (TypeError, ValueError, KeyError) as e:
            raise CtdError(f"not a valid training config ({type(e).__name__}: {e})", path=where) from None

    def differences(self, other: "TrainConfig", ignore: Sequence[str] = RESUME_FREE_FIELDS) -> list[str]:
        """`field: mine != other's` for every field that differs, except those in `ignore`."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {b[k]!r} != {a[k]!r}" for k in a if k not in ignore and a[k] != b[k]]


def auto_bf16(device: str) -> bool:
    """Whether bfloat16 autocast speeds up training on `device` (auto, cpu, cuda, cuda:N): on a
    CUDA GPU where torch says it supports bfloat16, on a CPU with native bfloat16 instructions
    (ctd_runtime.machine.cpu_bf16_support). On an AVX2-only CPU torch emulates bfloat16 and a step
    takes several times longer than in float32."""
    import torch

    from ctd_runtime.machine import cpu_bf16_support

    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            return False
        index = torch.device(device if device.startswith("cuda") else "cuda").index
        major, _ = torch.cuda.get_device_capability(index)
        return major >= 8  # Ampere and newer compute in bfloat16; older GPUs only emulate it
    return cpu_bf16_support() is not None


def split_sizes(num_subjects: int, val: int | None, test: int | None) -> tuple[int, int]:
    """(val, test) subject counts: given ones are kept (val may be 0: the final fit), missing ones
    default to 10% / 20% (>= 1); at least one subject must be left for training. The test subjects
    of a seed do not depend on `val` (ctd_train.data.splits takes them last), so a final fit is
    scored on the same test subjects as the runs that chose its recipe."""
    v = val if val is not None else max(1, round(DEFAULT_VAL_FRACTION * num_subjects))
    t = test if test is not None else max(1, round(DEFAULT_TEST_FRACTION * num_subjects))
    if num_subjects - v - t < 1:
        raise CtdError(
            f"the data has {num_subjects} subjects: too few for {v} validation and {t} test subjects "
            "and at least one training subject"
        )
    return int(v), int(t)


def split_indices(subjects: Sequence[str], config: TrainConfig) -> dict[str, list[int]]:
    """{"train", "val", "test", "all"}: image indices, split by subject with the config's seed,
    the training split then limited to train_subjects / train_images."""
    n = len(set(subjects))
    v, t = split_sizes(n, config.val_subjects, config.test_subjects)
    splits = split_subjects(subjects, counts=[n - v - t, v, t], seed=config.seed)
    if config.train_subjects is not None:
        splits["train"] = limit_subjects(splits["train"], subjects, config.train_subjects, seed=config.seed)
    elif config.train_images is not None:
        splits["train"] = limit_images(splits["train"], subjects, config.train_images, seed=config.seed)
    splits["all"] = list(range(len(subjects)))
    return splits
