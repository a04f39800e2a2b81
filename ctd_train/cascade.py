"""Two-stage evaluation: a face model, then an eye model on the fissure crop its corners give.

The first stage decodes its landmarks from 64x64 heatmaps of a whole face crop (about 4 source
pixels per heatmap pixel on IMM), which bounds how well it can place the eye corners. The second
stage (a run trained with `crop="pfl"` on the `imm-eye` schema) sees a square of `crop_scale` x
PFL centred on the fissure and turned level, at several times the resolution, and replaces the
first stage's eye landmarks. Its crop is computed from the first stage's predicted corners, so
what is measured here is what a station running both would get.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctd_runtime.errors import CtdError
from ctd_runtime.metrics import Evaluation
from ctd_runtime.schema import LandmarkSchema
from ctd_train.evaluate import DEFAULT_THRESHOLD, EvalReport, evaluate_loaded, evaluate_predictions, predict_crops


def shared_landmarks(first: LandmarkSchema, second: LandmarkSchema) -> list[tuple[int, int]]:
    """(index in `first`, index in `second`) of every landmark both schemas take from the same
    source point; CtdError when the second schema's PFL pair is not among them."""
    where = {s: i for i, s in enumerate(first.source_indices)}
    pairs = [(where[s], j) for j, s in enumerate(second.source_indices) if s in where]
    shared = {j for _, j in pairs}
    if not set(second.pfl_pair) <= shared:
        raise CtdError(f"schema {second.name!r} refines the PFL pair, but schema {first.name!r} lacks its points")
    return pairs


@dataclass
class CascadeReport:
    """The first stage alone and the cascade, on the same images."""

    first: EvalReport
    refined_pred: np.ndarray                   # [N, K, 2] source px, the first stage's schema
    evaluations: dict[str, Evaluation]         # the cascade, in every unit
    iterations: int

    def summary(self, unit: str = "pfl") -> dict[str, Any]:
        def row(ev: Evaluation) -> dict[str, float]:
            return {"me": ev.summary.me, "sd": ev.summary.sd, "fr": ev.summary.fr, "auc": ev.summary.auc,
                    "pfl_error_mean_abs": ev.pfl_error_mean_abs}

        return {"first_stage": row(self.first.evaluations[unit]), "cascade": row(self.evaluations[unit]),
                "first_stage_px": row(self.first.evaluations["px"]), "cascade_px": row(self.evaluations["px"]),
                "n_images": self.first.n_images, "iterations": self.iterations}


def _image_indices(report: EvalReport, images) -> list[int]:
    where = {name: i for i, name in enumerate(images.image_names)}
    return [where[name] for name in report.image_names]


def refine(eye_run, images, indices: list[int], pred: np.ndarray, face_schema: LandmarkSchema,
           decode: str) -> np.ndarray:
    """`pred` ([N, K, 2], the face schema) with its eye landmarks replaced by the eye run's
    predictions on fissure crops built from pred's own PFL corners."""
    from ctd_train.data.dataset import LandmarkCropDataset
    from ctd_train.config import TrainConfig

    config = TrainConfig.from_dict(eye_run.config, where=eye_run.checkpoint_path)
    if config.crop != "pfl":
        raise CtdError(f"the refinement run was trained on {config.crop!r} crops, not on fissure crops (crop pfl)",
                       path=eye_run.run_dir)
    pairs = shared_landmarks(face_schema, eye_run.schema)
    corners = {idx: pred[n][list(face_schema.pfl_pair)] for n, idx in enumerate(indices)}
    dataset = LandmarkCropDataset(images, indices, eye_run.schema, eye_run.normalization, eye_run.codec, None,
                                  seed=config.seed, crop="pfl", crop_scale=config.crop_scale, box_points=corners)
    eye = predict_crops(eye_run.predictor, dataset, eye_run.codec, decode, batch_size=8).pred
    out = pred.copy()
    for i, j in pairs:
        out[:, i] = eye[:, j]
    return out


def evaluate_cascade(
    face_run_dir: str | Path,
    eye_run_dir: str | Path,
    split: str = "test",
    decode: str | None = None,
    iterations: int = 1,
    unit: str = "pfl",
    threshold: float = DEFAULT_THRESHOLD,
) -> CascadeReport:
    """The face run on `split` of its data (ground-truth face box, as `ctd evaluate`), then
    `iterations` refinement passes of the eye run, each on the crop of the previous corners."""
    from ctd_train.checkpoint import load_run
    from ctd_train.data.annotations import read_annotations

    if iterations < 1:
        raise CtdError(f"iterations must be >= 1, not {iterations}")
    face, eye = load_run(face_run_dir), load_run(eye_run_dir)
    first = evaluate_loaded(face, split=split, decode=decode or face.decode, unit=unit, threshold=threshold,
                            write=False)
    images = read_annotations(first.data, validate_images=False)
    indices = _image_indices(first, images)
    pred = first.pred
    for _ in range(iterations):
        pred = refine(eye, images, indices, pred, face.schema, decode or eye.decode)
    evaluations = evaluate_predictions(pred, first.gt, first.affines, face.schema, unit, threshold)
    return CascadeReport(first=first, refined_pred=pred, evaluations=evaluations, iterations=iterations)
