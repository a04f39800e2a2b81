"""What a parity comparison measures and how it is judged: per-landmark distances between the
PyTorch reference and a candidate, the gate of each precision, and the decodes decided by
numerical noise (see `ctd_export.parity` for the whole story)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ctd_runtime import geometry
from ctd_runtime.errors import CtdError

# heatmap pixels a decode may move per unit of relative heatmap change before it counts as unstable
SENSITIVITY = 100.0
# relative size of the random perturbations that probe each decode's conditioning (float32 noise
# of a different but faithful implementation: other summation order, blur, log)
PROBE_NOISE = 1e-5
PROBES = 2


@dataclass
class ParityReport:
    """Landmark distances between reference and candidate, source pixels."""

    max_px: float                       # over the judged (stable) landmarks
    mean_px: float
    per_landmark_max: list[float]
    passed: bool
    tolerance_px: float
    num_images: int
    landmark_names: tuple[str, ...] = ()
    max_score_diff: float = 0.0
    decode: str = ""
    graph: str = ""
    candidate: str = "onnxruntime"     # the backend's name
    model: str = ""                     # the file it ran
    statistic: str = "max"              # what `passed` judged: "max" or "mean" (see Gate)
    unstable: int = 0                   # landmark decodes decided by numerical noise, not judged
    max_px_all: float = 0.0             # over every landmark, unstable ones included
    heatmap_max_rel: float | None = None  # max |candidate - reference| / max |reference| per map
    heatmap_tolerance: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def worst_landmark(self) -> str:
        if not self.per_landmark_max:
            return ""
        i = int(np.argmax(self.per_landmark_max))
        return self.landmark_names[i] if i < len(self.landmark_names) else str(i)

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        judged = "" if self.statistic == "max" else f"{self.statistic} "
        text = (
            f"parity {verdict}: max {self.max_px:.4g} px, mean {self.mean_px:.4g} px "
            f"({judged}tolerance {self.tolerance_px:g} px, {self.num_images} crops, worst {self.worst_landmark})"
        )
        if self.unstable:
            text += f"; {self.unstable} unstable decodes not judged (max over all {self.max_px_all:.4g} px)"
        if self.heatmap_max_rel is not None:
            text += f"; heatmaps within {self.heatmap_max_rel:.2g} of their magnitude"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "max_px": self.max_px,
            "mean_px": self.mean_px,
            "tolerance_px": self.tolerance_px,
            "num_images": self.num_images,
            "per_landmark_max": dict(zip(self.landmark_names or map(str, range(len(self.per_landmark_max))),
                                         self.per_landmark_max)),
            "max_score_diff": self.max_score_diff,
            "unstable": self.unstable,
            "max_px_all": self.max_px_all,
            "heatmap_max_rel": self.heatmap_max_rel,
            "heatmap_tolerance": self.heatmap_tolerance,
            "decode": self.decode,
            "graph": self.graph,
            "candidate": self.candidate,
            "model": self.model,
            "statistic": self.statistic,
            "notes": list(self.notes),
        }


def unstable_decodes(
    run: Any, ref_heatmaps: np.ndarray, cand_heatmaps: np.ndarray | None, crops: np.ndarray, decode: str,
    tolerance_px: float,
) -> np.ndarray:
    """[N, K] bool: landmarks whose numpy decode moves beyond the tolerance (in source px) when
    the reference heatmaps change by float noise: PROBES random relative perturbations of
    PROBE_NOISE, or the actual difference to the candidate's heatmaps where the decode moves by
    more than SENSITIVITY heatmap pixels per unit of that relative difference."""
    r = np.asarray(ref_heatmaps, np.float32)
    ref_crop, _ = run.codec.decode(r, decode)
    ref = geometry.apply_affine(crops, ref_crop.astype(np.float64))

    def moved(other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        crop, _ = run.codec.decode(other, decode)
        px = np.linalg.norm(geometry.apply_affine(crops, crop.astype(np.float64)) - ref, axis=-1)
        return px, np.linalg.norm(crop.astype(np.float64) - ref_crop, axis=-1) / run.codec.stride

    unstable = np.zeros(r.shape[:2], bool)
    rng = np.random.default_rng(0)
    for _ in range(PROBES):
        noise = rng.uniform(-PROBE_NOISE, PROBE_NOISE, size=r.shape).astype(np.float32)
        unstable |= moved(r * (1 + noise))[0] > tolerance_px
    if cand_heatmaps is not None:
        c = np.asarray(cand_heatmaps, np.float32)
        rel = np.abs(c.astype(np.float64) - r).max(axis=(2, 3)) / np.maximum(np.abs(r).max(axis=(2, 3)), 1e-12)
        px, hm = moved(c)
        unstable |= (px > tolerance_px) & (hm > SENSITIVITY * rel)
    return unstable


def compare_landmarks(
    reference: np.ndarray,
    candidate: np.ndarray,
    tolerance_px: float,
    landmark_names: Sequence[str] = (),
    reference_scores: np.ndarray | None = None,
    candidate_scores: np.ndarray | None = None,
    unstable: np.ndarray | None = None,
    statistic: str = "max",
) -> ParityReport:
    """Per-landmark Euclidean distances [N, K] summarised over the judged (not `unstable`)
    landmarks; `passed` when their `statistic` (max or mean) is within `tolerance_px`; a
    non-finite candidate fails whatever its stability."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise CtdError(f"reference landmarks {ref.shape} and candidate {cand.shape} differ in shape")
    dist = np.linalg.norm(ref - cand, axis=-1)
    finite = np.isfinite(dist)
    dist = np.where(finite, dist, np.inf)
    skip = np.zeros(dist.shape, bool) if unstable is None else (np.asarray(unstable, bool) & finite)
    judged = np.where(skip, 0.0, dist)
    score_diff = 0.0
    if reference_scores is not None and candidate_scores is not None:
        score_diff = float(np.max(np.abs(np.asarray(reference_scores, np.float64) - candidate_scores)))
    if statistic not in ("max", "mean"):
        raise CtdError(f"unknown parity statistic {statistic!r}; choose max or mean")
    max_px = float(judged.max())
    n_judged = int((~skip).sum())
    mean_px = float(judged[~skip].mean()) if n_judged else 0.0
    return ParityReport(
        max_px=max_px,
        mean_px=mean_px,
        per_landmark_max=[float(v) for v in judged.max(axis=0)],
        passed=bool(np.isfinite(max_px) and (max_px if statistic == "max" else mean_px) <= tolerance_px),
        tolerance_px=float(tolerance_px),
        num_images=int(ref.shape[0]),
        landmark_names=tuple(landmark_names),
        max_score_diff=score_diff,
        unstable=int(skip.sum()),
        max_px_all=float(dist.max()),
        statistic=statistic,
    )


def heatmap_difference(reference: np.ndarray, candidate: np.ndarray) -> float:
    """max |candidate - reference| / max |reference|, the worst over all maps (inf if non-finite)."""
    ref = np.asarray(reference, np.float64)
    diff = np.abs(np.asarray(candidate, np.float64) - ref).max(axis=(-2, -1))
    scale = np.maximum(np.abs(ref).max(axis=(-2, -1)), 1e-12)
    rel = diff / scale
    return float(rel.max()) if np.all(np.isfinite(rel)) else float("inf")
