"""The parity gate: an exported model must give the landmarks its PyTorch original gives.

Reference (the training/evaluation pipeline): OpenCV warp (`geometry.warp_to_crop`) ->
normalisation -> PyTorch predictor -> numpy codec decode -> crop -> image through the affine.
Candidate: ONNX Runtime on the exported file with the same uint8 images and affines (a fused
graph through `OnnxRuntimeBackend`; a raw graph on the reference's normalised crops, decoded
with the numpy codec). Distances are Euclidean, in source-image pixels.

Unstable decodes. Argmax and the quarter offset are discontinuous, and DARK is ill-conditioned
on flat heatmaps: where two heatmap pixels (or the peak's two neighbours) are within float noise
of each other, any faithful implementation may decide the other way and move the landmark by a
heatmap pixel. The candidate's warp matches OpenCV's up to one intensity level on a few pixels,
so its heatmaps differ from the reference's a little (about 1e-3 of their magnitude for a
random network, 1e-7 for an untrained one). When the candidate also outputs its heatmaps (the
export's gate graph does), the numpy codec decodes both heatmaps: a landmark whose reference
decode moves by more than the tolerance between the two, and by more than SENSITIVITY heatmap
pixels per unit of relative heatmap change (a well-conditioned decode moves a few; a decision
flip hundreds or more), is "unstable": decided by numerical noise, counted and reported, not
judged by distance. The heatmaps themselves must agree within `heatmap_tolerance` of their
magnitude, which catches a wrong warp, mean, scale or channel order whatever the landmarks do.
Without candidate heatmaps every landmark is judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ctd_runtime import geometry
from ctd_runtime.errors import CtdError
from ctd_runtime.model_meta import ModelMetadata, read_model_metadata

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
    candidate: str = "onnxruntime"
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
        text = (
            f"parity {verdict}: max {self.max_px:.4g} px, mean {self.mean_px:.4g} px "
            f"(tolerance {self.tolerance_px:g} px, {self.num_images} crops, worst {self.worst_landmark})"
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
            "notes": list(self.notes),
        }


def _as_batch(images: Sequence[np.ndarray] | np.ndarray, crops: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    imgs = list(images) if not isinstance(images, np.ndarray) or images.ndim == 4 else [images]
    a = np.asarray(crops, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if len(imgs) == 0:
        raise CtdError("parity check needs at least one image")
    if a.shape != (len(imgs), 2, 3):
        raise CtdError(f"{len(imgs)} images need {len(imgs)} crop affines [N, 2, 3], got shape {a.shape}")
    for img in imgs:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise CtdError(f"parity images must be uint8 BGR [H, W, 3], got {img.dtype} {img.shape}")
    return imgs, a


def reference_crops(run: Any, images: list[np.ndarray], crops: np.ndarray) -> np.ndarray:
    """Normalised float32 NCHW network inputs through OpenCV's warp (the training pipeline)."""
    warped = np.stack([geometry.warp_to_crop(img, a, run.input_size) for img, a in zip(images, crops)])
    return run.normalization.apply(warped)


def predictor_heatmaps(run: Any, net_in: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """The PyTorch predictor's heatmaps for normalised inputs, float32 [N, K, h, w]."""
    import torch

    predictor = run.predictor
    predictor.eval()
    param = next(iter(predictor.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    out = []
    with torch.inference_mode():
        for i in range(0, len(net_in), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(net_in[i:i + batch_size])).to(device)
            out.append(predictor(x).float().cpu().numpy())
    return np.concatenate(out)


def _decode_to_image(run: Any, heatmaps: np.ndarray, crops: np.ndarray, decode: str):
    coords, scores = run.codec.decode(heatmaps, decode)
    return geometry.apply_affine(crops, coords.astype(np.float64)), scores


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


def reference_landmarks(run: Any, images, crops, decode: str) -> tuple[np.ndarray, np.ndarray]:
    """Reference landmarks [N, K, 2] (source px, float64) and scores [N, K]."""
    imgs, a = _as_batch(images, crops)
    heatmaps = predictor_heatmaps(run, reference_crops(run, imgs, a))
    return _decode_to_image(run, heatmaps, a, decode)


def _groups_by_shape(images: list[np.ndarray]) -> list[list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape), []).append(i)
    return list(groups.values())


def fused_outputs(
    onnx_path: str | Path, images, crops, threads: int | None = None, backend: Any = None
) -> dict[str, np.ndarray]:
    """Every output of a fused graph (landmarks [N,K,2] float64, scores, heatmaps if it has them),
    through `OnnxRuntimeBackend` (or the given opened backend); images of one size go through in
    one batch."""
    from ctd_runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    imgs, a = _as_batch(images, crops)
    own = backend is None
    runner = OnnxRuntimeBackend(onnx_path, threads=threads).open() if own else backend
    try:
        parts: dict[str, list[tuple[list[int], np.ndarray]]] = {}
        for idx in _groups_by_shape(imgs):
            out = runner.run_outputs(np.stack([imgs[i] for i in idx]), a[idx].astype(np.float32))
            for name, value in out.items():
                parts.setdefault(name, []).append((idx, value))
    finally:
        if own:
            runner.close()
    result = {}
    for name, chunks in parts.items():
        first = chunks[0][1]
        full = np.zeros((len(imgs),) + first.shape[1:], dtype=np.float64 if name == "landmarks" else first.dtype)
        for idx, value in chunks:
            full[idx] = value
        result[name] = full
    return result


def raw_outputs(
    run: Any, onnx_path: str | Path, images, crops, decode: str, threads: int | None = None
) -> dict[str, np.ndarray]:
    """Landmarks, scores and heatmaps from a raw (heatmap) graph on the reference's own crops,
    numpy-decoded."""
    import onnxruntime as ort

    imgs, a = _as_batch(images, crops)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    net_in = reference_crops(run, imgs, a)
    heatmaps = np.concatenate(
        [session.run(["heatmaps"], {"input": net_in[i:i + 8]})[0] for i in range(0, len(net_in), 8)]
    )
    landmarks, scores = _decode_to_image(run, heatmaps, a, decode)
    return {"landmarks": landmarks, "scores": scores, "heatmaps": heatmaps}


def compare_landmarks(
    reference: np.ndarray,
    candidate: np.ndarray,
    tolerance_px: float,
    landmark_names: Sequence[str] = (),
    reference_scores: np.ndarray | None = None,
    candidate_scores: np.ndarray | None = None,
    unstable: np.ndarray | None = None,
) -> ParityReport:
    """Per-landmark Euclidean distances [N, K] summarised over the judged (not `unstable`)
    landmarks; a non-finite candidate fails whatever its stability."""
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
    max_px = float(judged.max())
    n_judged = int((~skip).sum())
    return ParityReport(
        max_px=max_px,
        mean_px=float(judged[~skip].mean()) if n_judged else 0.0,
        per_landmark_max=[float(v) for v in judged.max(axis=0)],
        passed=bool(np.isfinite(max_px) and max_px <= tolerance_px),
        tolerance_px=float(tolerance_px),
        num_images=int(ref.shape[0]),
        landmark_names=tuple(landmark_names),
        max_score_diff=score_diff,
        unstable=int(skip.sum()),
        max_px_all=float(dist.max()),
    )


def heatmap_difference(reference: np.ndarray, candidate: np.ndarray) -> float:
    """max |candidate - reference| / max |reference|, the worst over all maps (inf if non-finite)."""
    ref = np.asarray(reference, np.float64)
    diff = np.abs(np.asarray(candidate, np.float64) - ref).max(axis=(-2, -1))
    scale = np.maximum(np.abs(ref).max(axis=(-2, -1)), 1e-12)
    rel = diff / scale
    return float(rel.max()) if np.all(np.isfinite(rel)) else float("inf")


def check_parity(
    loaded_run: Any,
    onnx_path: str | Path,
    images: Sequence[np.ndarray] | np.ndarray,
    crops: np.ndarray,
    tolerance_px: float = 0.1,
    threads: int | None = None,
    metadata: ModelMetadata | None = None,
    heatmap_tolerance: float = 0.01,
) -> ParityReport:
    """Compare the exported model with the PyTorch predictor of `loaded_run` on uint8 BGR
    `images` and their crop -> image affines; `passed` when no judged landmark of any image
    moved more than `tolerance_px` source pixels and (where the graph outputs heatmaps) the
    heatmaps agree within `heatmap_tolerance` of their magnitude. The decode method and graph
    kind come from the file's metadata. See the module docstring for unstable decodes."""
    meta = metadata if metadata is not None else read_model_metadata(onnx_path)
    imgs, a = _as_batch(images, crops)
    net_in = reference_crops(loaded_run, imgs, a)
    ref_heatmaps = predictor_heatmaps(loaded_run, net_in)
    ref, ref_scores = _decode_to_image(loaded_run, ref_heatmaps, a, meta.decode)
    if meta.graph == "fused":
        out = fused_outputs(onnx_path, imgs, a, threads=threads)
    else:
        out = raw_outputs(loaded_run, onnx_path, imgs, a, meta.decode, threads=threads)
    rel = None
    cand_heatmaps = out.get("heatmaps")
    if cand_heatmaps is not None:
        if cand_heatmaps.shape != ref_heatmaps.shape:
            raise CtdError(f"candidate heatmaps {cand_heatmaps.shape} differ in shape from PyTorch's "
                           f"{ref_heatmaps.shape}", path=onnx_path)
        rel = heatmap_difference(ref_heatmaps, cand_heatmaps)
    unstable = unstable_decodes(loaded_run, ref_heatmaps, cand_heatmaps, a, meta.decode, tolerance_px)
    report = compare_landmarks(
        ref, out["landmarks"], tolerance_px, loaded_run.schema.landmark_names, ref_scores, out["scores"],
        unstable=unstable,
    )
    report.decode = meta.decode
    report.graph = meta.graph
    if rel is not None:
        report.heatmap_max_rel = rel
        report.heatmap_tolerance = float(heatmap_tolerance)
        if not rel <= heatmap_tolerance:
            report.passed = False
            report.notes.append(
                f"heatmaps differ from PyTorch's by {rel:.3g} of their magnitude (tolerance {heatmap_tolerance:g})"
            )
    if report.unstable:
        total = report.num_images * len(report.per_landmark_max)
        report.notes.append(
            f"{report.unstable} of {total} landmark decodes are decided by numerical noise (near-equal "
            "heatmap values; flat heatmaps of an untrained model) and were not judged by distance"
        )
    return report
