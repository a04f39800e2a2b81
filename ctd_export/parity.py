"""The parity gate: a comparator of an exported model's backends against its PyTorch original.

As in Polygraphy's Comparator, a reference runs once and every runner gets the same inputs:

    reference = torch_reference(run, images, crops, decode)       # the training/evaluation pipeline
    reports = compare_backends(run, reference, ["model.onnx", "model.plan"])   # one report each

Reference: OpenCV warp (`geometry.warp_to_crop`) -> normalisation -> PyTorch predictor -> numpy
codec decode -> crop -> image through the affine. Runners: the backends of
`ctd_runtime.backends` (`create_backend` by file: ONNX Runtime for .onnx, TensorRT for .plan)
on the same uint8 images and affines; a raw (heatmap) graph, which no backend runs, goes through
`ort_session.open_session` on the reference's normalised crops and the numpy decode. Distances
are Euclidean, in source-image pixels; each backend is judged by the gate of its precision
(`gate_for`: the largest judged landmark distance for FP32, 0.1 px by default).

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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ctd_export.parity_report import ParityReport, compare_landmarks, heatmap_difference, unstable_decodes
from ctd_runtime.precision_gate import Gate, gate_for
from ctd_runtime import geometry
from ctd_runtime.backends import SUFFIXES, Backend, create_backend
from ctd_runtime.backends.ort_session import open_session
from ctd_runtime.errors import CtdError
from ctd_runtime.model_meta import ModelMetadata, read_model_metadata

RAW_BATCH = 8  # normalised crops per call of a raw graph


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


@dataclass
class TorchReference:
    """The PyTorch pipeline's outputs on the parity inputs, computed once for every backend."""

    images: list[np.ndarray]
    crops: np.ndarray                   # [N, 2, 3] float64, crop -> image
    decode: str
    net_in: np.ndarray                  # normalised NCHW crops (OpenCV's warp)
    heatmaps: np.ndarray
    landmarks: np.ndarray               # [N, K, 2] source px, float64
    scores: np.ndarray


def torch_reference(run: Any, images: Sequence[np.ndarray] | np.ndarray, crops: np.ndarray,
                    decode: str) -> TorchReference:
    """The reference of `run` (a LoadedRun or anything with its fields) on uint8 BGR `images` and
    their crop -> image affines."""
    imgs, a = _as_batch(images, crops)
    net_in = reference_crops(run, imgs, a)
    heatmaps = predictor_heatmaps(run, net_in)
    landmarks, scores = _decode_to_image(run, heatmaps, a, decode)
    return TorchReference(imgs, a, decode, net_in, heatmaps, landmarks, scores)


def _groups_by_shape(images: list[np.ndarray]) -> list[list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape), []).append(i)
    return list(groups.values())


def backend_outputs(backend: Backend, reference: TorchReference) -> dict[str, np.ndarray]:
    """Every output of an opened backend on the reference's inputs (landmarks [N,K,2] float64,
    scores, heatmaps where the graph has them); images of one size go through in one batch."""
    imgs, a = reference.images, reference.crops
    parts: dict[str, list[tuple[list[int], np.ndarray]]] = {}
    for idx in _groups_by_shape(imgs):
        out = backend.run_outputs(np.stack([imgs[i] for i in idx]), a[idx].astype(np.float32))
        for name, value in out.items():
            parts.setdefault(name, []).append((idx, value))
    result = {}
    for name, chunks in parts.items():
        first = chunks[0][1]
        full = np.zeros((len(imgs),) + first.shape[1:], dtype=np.float64 if name == "landmarks" else first.dtype)
        for idx, value in chunks:
            full[idx] = value
        result[name] = full
    return result


def raw_outputs(run: Any, onnx_path: str | Path, reference: TorchReference,
                threads: int | None = None) -> dict[str, np.ndarray]:
    """Landmarks, scores and heatmaps of a raw (heatmap) graph on the reference's own crops,
    numpy-decoded (no backend runs a raw graph)."""
    session = open_session(onnx_path, threads=threads)
    net_in = reference.net_in
    heatmaps = np.concatenate([session.run(["heatmaps"], {"input": net_in[i:i + RAW_BATCH]})[0]
                               for i in range(0, len(net_in), RAW_BATCH)])
    landmarks, scores = _decode_to_image(run, heatmaps, reference.crops, reference.decode)
    return {"landmarks": landmarks, "scores": scores, "heatmaps": heatmaps}


def judge(run: Any, reference: TorchReference, outputs: dict[str, np.ndarray], gate: Gate,
          heatmap_tolerance: float = 0.01, where: str | Path | None = None) -> ParityReport:
    """A candidate's outputs against the reference: landmark distances judged by `gate` (unstable
    decodes reported, not judged) and, where it outputs heatmaps, their relative difference."""
    cand_heatmaps = outputs.get("heatmaps")
    rel = None
    if cand_heatmaps is not None:
        if cand_heatmaps.shape != reference.heatmaps.shape:
            raise CtdError(f"candidate heatmaps {cand_heatmaps.shape} differ in shape from PyTorch's "
                           f"{reference.heatmaps.shape}", path=where)
        rel = heatmap_difference(reference.heatmaps, cand_heatmaps)
    unstable = unstable_decodes(run, reference.heatmaps, cand_heatmaps, reference.crops, reference.decode,
                                gate.tolerance_px)
    report = compare_landmarks(reference.landmarks, outputs["landmarks"], gate.tolerance_px,
                               run.schema.landmark_names, reference.scores, outputs["scores"],
                               unstable=unstable, statistic=gate.statistic)
    report.decode = reference.decode
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


def backends_for(paths: Sequence[str | Path], threads: int | None = None) -> list[Backend]:
    """One backend per model file, chosen by its suffix (`create_backend`: model*.onnx ONNX
    Runtime with `threads`, model*.plan TensorRT); not opened yet."""
    out = []
    for path in paths:
        ort = SUFFIXES.get(Path(path).suffix.lower()) == "onnxruntime"
        out.append(create_backend(path, **({"threads": threads} if ort and threads is not None else {})))
    return out


def compare_backends(run: Any, reference: TorchReference, backends: Sequence[Backend | str | Path],
                     tolerance_px: float = 0.1, heatmap_tolerance: float = 0.01,
                     threads: int | None = None) -> list[ParityReport]:
    """The comparator: every backend (or model file, see `backends_for`) on the reference's
    inputs, one report each, judged by the gate of the precision its metadata names
    (`gate_for`; FP32 by `tolerance_px`). A backend this call opens is closed again."""
    reports = []
    for item in backends:
        given = isinstance(item, (str, Path))
        backend = backends_for([item], threads)[0] if given else item
        where = item if given else getattr(backend, "path", None)
        opened = not backend.is_open
        if opened:
            backend.open()
        try:
            gate = gate_for(backend.metadata.precision, tolerance_px)
            report = judge(run, reference, backend_outputs(backend, reference), gate, heatmap_tolerance, where)
            report.graph = backend.metadata.graph
            report.candidate, report.model = backend.name, Path(where).name if where is not None else ""
        finally:
            if opened:
                backend.close()
        reports.append(report)
    return reports


def check_parity(
    loaded_run: Any,
    onnx_path: str | Path,
    images: Sequence[np.ndarray] | np.ndarray,
    crops: np.ndarray,
    tolerance_px: float = 0.1,
    threads: int | None = None,
    metadata: ModelMetadata | None = None,
    heatmap_tolerance: float = 0.01,
    reference: TorchReference | None = None,
) -> ParityReport:
    """Compare one exported ONNX file (any name: the export gates a temporary one) with the
    PyTorch predictor of `loaded_run` on uint8 BGR `images` and their crop -> image affines
    (or an already computed `reference` of them); `passed` when no judged landmark moved more
    than `tolerance_px` source pixels and (where the graph outputs heatmaps) the heatmaps agree
    within `heatmap_tolerance` of their magnitude. Decode method and graph kind come from the
    file's metadata. See the module docstring for unstable decodes."""
    meta = metadata if metadata is not None else read_model_metadata(onnx_path)
    if reference is None:
        reference = torch_reference(loaded_run, images, crops, meta.decode)
    if meta.graph == "fused":
        backend = create_backend(onnx_path, "onnxruntime", threads=threads)
        return compare_backends(loaded_run, reference, [backend], tolerance_px, heatmap_tolerance)[0]
    outputs = raw_outputs(loaded_run, onnx_path, reference, threads)
    report = judge(loaded_run, reference, outputs, gate_for(meta.precision, tolerance_px), heatmap_tolerance, onnx_path)
    report.graph, report.model = meta.graph, Path(onnx_path).name
    return report
