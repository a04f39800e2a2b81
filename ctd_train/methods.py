"""The training methods of PAPER.md's Table 1 as one task module: FE, FTP, FT (fine-tuning a
teacher's encoder with frozen / partly frozen / free weights), HG (stacked hourglass from scratch)
and CTD-CD, CTD-ED, CTD-Com (fine-tuning plus distillation from the frozen teacher, eq 2); and KD,
landmark distillation from a trained run (a frozen ctd landmark run teaches its heatmaps and
encoder features to a smaller student; ctd_train.kd).

`build_method(config, num_landmarks, teacher)` checks everything before anything trains and returns
a `LandmarkMethod` whose `forward(image, heatmaps, target_weight)` returns the total `loss`, its
terms (`l_r`, `l_cd`, `l_ed`, `l_kd`) and the predicted heatmaps (`pred`); its `predictor` is what
inference and export use."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch import nn

from ctd_runtime.config_dict import checked_kwargs
from ctd_runtime.errors import CtdError
from ctd_runtime.normalization import Normalization
from ctd_train.losses import (
    ED_FEATURES,
    HEATMAP_REDUCTIONS,
    classifier_distillation_loss,
    encoder_distillation_loss,
    heatmap_loss,
)
from ctd_train.models.hourglass import HOURGLASS_NORMALIZATION, StackedHourglass
from ctd_train.models.student import HEADS, LandmarkStudent, build_student

if TYPE_CHECKING:
    from ctd_train.kd import RunTeacher
    from ctd_train.teachers._base import Teacher, TeacherNetwork

METHODS = ("fe", "ftp", "ft", "hg", "ctd-cd", "ctd-ed", "ctd-com", "kd")
CLASSIFIER_DISTILLATION = ("ctd-cd", "ctd-com")
ENCODER_DISTILLATION = ("ctd-ed", "ctd-com")


@dataclass
class MethodConfig:
    """Which method and its weights: lambda_ (eq 2, on each distillation term of the teacher's
    classifier or encoder, L_CD and L_ED; for kd on L_ED against the teacher run's encoder),
    lambda_kd (kd only: on L_R against the teacher run's heatmaps), mu (eq 3's temperature),
    the scale of L_R that lambda is relative to (`loss_reduction`, see
    ctd_train.losses), what L_ED compares (`ed_features`: whole feature maps or pooled
    embeddings), the student head's kind (`head`: SimpleBaseline's or with skips, ctd_train.models.student)
    and channels, and the hourglass's stack count."""

    name: str
    lambda_: float = 0.002
    lambda_kd: float = 1.0
    mu: float = 2.0
    loss_reduction: str = "sum"
    ed_features: str = "map"
    head_channels: int = 256
    head: str = "simple"        # simple (SimpleBaseline) | skip (the encoder's finer maps added back)
    hg_stacks: int = 2

    def __post_init__(self) -> None:
        self.name = str(self.name).strip().lower()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MethodConfig":
        """From `to_dict()`'s output (`lambda` is accepted for `lambda_`)."""
        d = dict(d)
        if "lambda" in d:
            if "lambda_" in d:
                raise CtdError("method config: give `lambda_` or `lambda`, not both")
            d["lambda_"] = d.pop("lambda")
        d = checked_kwargs(cls, d, "method config")
        if "name" not in d:
            raise CtdError(f"method config: `name` is missing (one of {', '.join(METHODS)})")
        return cls(**d)

    def validate(self) -> None:
        """CtdError for an unknown method or an out-of-range weight."""
        if self.name not in METHODS:
            raise CtdError(f"unknown method {self.name!r}: choose one of {', '.join(METHODS)}")
        if not self.lambda_ >= 0:
            raise CtdError(f"method {self.name}: lambda must be >= 0, not {self.lambda_}")
        if not self.mu > 0 or not math.isfinite(self.mu):
            raise CtdError(f"method {self.name}: the temperature mu must be > 0, not {self.mu}")
        if not math.isfinite(self.lambda_):
            raise CtdError(f"method {self.name}: lambda must be finite, not {self.lambda_}")
        if not (self.lambda_kd >= 0 and math.isfinite(self.lambda_kd)):
            raise CtdError(f"method {self.name}: lambda_kd must be a finite number >= 0, not {self.lambda_kd}")
        if self.loss_reduction not in HEATMAP_REDUCTIONS:
            raise CtdError(f"method {self.name}: unknown loss_reduction {self.loss_reduction!r}; choose from "
                           f"{', '.join(HEATMAP_REDUCTIONS)}")
        if self.ed_features not in ED_FEATURES:
            raise CtdError(f"method {self.name}: unknown ed_features {self.ed_features!r}; choose from "
                           f"{', '.join(ED_FEATURES)}")
        if self.head_channels < 1:
            raise CtdError(f"method {self.name}: head_channels must be >= 1, not {self.head_channels}")
        if self.head not in HEADS:
            raise CtdError(f"method {self.name}: unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.hg_stacks < 1:
            raise CtdError(f"method {self.name}: hg_stacks must be >= 1, not {self.hg_stacks}")

    def distillation_weights(self) -> dict[str, float]:
        """The weight of each distillation term in the loss (what `ld_ratio` weighs with)."""
        if self.name == "kd":
            return {"l_kd": self.lambda_kd, "l_ed": self.lambda_}
        return {"l_cd": self.lambda_, "l_ed": self.lambda_}


# --------------------------------------------------------------------------------- freezing


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())


def _is_container(module: nn.Module) -> bool:
    return isinstance(module, (nn.Sequential, nn.ModuleList))


def final_block(encoder: nn.Module) -> nn.Module:
    """The encoder's final convolutional block, which FTP leaves trainable.

    Rule: take the encoder's last child that holds a convolution; while that child is a plain
    container (Sequential / ModuleList) of further containers, descend into it and repeat. So a
    container of blocks (a stage) or a single custom block is the answer:
    resnet50-vggface2 -> `layer4` (conv5_x, 3 bottlenecks); hse-mobilenet-vggface2 -> `blocks[12]`
    (depthwise + pointwise block 13); dlib-resnet29 -> `level0` (its one res_down block).
    An encoder without convolutional children is its own final block."""
    module = encoder
    while True:
        with_conv = [c for c in module.children() if _has_conv(c)]
        if not with_conv:
            return module
        last = with_conv[-1]
        if _is_container(last) and any(_is_container(c) for c in last.children() if _has_conv(c)):
            module = last
            continue
        return last


# --------------------------------------------------------------------------------- the task


def input_normalization(method: "MethodConfig | str", teacher: "Teacher | None") -> Normalization:
    """The input normalisation `method` expects: the teacher's (the student inherits it), or the
    hourglass's ImageNet mean/std for hg."""
    name = method.name if isinstance(method, MethodConfig) else str(method).strip().lower()
    if name == "hg":
        return HOURGLASS_NORMALIZATION
    if teacher is None:
        raise CtdError(f"method {name!r} uses its teacher's input normalisation, but no teacher was given")
    return teacher.input_spec.normalization


class LandmarkMethod(nn.Module):
    """predictor (normalised image -> heatmaps; what inference and export use), the frozen teacher
    (None without distillation) and the loss of the method. `train()` keeps the teacher and the
    frozen part of the student in eval mode."""

    def __init__(
        self,
        config: MethodConfig,
        predictor: nn.Module,
        teacher: "TeacherNetwork | None" = None,
        normalization: Normalization | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.predictor = predictor
        self.teacher = teacher
        self.normalization = normalization
        self.teacher_run: "RunTeacher | None" = None    # kd: set by ctd_train.kd.attach_teacher_run

    @property
    def uses_cd(self) -> bool:
        return self.config.name in CLASSIFIER_DISTILLATION

    @property
    def uses_ed(self) -> bool:
        return self.config.name in ENCODER_DISTILLATION

    @property
    def loss_terms(self) -> tuple[str, ...]:
        """The names of the loss terms `forward` returns besides `loss`."""
        if self.config.name == "kd":
            return ("l_r", "l_kd", "l_ed")
        return ("l_r",) + (("l_cd",) if self.uses_cd else ()) + (("l_ed",) if self.uses_ed else ())

    def input_normalization(self, teacher: "Teacher | None" = None) -> Normalization:
        """The normalisation the predictor expects (from `teacher` when given, else as built)."""
        if teacher is not None or self.normalization is None:
            return input_normalization(self.config, teacher)
        return self.normalization

    def train(self, mode: bool = True) -> "LandmarkMethod":
        super().train(mode)
        for frozen in (self.teacher, self.teacher_run):
            if frozen is not None:
                frozen.eval()
        name = self.config.name
        if name in ("fe", "ftp"):
            encoder = self.predictor.encoder
            encoder.eval()                       # frozen: BN statistics stay the teacher's
            if name == "ftp":
                final_block(encoder).train(mode)
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters the optimiser updates (requires_grad)."""
        return (p for p in self.parameters() if p.requires_grad)

    def forward(
        self, image: torch.Tensor, heatmaps: torch.Tensor, target_weight: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """image: normalised [N,3,H,W]; heatmaps: targets [N,K,H/4,W/4]; target_weight: [N,K]."""
        if self.config.name == "hg":
            out = self.predictor.forward_train(image)
            reduction = self.config.loss_reduction
            l_r = heatmap_loss(out["stack_heatmaps"][0], heatmaps, target_weight, reduction)
            for hm in out["stack_heatmaps"][1:]:          # intermediate supervision
                l_r = l_r + heatmap_loss(hm, heatmaps, target_weight, reduction)
            return {"loss": l_r, "l_r": l_r, "pred": out["heatmaps"]}

        if self.config.name == "kd":
            return self._forward_kd(image, heatmaps, target_weight)
        out = self.predictor.forward_train(image)
        l_r = heatmap_loss(out["heatmaps"], heatmaps, target_weight, self.config.loss_reduction)
        result: dict[str, Any] = {"l_r": l_r}
        loss = l_r
        if self.uses_cd or self.uses_ed:
            assert self.teacher is not None
            with torch.no_grad():
                t_feats = self.teacher.encoder(image)
                t_logits = self.teacher.classifier(t_feats) if self.uses_cd else None
            if self.uses_cd:
                l_cd = classifier_distillation_loss(t_logits, out["logits"], mu=self.config.mu)
                result["l_cd"] = l_cd
                loss = loss + self.config.lambda_ * l_cd
            if self.uses_ed:
                l_ed = encoder_distillation_loss(t_feats, out["features"], self.config.ed_features)
                result["l_ed"] = l_ed
                loss = loss + self.config.lambda_ * l_ed
        result["loss"] = loss
        result["pred"] = out["heatmaps"]
        return result

    def _forward_kd(
        self, image: torch.Tensor, heatmaps: torch.Tensor, target_weight: torch.Tensor | None
    ) -> dict[str, Any]:
        """L_R against the ground truth and against the teacher run's heatmaps (the same landmarks
        dropped), L_ED against its encoder features."""
        if self.teacher_run is None:
            raise CtdError("method kd trains against a teacher run, and none is attached "
                           "(ctd_train.kd.attach_teacher_run; `ctd train --teacher-run RUN_DIR`)")
        c = self.config
        out = self.predictor.forward_train(image)
        taught = self.teacher_run(image)                 # no_grad inside
        l_r = heatmap_loss(out["heatmaps"], heatmaps, target_weight, c.loss_reduction)
        l_kd = heatmap_loss(out["heatmaps"], taught["heatmaps"], target_weight, c.loss_reduction)
        l_ed = encoder_distillation_loss(taught["features"], out["features"], c.ed_features)
        loss = l_r + c.lambda_kd * l_kd + c.lambda_ * l_ed
        return {"loss": loss, "l_r": l_r, "l_kd": l_kd, "l_ed": l_ed, "pred": out["heatmaps"]}


def _teachers_with_classifier_hint() -> str:
    try:
        from ctd_train.teachers._registry import teachers_with_classifier

        names = teachers_with_classifier()
    except Exception:  # a half-installed teacher family must not hide the real error
        names = []
    if not names:
        return ""
    return f"; teachers with a classifier: {', '.join(names)}"


def build_method(config: MethodConfig, num_landmarks: int, teacher: "Teacher | None") -> LandmarkMethod:
    """The method `config.name` for `num_landmarks` landmarks, its student started from `teacher`
    (not needed for hg; kd's teacher run is attached afterwards by ctd_train.kd, so a kd
    checkpoint rebuilds without it). CtdError for an unknown method, a missing teacher, or classifier
    distillation from a teacher without a classifier."""
    config.validate()
    name = config.name
    if num_landmarks < 1:
        raise CtdError(f"method {name}: need at least one landmark, not {num_landmarks}")

    if name == "hg":
        hourglass = StackedHourglass(num_landmarks, num_stacks=config.hg_stacks)
        method = LandmarkMethod(config, hourglass, teacher=None, normalization=HOURGLASS_NORMALIZATION)
        return method.train()

    if teacher is None:
        raise CtdError(f"method {name!r} starts its student from a teacher's encoder, but no teacher was "
                       f"given (only hg trains without one)")
    if name in CLASSIFIER_DISTILLATION and not teacher.has_classifier:
        raise CtdError(
            f"method {name!r} distils the teacher's classifier, but teacher {teacher.name!r} has none"
            f"{_teachers_with_classifier_hint()}; or use ctd-ed (encoder distillation)"
        )

    student: LandmarkStudent = build_student(teacher, num_landmarks, head_channels=config.head_channels,
                                               head=config.head)
    if name not in CLASSIFIER_DISTILLATION:
        student.classifier = None                    # only classifier distillation trains g_t
    if name in ("fe", "ftp"):
        student.encoder.requires_grad_(False)
        if name == "ftp":
            final_block(student.encoder).requires_grad_(True)

    frozen = None
    if name in CLASSIFIER_DISTILLATION or name in ENCODER_DISTILLATION:
        frozen = teacher.frozen()
        frozen.embedding = None                      # never used here
        if name not in CLASSIFIER_DISTILLATION:
            frozen.classifier = None
    method = LandmarkMethod(config, student, teacher=frozen, normalization=teacher.input_spec.normalization)
    return method.train()
