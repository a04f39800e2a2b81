"""Landmark differences of a reduced-precision variant (FP16, INT8) against its FP32 reference on
the same inputs, each model run through the backend protocol (`ctd_runtime.backends`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ctd_export.calibration import Sample
from ctd_runtime.backends import create_backend


@dataclass
class PrecisionComparison:
    """Landmark and score differences of a candidate against its reference over the same inputs;
    ME in source px against ground truth when it was given."""

    n_images: int
    n_landmarks: int
    px_mean: float
    px_median: float
    px_p95: float
    px_max: float
    score_max_abs: float
    me_reference: float | None = None
    me_candidate: float | None = None

    @property
    def me_change(self) -> float | None:
        if self.me_reference is None or self.me_candidate is None:
            return None
        return self.me_candidate - self.me_reference

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["me_change"] = self.me_change
        return d


def landmark_differences(
    ref: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    gt: np.ndarray | None = None,
) -> PrecisionComparison:
    """Compare (landmarks [N,K,2], scores [N,K]) of two models; `gt` [N,K,2] source px."""
    lr, sr = (np.asarray(a, np.float64) for a in ref)
    lt, st = (np.asarray(a, np.float64) for a in test)
    d = np.linalg.norm(lt - lr, axis=-1).ravel()
    me_r = me_t = None
    if gt is not None:
        g = np.asarray(gt, np.float64)
        me_r = float(np.linalg.norm(lr - g, axis=-1).mean())
        me_t = float(np.linalg.norm(lt - g, axis=-1).mean())
    return PrecisionComparison(
        n_images=int(lr.shape[0]),
        n_landmarks=int(lr.shape[1]),
        px_mean=float(d.mean()),
        px_median=float(np.median(d)),
        px_p95=float(np.percentile(d, 95)),
        px_max=float(d.max()),
        score_max_abs=float(np.abs(st - sr).max()),
        me_reference=me_r,
        me_candidate=me_t,
    )


def run_samples(model: str | Path, samples: Sequence[Sample], threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A fused model file (model*.onnx, or an engine) on (image [1,H,W,3], crop [1,2,3]) samples
    one by one, through the backend its suffix names: (landmarks [N,K,2], scores [N,K])."""
    options = {} if threads is None else {"threads": threads}
    lms, scs = [], []
    with create_backend(model, **options) as backend:
        for image, crop in samples:
            lm, sc = backend.run(image, crop)
            lms.append(lm)
            scs.append(sc)
    return np.concatenate(lms), np.concatenate(scs)


def compare_models(
    reference: str | Path,
    candidate: str | Path,
    samples: Sequence[Sample],
    gt: np.ndarray | None = None,
) -> PrecisionComparison:
    """Both fused model files on the same samples (ONNX Runtime CPU for .onnx), compared."""
    return landmark_differences(run_samples(reference, samples), run_samples(candidate, samples), gt)
