"""The training loop: validate everything, then Adam with polynomial learning-rate decay, validation
every epoch (none in a final fit, val_subjects 0), best/last checkpoints, `metrics.jsonl`,
resumption, and a final test evaluation.

A run dir holds:

    config.json            the resolved TrainConfig
    split.json             the image names of the train / val / test splits
    checkpoint_last.pt     every epoch (with optimizer state: running again resumes from it)
    checkpoint_best.pt     the epoch with the lowest validation ME (PFL-normalised); in a final fit
                           (val_subjects 0: no validation) the last epoch
    metrics.jsonl          one JSON line per epoch: lr, loss terms, validation errors (but in a final fit), times
    eval_test.json/.csv    the best checkpoint on the test split; ced.png its CED curve

Reproducibility: python, numpy and torch are seeded from the config's seed; every epoch reseeds
torch and the shuffling from (seed, epoch) and the dataset draws its augmentation from
(seed, epoch, image), so an interrupted and resumed run ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from rich.console import Console

from ctd_runtime.atomic import remove_stale_temps, write_json_atomic, write_text_atomic
from ctd_runtime.codec import HeatmapCodec
from ctd_runtime.errors import CtdError
from ctd_runtime.machine import usable_cores
from ctd_runtime.metrics import evaluate_landmarks
from ctd_runtime.normalization import Normalization
from ctd_runtime.schema import LandmarkSchema, get_schema
from ctd_train.checkpoint import BEST, LAST, LoadedRun, read_checkpoint, save_checkpoint
from ctd_train.config import CONFIG_FILE, SELECT_KEYS, TrainConfig, split_indices
from ctd_train.ema import WeightAverage
from ctd_train.evaluate import DEFAULT_THRESHOLD, evaluate_loaded, predict_crops
from ctd_train.losses import landmark_loss_weights, pfl_length_loss

METRICS_FILE = "metrics.jsonl"
SPLIT_FILE = "split.json"
EVAL_TEST_FILE = "eval_test.json"
BEST_KEY = SELECT_KEYS["me"]  # the validation number that picks checkpoint_best.pt by default (TrainConfig.select)

EpochCallback = Callable[[int, dict[str, Any]], None]


def poly_lr(base_lr: float, iteration: int, total: int, power: float) -> float:
    """Polynomial decay per iteration: base_lr * (1 - iteration / total) ** power (0 at the end)."""
    frac = min(max(iteration / max(total, 1), 0.0), 1.0)
    return float(base_lr * (1.0 - frac) ** power)


def resolve_device(name: str) -> torch.device:
    """`auto` is the GPU when torch sees one, else the CPU; an absent GPU asked for is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CtdError(f"device {name!r} asked for, but torch sees no CUDA device (torch {torch.__version__})")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * 1_000_003 + int(epoch) * 7919 + 17) % 2**63


# ------------------------------------------------------------------------------- validation


def _check_output_folder(out: Path) -> None:
    """CtdError when `out` is a file, cannot be created or written, or is a non-empty non-run folder."""
    if out.exists():
        if not out.is_dir():
            raise CtdError("output path exists and is not a folder", path=out)
        if not os.access(out, os.W_OK | os.X_OK):
            raise CtdError("output folder is not writable", path=out)
        if not (out / CONFIG_FILE).exists() and any(out.iterdir()):
            raise CtdError(
                f"output folder exists, is not empty and holds no {CONFIG_FILE} (not a ctd run); "
                "choose a new or empty folder",
                path=out,
            )
        return
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CtdError(f"cannot create the output folder: {parent} is a file", path=out)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CtdError(f"cannot create the output folder: {parent} is not writable", path=out)


def _existing_config(out: Path) -> TrainConfig | None:
    path = out / CONFIG_FILE
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CtdError(f"cannot read the existing run's config ({e})", path=path) from None
    if not isinstance(d, dict):
        raise CtdError("the existing run's config is not a JSON object", path=path)
    return TrainConfig.from_dict(d, where=path)


@dataclass
class Setup:
    """Everything built and checked before the first step."""

    config: TrainConfig
    out: Path
    schema: LandmarkSchema
    images: Any
    splits: dict[str, list[int]]
    teacher: Any
    method: Any
    normalization: Normalization
    codec: HeatmapCodec
    train_set: Any
    val_set: Any
    resume: bool
    input_spec: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def prepare(config: TrainConfig) -> Setup:
    """Check and build everything (data, schema, teacher, method, output folder) without training.

    CtdError for: bad config values, an output path that is a file / not writable / a non-run
    folder, an existing run with a different config, data lacking the schema's points, a teacher
    that does not load, a method the teacher cannot serve (e.g. classifier distillation without a
    classifier; a kd teacher run that does not load or cannot teach, ctd_train.kd), flip augmentation
    on a schema with neither flip pairs nor flip sources, too few subjects for the split."""
    from ctd_train.data.annotations import read_annotations
    from ctd_train.data.dataset import LandmarkCropDataset
    from ctd_train.kd import attach_teacher_run, load_teacher_run
    from ctd_train.methods import build_method
    from ctd_train.teachers import create_teacher

    config.check()
    config.method.validate()
    out = Path(config.out).expanduser().resolve()
    _check_output_folder(out)
    schema = get_schema(config.schema)
    teacher_run = load_teacher_run(config, schema)  # kd only: a bad folder is refused before the data is read
    images = read_annotations(config.data, validate_images=True)
    schema.select(images.points[:1], where=Path(config.data) / "annotations.csv")
    resolved = config.resolved(num_subjects=len(set(images.subjects)))

    previous = _existing_config(out)
    resume = False
    if previous is not None and not (out / LAST).exists():
        previous = None  # a start that failed or was killed before its first epoch: nothing to resume
    if previous is not None:
        resolved.run_id = previous.run_id
        if config.bf16 is None and previous.bf16 is not None:  # left to the machine: a resumed run keeps its precision
            resolved.bf16 = previous.bf16
        diffs = resolved.differences(previous)
        if diffs:
            raise CtdError(
                "the output folder holds a run with a different config ("
                + "; ".join(f"{d} (existing != new)" for d in diffs[:6])
                + "); resume with the same options or choose another output folder",
                path=out / CONFIG_FILE,
            )
        resume = True

    splits = split_indices(images.subjects, resolved)
    if len(splits["train"]) == 0:
        raise CtdError("the training split is empty")

    seed_everything(resolved.seed)
    teacher = None
    input_spec = None
    if resolved.method.name != "hg":
        teacher = create_teacher(resolved.teacher, resolved.teacher_weights)
        input_spec = teacher.input_spec.to_dict()
    method = build_method(resolved.method, schema.num_landmarks, teacher)
    if teacher_run is not None:
        names = images.image_names
        attach_teacher_run(method, teacher_run, resolved, [names[i] for i in splits["val"] + splits["test"]])
    normalization = method.input_normalization(teacher)
    codec = HeatmapCodec(input_size=resolved.input_size, stride=4, sigma=resolved.sigma)
    crop = {"margin": resolved.margin, "seed": resolved.seed, "crop": resolved.crop, "crop_scale": resolved.crop_scale}
    train_set = LandmarkCropDataset(images, splits["train"], schema, normalization, codec,
                                    augment=resolved.augment, **crop)
    val_set = LandmarkCropDataset(images, splits["val"], schema, normalization, codec, augment=None, **crop)
    # one forward pass on one item: shapes of method, codec and data agree before any training
    probe = train_set[0]
    with torch.no_grad():
        method.eval()
        hm = method.predictor(probe["image"][None])
        method.train()
    if tuple(hm.shape[1:]) != tuple(probe["heatmaps"].shape):
        raise CtdError(f"the {resolved.method.name} model gives heatmaps {tuple(hm.shape[1:])} but the targets are "
                       f"{tuple(probe['heatmaps'].shape)}")
    return Setup(config=resolved, out=out, schema=schema, images=images, splits=splits, teacher=teacher,
                 method=method, normalization=normalization, codec=codec, train_set=train_set,
                 val_set=val_set, resume=resume, input_spec=input_spec)


# ------------------------------------------------------------------------------- the loop


def kept_predictor(setup: Setup, average: WeightAverage | None) -> torch.nn.Module:
    """The weights that are validated, checkpointed and exported: the moving average when the run
    keeps one (TrainConfig.ema_decay), else the trained predictor itself."""
    return setup.method.predictor if average is None else average.module


def _validate(setup: Setup, predictor: torch.nn.Module) -> dict[str, float]:
    c = setup.config
    # always float32: validation numbers must not depend on the training speed settings
    p = predict_crops(predictor, setup.val_set, setup.codec, c.decode,
                      batch_size=max(c.batch_size, 8), channels_last=c.channels_last)
    setup.method.train()
    gt = setup.schema.select(setup.images.points[p.indices])
    px = evaluate_landmarks(p.pred, gt, "px", 1.0, setup.schema.pfl_pair)
    pfl = evaluate_landmarks(p.pred, gt, "pfl", DEFAULT_THRESHOLD, setup.schema.pfl_pair)
    return {
        "val_me_px": px.summary.me, "val_sd_px": px.summary.sd,
        "val_me_pfl": pfl.summary.me, "val_sd_pfl": pfl.summary.sd,
        "val_fr_pfl": pfl.summary.fr, "val_auc_pfl": pfl.summary.auc,
        "val_pfl_error_px": px.pfl_error_mean_abs, "val_pfl_abs": pfl.pfl_error_mean_abs,
    }


def _loader(setup: Setup, epoch: int) -> torch.utils.data.DataLoader:
    c = setup.config
    setup.train_set.set_epoch(epoch)
    g = torch.Generator()
    g.manual_seed(epoch_seed(c.seed, epoch))
    return torch.utils.data.DataLoader(
        setup.train_set, batch_size=c.batch_size, shuffle=True, generator=g, num_workers=c.workers,
        drop_last=False, persistent_workers=False,
    )


def _save(setup: Setup, path: Path, epoch: int, metrics: dict[str, Any], training: dict[str, Any] | None,
          predictor: torch.nn.Module) -> None:
    c = setup.config
    save_checkpoint(
        path, predictor=predictor, config=c.to_dict(), schema=setup.schema,
        teacher_name=c.teacher, input_spec=setup.input_spec, normalization=setup.normalization,
        codec=setup.codec, run_id=c.run_id or "", epoch=epoch, decode=c.decode, metrics=metrics,
        training=training,
    )


def _write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    write_text_atomic(out / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in history))


@dataclass
class LoopState:
    """Where training stands: resumed from checkpoint_last.pt or fresh."""

    start_epoch: int = 0
    iteration: int = 0
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, BEST_KEY: float("inf")})
    history: list[dict[str, Any]] = field(default_factory=list)


def head_parameter_ids(method: Any) -> set[int]:
    """ids of the parameters of the student's new head (lr x head_lr_scale); empty for hg, which
    has no pretrained part."""
    head = getattr(method.predictor, "head", None)
    if head is None or method.config.name == "hg":
        return set()
    return {id(p) for p in head.parameters()}


def build_optimizer(setup: Setup) -> torch.optim.Optimizer:
    """Adam over the trainable parameters: the encoder (and classifier) at lr, the new head at
    lr x head_lr_scale. Each group keeps its base rate in `base_lr` for the polynomial decay."""
    c = setup.config
    params = list(setup.method.trainable_parameters())
    if not params:
        raise CtdError(f"method {c.method.name} has no trainable parameters")
    head_ids = head_parameter_ids(setup.method)
    groups = [
        {"params": [p for p in params if id(p) not in head_ids], "base_lr": c.lr},
        {"params": [p for p in params if id(p) in head_ids], "base_lr": c.lr * c.head_lr_scale},
    ]
    groups = [dict(g, lr=g["base_lr"]) for g in groups if g["params"]]
    return torch.optim.Adam(groups, lr=c.lr)


def _resume_state(setup: Setup, optimizer: torch.optim.Optimizer, iters_per_epoch: int,
                  console: Console, average: WeightAverage | None = None) -> LoopState:
    """The state of checkpoint_last.pt (weights, weight average and optimizer loaded) or a fresh one."""
    c, last_path = setup.config, setup.out / LAST
    if not (setup.resume and last_path.exists()):
        return LoopState()
    ckpt = read_checkpoint(last_path)
    if ckpt["run_id"] != c.run_id:
        raise CtdError(f"checkpoint belongs to run {ckpt['run_id']!r}, the config to {c.run_id!r}", path=last_path)
    training = ckpt.get("training") or {}
    try:
        if average is None:
            setup.method.predictor.load_state_dict(ckpt["predictor"])
        else:   # checkpoints hold the average; the raw weights ride in the training state
            average.restore(setup.method.predictor, ckpt["predictor"], training)
        optimizer.load_state_dict(training["optimizer"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CtdError(f"cannot resume from this checkpoint ({type(e).__name__}: {e})", path=last_path) from None
    for group in optimizer.param_groups:   # an older optimizer state may lack the group's base rate
        group.setdefault("base_lr", c.lr)
    state = LoopState(
        start_epoch=int(ckpt["epoch"]),
        iteration=int(training.get("iteration", int(ckpt["epoch"]) * iters_per_epoch)),
        best=dict(training.get("best", LoopState().best)),
        history=list(training.get("history", [])),
    )
    if state.start_epoch < c.epochs:
        console.print(f"resuming {setup.out} after epoch {state.start_epoch}/{c.epochs}")
    return state


def distillation_ratio(terms: dict[str, float], weights: float | dict[str, float]) -> float | None:
    """sum of weight x term over the distillation terms / L_R of one epoch's mean terms (lambda
    (L_CD + L_ED) / L_R for one weight): how much the distillation weighs against the heatmap
    loss (None without distillation). `weights`: MethodConfig.distillation_weights()."""
    if not isinstance(weights, dict):
        weights = {"l_cd": float(weights), "l_ed": float(weights)}
    if not any(k in terms for k in weights):
        return None
    ld = sum(w * terms[k] for k, w in weights.items() if k in terms)
    return float(ld / terms["l_r"]) if terms.get("l_r") else float("inf")


def _fmt_epoch_terms(sums: dict[str, float], n: int, weights: float | dict[str, float]) -> str:
    means = {k: v / max(n, 1) for k, v in sums.items()}
    ratio = distillation_ratio(means, weights)
    text = " ".join(f"{k} {v:.4g}" for k, v in means.items())
    return text if ratio is None else f"{text} λL_D/L_R {ratio:.3g}"


def _train_epoch(setup: Setup, optimizer: torch.optim.Optimizer, state: LoopState, epoch: int,
                 device: torch.device, console: Console, progress: bool,
                 average: WeightAverage | None = None) -> tuple[dict[str, float], int, float]:
    """One pass over the training set; returns (summed loss terms, images seen, seconds)."""
    c, method = setup.config, setup.method
    iters_per_epoch = -(-len(setup.train_set) // c.batch_size)
    total_iters = c.epochs * iters_per_epoch
    torch.manual_seed(epoch_seed(c.seed, epoch))
    sums = {"loss": 0.0, **{t: 0.0 for t in method.loss_terms}, **({"l_pfl": 0.0} if c.pfl_length_weight > 0 else {})}
    seen, t0 = 0, time.perf_counter()
    loss_weights = landmark_loss_weights(setup.schema.num_landmarks, setup.schema.pfl_pair, c.pfl_weight).to(device)
    bar = _progress_bar(console, progress)
    with bar:
        task = bar.add_task(f"epoch {epoch}/{c.epochs}", total=iters_per_epoch, losses="")
        for batch in _loader(setup, epoch):
            for group in optimizer.param_groups:
                group["lr"] = poly_lr(group["base_lr"], state.iteration, total_iters, c.lr_power)
            result = train_step(setup, optimizer, batch, device, loss_weights,
                                where=f"at epoch {epoch}, iteration {state.iteration + 1}")
            if average is not None:
                average.update(method.predictor)
            state.iteration += 1
            n = int(batch["image"].shape[0])
            seen += n
            for k in sums:
                sums[k] += float(result[k].detach()) * n
            bar.update(task, advance=1, losses=_fmt_epoch_terms(sums, seen, c.method.distillation_weights()))
    return sums, seen, time.perf_counter() - t0


def train_step(setup: Setup, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor],
               device: torch.device, loss_weights: torch.Tensor, where: str = "") -> dict[str, Any]:
    """One optimisation step on `batch` as the run's config asks (channels_last, bf16 autocast, the
    PFL-length term); returns the method's loss terms. CtdError (naming `where`) on a non-finite loss."""
    c = setup.config
    x = batch["image"].to(device, non_blocking=True)
    if c.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=c.bf16):
        result = setup.method(x, batch["heatmaps"].to(device), batch["target_weight"].to(device) * loss_weights)
    if c.pfl_length_weight > 0:
        result = _add_pfl_length_term(setup, result, batch, device)
    loss = result["loss"]
    if not torch.isfinite(loss):
        raise CtdError(f"the loss became {loss.item()} {where}; try a lower learning rate than {c.lr:g}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return result


def _add_pfl_length_term(setup: Setup, result: dict[str, Any], batch: dict[str, torch.Tensor],
                         device: torch.device) -> dict[str, Any]:
    """result with l_pfl (the relative PFL-length error of the decoded pair, in float32) added to
    its loss, weighted by TrainConfig.pfl_length_weight."""
    landmarks_hm = torch.from_numpy(setup.codec.crop_to_heatmap(batch["landmarks"].numpy())).float().to(device)
    l_pfl = pfl_length_loss(result["pred"], landmarks_hm, setup.schema.pfl_pair, batch["target_weight"].to(device))
    return {**result, "l_pfl": l_pfl, "loss": result["loss"] + setup.config.pfl_length_weight * l_pfl}


def _finish_epoch(setup: Setup, optimizer: torch.optim.Optimizer, state: LoopState, epoch: int,
                  sums: dict[str, float], seen: int, train_time: float, console: Console,
                  average: WeightAverage | None = None) -> dict[str, Any]:
    """Validate (but in a final fit), append the epoch's record, write best/last checkpoints and metrics.jsonl."""
    c, out = setup.config, setup.out
    kept = kept_predictor(setup, average)
    t1 = time.perf_counter()
    val = {} if c.final_fit else _validate(setup, kept)
    terms = {k: v / max(seen, 1) for k, v in sums.items()}
    total_iters = c.epochs * -(-len(setup.train_set) // c.batch_size)
    record: dict[str, Any] = {
        "epoch": epoch,
        "lr": poly_lr(c.lr, state.iteration - 1, total_iters, c.lr_power),
        **terms,
        **val,
        "train_time_s": round(train_time, 3),
        "images_per_s": round(seen / max(train_time, 1e-9), 3),
    }
    if not c.final_fit:
        record["val_time_s"] = round(time.perf_counter() - t1, 3)
    ratio = distillation_ratio(terms, c.method.distillation_weights())
    if ratio is not None:
        record["ld_ratio"] = ratio
    state.history.append(record)
    key = SELECT_KEYS[c.select]
    # a final fit keeps its last epoch: written once, at the end, not beside every checkpoint_last.pt
    improved = epoch == c.epochs if c.final_fit else val[key] < state.best.get(key, float("inf"))
    if improved:
        state.best = {"epoch": epoch, **val}
        _save(setup, out / BEST, epoch, record, training=None, predictor=kept)
    training_state = {"optimizer": optimizer.state_dict(), "iteration": state.iteration,
                      "best": state.best, "history": state.history}
    if average is not None:
        training_state.update(average.training_state(setup.method.predictor))
    _save(setup, out / LAST, epoch, record, training=training_state, predictor=kept)
    _write_metrics(out, state.history)
    scores = ("no validation (final fit)" if c.final_fit else
              f"val ME {val['val_me_px']:.3f} px / {val['val_me_pfl']:.4f} PFL, |PFL error| "
              f"{100 * val['val_pfl_abs']:.2f}%{'  (best)' if improved else ''}")
    console.print(
        f"epoch {epoch}/{c.epochs}  {_fmt_epoch_terms(sums, seen, c.method.distillation_weights())}  {scores}  "
        f"{record['images_per_s']:.2f} img/s",
        highlight=False,
    )
    return record


def _write_run_files(setup: Setup) -> list[Path]:
    """config.json (new runs) and split.json: written only once the run can start. Returns what a
    start that fails before its first checkpoint must remove again (the folder too, if made here)."""
    out = setup.out
    created: list[Path] = [] if out.exists() else [out]
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    if not setup.resume:
        write_json_atomic(out / CONFIG_FILE, setup.config.to_dict())
        created.append(out / CONFIG_FILE)
    names = setup.images.image_names
    write_json_atomic(out / SPLIT_FILE, {k: [names[i] for i in v] for k, v in setup.splits.items() if k != "all"})
    if not setup.resume:  # and what its first epoch writes, should it stop halfway through it
        created += [out / SPLIT_FILE, out / BEST, out / LAST, out / METRICS_FILE]
    return created


def _remove_failed_start(out: Path, created: list[Path]) -> None:
    """Undo `_write_run_files` of a new run that stopped before its first checkpoint, so a
    corrected rerun starts afresh instead of meeting "a run with a different config"."""
    for path in reversed(created):
        if path == out:
            if out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        else:
            path.unlink(missing_ok=True)


def train(
    config: TrainConfig,
    *,
    progress: bool = True,
    console: Console | None = None,
    on_epoch_end: EpochCallback | None = None,
    evaluate_test: bool = True,
) -> Path:
    """Train (or resume) the run `config` describes; returns the run dir.

    `on_epoch_end(epoch, record)` is called after each epoch's checkpoints are written (epochs
    count from 1); an exception it raises stops training there, as a kill would.
    """
    console = console or _stderr_console()
    config.check()  # before anything uses a value: --threads -1 must be our error, not torch's
    torch.set_num_threads(config.threads or usable_cores())
    setup = prepare(config)
    c, out, method = setup.config, setup.out, setup.method
    device = resolve_device(c.device)          # before any file: a missing GPU leaves nothing behind
    method.to(device)
    if c.channels_last:
        method.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(setup)
    average = WeightAverage(method.predictor, c.ema_decay) if c.ema_decay > 0 else None
    iters_per_epoch = -(-len(setup.train_set) // c.batch_size)
    created = _write_run_files(setup)
    try:
        state = _resume_state(setup, optimizer, iters_per_epoch, console, average)
        method.train()
        for epoch in range(state.start_epoch + 1, c.epochs + 1):
            sums, seen, train_time = _train_epoch(setup, optimizer, state, epoch, device, console, progress, average)
            record = _finish_epoch(setup, optimizer, state, epoch, sums, seen, train_time, console, average)
            created = []  # a checkpoint exists: the run can be resumed, its files stay
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
    except BaseException:
        _remove_failed_start(out, created)
        raise

    if state.history:
        _write_metrics(out, state.history)
    finished_before = state.start_epoch >= c.epochs and (out / EVAL_TEST_FILE).exists()
    if evaluate_test and (out / BEST).exists() and not finished_before:
        report = _evaluate_best(setup)
        s = report.evaluation.summary
        console.print(
            f"test ({s.n_images} images, best epoch {report.epoch}): ME {s.me:.4f} +- {s.sd:.4f} {s.unit}, "
            f"FR {100 * s.fr:.2f}%, AUC {s.auc:.3f} at {s.threshold:g} {s.unit}; "
            f"{report.evaluations['px'].summary.me:.3f} px",
            highlight=False,
        )
    return out


def _evaluate_best(setup: Setup):
    """The best checkpoint on the test split: eval_test.json, eval_test.csv and ced.png."""
    c = setup.config
    ckpt = read_checkpoint(setup.out / BEST)
    predictor = copy.deepcopy(setup.method.predictor)
    predictor.load_state_dict(ckpt["predictor"])
    predictor.eval()
    run = LoadedRun(
        run_dir=setup.out, predictor=predictor, schema=setup.schema, normalization=setup.normalization,
        codec=setup.codec, config=c.to_dict(), run_id=c.run_id or "", ctd_version=ckpt["ctd_version"],
        decode=c.decode, input_size=c.input_size, checkpoint_path=setup.out / BEST,
        epoch=int(ckpt["epoch"]), teacher_name=c.teacher, method_name=c.method.name,
    )
    return evaluate_loaded(run, split="test", decode=c.decode)


def _stderr_console() -> Console:
    console = Console(stderr=True)
    if not console.is_terminal:  # logs: one line per epoch, not wrapped at 80 columns
        console = Console(stderr=True, width=max(console.width, 160))
    return console


def _progress_bar(console: Console, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[losses]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=True,
    )
