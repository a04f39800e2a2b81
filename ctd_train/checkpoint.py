"""Checkpoints: what a run dir's `checkpoint_best.pt` / `checkpoint_last.pt` hold, and `load_run`,
which rebuilds the predictor from a checkpoint alone (the teacher's architecture comes from
`teacher_skeleton`, its weights file is not needed).

A checkpoint is a plain dict saved with `torch.save` (loaded with `weights_only=True`):

    format, format_version, ctd_version, run_id, epoch, decode
    config        the full resolved TrainConfig (dict)
    schema        LandmarkSchema.to_dict()
    teacher       {"name", "input_spec"} (input_spec None for hg)
    normalization Normalization.to_dict() of the predictor's input
    codec         {"input_size", "stride", "sigma"}
    predictor     the predictor's state dict (image -> heatmaps)
    metrics       this epoch's record (its validation metrics; a final fit has none)
    training      (last checkpoint only) optimizer state, iteration, best, history: for resuming

Files are written atomically (temporary name, then rename).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

import ctd_runtime
from ctd_runtime.atomic import atomic_path
from ctd_runtime.codec import HeatmapCodec
from ctd_runtime.errors import CtdError
from ctd_runtime.normalization import Normalization
from ctd_runtime.schema import LandmarkSchema

CHECKPOINT_FORMAT = "ctd-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
BEST = "checkpoint_best.pt"
LAST = "checkpoint_last.pt"
_REQUIRED = ("format", "ctd_version", "run_id", "config", "schema", "teacher", "normalization", "codec",
             "predictor", "decode")


def checkpoint_path(run_dir: str | Path, which: Literal["best", "last"] = "best") -> Path:
    if which not in ("best", "last"):
        raise CtdError(f"which checkpoint: 'best' or 'last', not {which!r}")
    return Path(run_dir) / (BEST if which == "best" else LAST)


def codec_to_dict(codec: HeatmapCodec) -> dict[str, Any]:
    return {"input_size": codec.input_size, "stride": codec.stride, "sigma": codec.sigma}


def save_checkpoint(
    path: str | Path,
    *,
    predictor: nn.Module,
    config: dict[str, Any],
    schema: LandmarkSchema,
    teacher_name: str,
    input_spec: dict[str, Any] | None,
    normalization: Normalization,
    codec: HeatmapCodec,
    run_id: str,
    epoch: int,
    decode: str = "argmax",
    metrics: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically; `training` (optimizer state etc.) only where resuming needs it."""
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "ctd_version": ctd_runtime.__version__,
        "run_id": str(run_id),
        "epoch": int(epoch),
        "decode": str(decode),
        "config": config,
        "schema": schema.to_dict(),
        "teacher": {"name": teacher_name, "input_spec": input_spec},
        "normalization": normalization.to_dict(),
        "codec": codec_to_dict(codec),
        "predictor": {k: v.detach().cpu().contiguous() for k, v in predictor.state_dict().items()},
        "metrics": metrics or {},
        "training": training,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def read_checkpoint(
    path: str | Path,
    expected_schema: LandmarkSchema | None = None,
    check_version: bool = True,
) -> dict[str, Any]:
    """The checkpoint dict, checked: CtdError naming the file when it is missing, unreadable,
    corrupt, from another ctd version, or (given `expected_schema`) for another schema."""
    path = Path(path)
    if not path.exists():
        raise CtdError("checkpoint not found", path=path)
    if not path.is_file():
        raise CtdError("checkpoint is not a file", path=path)
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as e:
        raise CtdError(f"cannot read checkpoint: {e.strerror or e}", path=path) from None
    ckpt = _torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CtdError("not a ctd checkpoint (no ctd-checkpoint format marker)", path=path)
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CtdError(f"corrupt checkpoint: missing {', '.join(missing)}", path=path)
    if int(ckpt.get("format_version", 0)) > CHECKPOINT_FORMAT_VERSION:
        raise CtdError(
            f"checkpoint format version {ckpt.get('format_version')} is newer than this ctd reads "
            f"({CHECKPOINT_FORMAT_VERSION})",
            path=path,
        )
    if check_version and ckpt["ctd_version"] != ctd_runtime.__version__:
        raise CtdError(
            f"checkpoint was written by ctd {ckpt['ctd_version']}, but this is ctd {ctd_runtime.__version__}; "
            "use the ctd version that trained it (or retrain)",
            path=path,
        )
    if expected_schema is not None:
        got = LandmarkSchema.from_dict(ckpt["schema"], where=path)
        if got.landmark_differences(expected_schema):
            raise CtdError(
                f"checkpoint is for schema {got.name!r} ({got.num_landmarks} landmarks: "
                f"{', '.join(got.landmark_names)}), but schema {expected_schema.name!r} "
                f"({expected_schema.num_landmarks} landmarks) was expected",
                path=path,
            )
    return ckpt


def _torch_load(path: Path) -> Any:
    """torch.load with weights_only=True; one line naming the file when it fails. PyTorch's own
    text is left out: ~400 characters for a truncated zip, and for a foreign pickle the advice
    to retry with weights_only=False, which would run whatever code the file holds."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4" of a foreign file
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # zip, pickle and unpickler-policy errors of a truncated or foreign file
        raise CtdError(f"cannot read the checkpoint ({path.stat().st_size} bytes): truncated, or not a ctd checkpoint",
                       path=path) from None


@dataclass
class LoadedRun:
    """A trained predictor and everything needed to use it (export, evaluation, inference)."""

    run_dir: Path
    predictor: nn.Module          # eval mode: normalised NCHW float -> heatmaps [N, K, H/4, W/4]
    schema: LandmarkSchema
    normalization: Normalization
    codec: HeatmapCodec
    config: dict[str, Any]
    run_id: str
    ctd_version: str
    decode: str
    input_size: int
    checkpoint_path: Path | None = None
    epoch: int = 0
    teacher_name: str = ""
    method_name: str = ""
    metrics: dict[str, Any] | None = None


def _skeleton(name: str, where: Path):
    """The teacher's architecture with random weights (its weights file is not needed)."""
    from ctd_train import teachers

    skeleton = getattr(teachers, "teacher_skeleton", None)
    if skeleton is None:
        raise CtdError(
            f"cannot rebuild the student of teacher {name!r}: this ctd has no teacher_skeleton()",
            path=where,
        )
    try:
        return skeleton(name)
    except CtdError as e:
        raise CtdError(f"cannot rebuild the checkpoint's model: {e}", path=where) from None


def build_predictor(ckpt: dict[str, Any], where: Path) -> tuple[nn.Module, str]:
    """The checkpoint's predictor with its weights loaded, in eval mode, and the method name."""
    from ctd_train.methods import MethodConfig, build_method

    try:
        mcfg = MethodConfig.from_dict(ckpt["config"]["method"])
        num_landmarks = len(ckpt["schema"]["landmark_names"])
    except (KeyError, TypeError) as e:
        raise CtdError(f"corrupt checkpoint: no method in its config ({e})", path=where) from None
    except CtdError as e:
        raise CtdError(f"corrupt checkpoint: {e}", path=where) from None
    teacher = None if mcfg.name == "hg" else _skeleton(ckpt["teacher"]["name"], where)
    try:
        method = build_method(mcfg, num_landmarks, teacher)
    except CtdError as e:
        raise CtdError(f"cannot rebuild the checkpoint's model: {e}", path=where) from None
    predictor = method.predictor
    try:
        predictor.load_state_dict(ckpt["predictor"], strict=True)
    except (RuntimeError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0:3]
        raise CtdError(f"checkpoint weights do not fit the {mcfg.name} model: {' '.join(first)}", path=where) from None
    predictor.eval()
    predictor.requires_grad_(False)
    return predictor, mcfg.name


def load_run(
    run_dir: str | Path,
    which: Literal["best", "last"] = "best",
    expected_schema: LandmarkSchema | None = None,
) -> LoadedRun:
    """Rebuild the predictor of a run dir's best (or last) checkpoint. `run_dir` may also be the
    checkpoint file itself. CtdError naming the file for a missing, corrupt, other-version or
    (given `expected_schema`) other-schema checkpoint."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        path = run_dir
        run_dir = run_dir.parent
    else:
        if not run_dir.exists():
            raise CtdError("run folder not found", path=run_dir)
        path = checkpoint_path(run_dir, which)
    ckpt = read_checkpoint(path, expected_schema=expected_schema)
    schema = LandmarkSchema.from_dict(ckpt["schema"], where=path)
    try:
        normalization = Normalization.from_dict(ckpt["normalization"])
        codec = HeatmapCodec(**{k: ckpt["codec"][k] for k in ("input_size", "stride", "sigma")})
    except (KeyError, TypeError, ValueError) as e:
        raise CtdError(f"corrupt checkpoint: bad normalisation or codec ({e})", path=path) from None
    predictor, method_name = build_predictor(ckpt, path)
    return LoadedRun(
        run_dir=run_dir,
        predictor=predictor,
        schema=schema,
        normalization=normalization,
        codec=codec,
        config=ckpt["config"],
        run_id=str(ckpt["run_id"]),
        ctd_version=str(ckpt["ctd_version"]),
        decode=str(ckpt["decode"]),
        input_size=int(codec.input_size),
        checkpoint_path=path,
        epoch=int(ckpt.get("epoch", 0)),
        teacher_name=str(ckpt["teacher"].get("name", "")),
        method_name=method_name,
        metrics=ckpt.get("metrics"),
    )
