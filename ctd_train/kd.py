"""Landmark distillation from a trained run (method kd): a trained ctd landmark run, frozen, teaches
a (smaller) student its heatmaps and its encoder features, by the CTD machinery of PAPER.md.

    loss = L_R(student, ground truth) + lambda_kd * L_R(student, teacher-run heatmaps)
                                      + lambda_ * L_ED(student encoder, teacher-run encoder)

The student is still started from a face-recognition teacher (`--teacher`), as for ft; the run
only teaches. It is wrapped in `RunTeacher`, which owns its eval mode, its frozen weights and its
own input: the student's normalised crop is converted to the run's normalisation and resized to
the run's input size (bilinear, align_corners False: pixel centres stay put, as the codec's
coordinates do), and its heatmaps are resized back to the student's heatmap size. Encoder feature
maps of different spatial size (a smaller input) can only be compared pooled.

Only training needs the teacher run: the checkpoint holds the student alone, so `load_run`, export
and evaluation of a kd run never open it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ctd_runtime.errors import CtdError
from ctd_runtime.normalization import Normalization

if TYPE_CHECKING:
    from ctd_runtime.schema import LandmarkSchema
    from ctd_train.checkpoint import LoadedRun
    from ctd_train.config import TrainConfig
    from ctd_train.methods import LandmarkMethod

SPLIT_FILE = "split.json"


class RunTeacher(nn.Module):
    """A trained run's predictor as a frozen teacher: student-normalised crop [N, 3, S, S] ->
    {"heatmaps" [N, K, S/4, S/4], "features" (the run's encoder map at its own input size)}."""

    def __init__(self, predictor: nn.Module, input_size: int, normalization: Normalization,
                 student_normalization: Normalization) -> None:
        super().__init__()
        self.predictor = predictor.eval().requires_grad_(False)
        self.input_size = int(input_size)
        self.stride = int(getattr(predictor, "stride", 4))
        self.same_input = normalization == student_normalization
        order = [2, 1, 0] if normalization.channel_order != student_normalization.channel_order else [0, 1, 2]
        as_column = lambda v: torch.tensor(v, dtype=torch.float32).reshape(1, 3, 1, 1)  # noqa: E731
        # x_run = (pixel[order] - mean_run) * scale_run, pixel = x_student / scale_student + mean_student
        self.register_buffer("order", torch.tensor(order), persistent=False)
        self.register_buffer("student_scale", as_column(student_normalization.scale), persistent=False)
        self.register_buffer("student_mean", as_column(student_normalization.mean), persistent=False)
        self.register_buffer("run_scale", as_column(normalization.scale), persistent=False)
        self.register_buffer("run_mean", as_column(normalization.mean), persistent=False)

    def train(self, mode: bool = True) -> "RunTeacher":
        return super().train(False)          # frozen: BN statistics stay the run's

    def run_input(self, x: torch.Tensor) -> torch.Tensor:
        """The student's input as the run expects it: its normalisation, its input size."""
        if not self.same_input:
            pixels = (x.float() / self.student_scale + self.student_mean).index_select(1, self.order)
            x = (pixels - self.run_mean) * self.run_scale
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return x

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.predictor.forward_train(self.run_input(x))
        size = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        heatmaps = out["heatmaps"]
        if tuple(heatmaps.shape[-2:]) != size:
            heatmaps = F.interpolate(heatmaps.float(), size=size, mode="bilinear", align_corners=False)
        return {"heatmaps": heatmaps, "features": out["features"]}


def _check_landmarks(run: "LoadedRun", schema: "LandmarkSchema") -> None:
    """CtdError unless the run's heatmaps are the schema's landmarks (names, source points, PFL
    pair); its description or flip rules may be another ctd version's."""
    differ = schema.landmark_differences(run.schema)
    if differ:
        raise CtdError(f"the teacher run is for schema {run.schema.name!r} ({run.schema.num_landmarks} landmarks: "
                       f"{', '.join(run.schema.landmark_names)}), this run for schema {schema.name!r} "
                       f"({schema.num_landmarks} landmarks); they differ in {', '.join(differ)}", path=run.run_dir)


def load_teacher_run(config: "TrainConfig", schema: "LandmarkSchema") -> "LoadedRun | None":
    """The teacher run of a kd config (None for other methods), loaded by `load_run`: CtdError
    naming the folder when it is missing, not a run, unreadable or trained for other landmarks."""
    from ctd_train.checkpoint import load_run

    if config.method.name != "kd":
        return None
    folder = Path(str(config.teacher_run)).expanduser()
    if not folder.is_dir():
        raise CtdError("teacher run folder not found (--teacher-run takes a trained ctd run folder)", path=folder)
    try:
        run = load_run(folder)
    except CtdError as e:
        raise CtdError(f"the teacher run does not load: {e}", path=folder) from None
    _check_landmarks(run, schema)
    return run


def _check_no_leak(run: "LoadedRun", data: str, held_out: Sequence[str]) -> None:
    """CtdError when the teacher run trained on an image this run validates or tests on."""
    folder = Path(run.run_dir)
    if Path(run.config.get("data", "")).expanduser().resolve() != Path(data).expanduser().resolve():
        return  # other data: its images are not ours
    split = folder / SPLIT_FILE
    if not split.is_file():
        raise CtdError(f"the teacher run has no {SPLIT_FILE}: cannot check that it did not train on this run's "
                       "validation or test images", path=folder)
    try:
        trained_on = set(json.loads(split.read_text())["train"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CtdError(f"cannot read the teacher run's {SPLIT_FILE} ({type(e).__name__}: {e})", path=split) from None
    leaked = sorted(trained_on.intersection(held_out))
    if leaked:
        raise CtdError(f"the teacher run trained on {len(leaked)} of this run's validation/test images (e.g. "
                       f"{leaked[0]}): use the same --seed, --val-subjects and --test-subjects as the teacher run",
                       path=folder)


def _check_features(teacher: RunTeacher, student: nn.Module, input_size: int, ed_features: str, folder: Path) -> None:
    """CtdError when L_ED cannot compare the two encoders' feature maps at these input sizes."""
    x = torch.zeros(1, 3, input_size, input_size)
    was_training = student.training
    student.eval()                           # a probe must not move the student's BN statistics
    with torch.no_grad():
        s = student.encoder(x)
        t = teacher(x)["features"]
    student.train(was_training)
    if s.shape[1] != t.shape[1]:
        raise CtdError(f"the teacher run's encoder gives {t.shape[1]} feature channels, the student's "
                       f"{s.shape[1]}: L_ED needs the same encoder family (--teacher of the run: "
                       f"{teacher.predictor.__class__.__name__})", path=folder)
    if ed_features == "map" and s.shape[2:] != t.shape[2:]:
        raise CtdError(f"the student's feature map is {tuple(s.shape[2:])} at input {input_size}, the teacher run's "
                       f"{tuple(t.shape[2:])} at input {teacher.input_size}: maps of different size cannot be "
                       "compared position by position; use --ed-features pooled", path=folder)


def attach_teacher_run(method: "LandmarkMethod", run: "LoadedRun", config: "TrainConfig",
                       held_out: Sequence[str]) -> RunTeacher:
    """Check that `run` can teach the kd `method` of `config` (a student with an encoder, same
    feature channels, no training image of `run` among `held_out`, this run's validation and test
    image names) and set it as the method's frozen `teacher_run`."""
    folder = Path(run.run_dir)
    if getattr(run.predictor, "encoder", None) is None or not hasattr(run.predictor, "forward_train"):
        raise CtdError(f"the teacher run is a {run.method_name or 'model'} without a teacher encoder (hg?): kd "
                       "distils encoder features too; give a student run (ft, ctd-*, kd)", path=folder)
    if run.config.get("crop", "face") != config.crop:
        raise CtdError(f"the teacher run was trained on {run.config.get('crop')!r} crops, this run uses "
                       f"{config.crop!r}: its heatmaps would be of another region", path=folder)
    _check_no_leak(run, config.data, held_out)
    teacher = RunTeacher(run.predictor, run.input_size, run.normalization, method.input_normalization())
    _check_features(teacher, method.predictor, config.input_size, config.method.ed_features, folder)
    method.teacher_run = teacher
    return teacher
