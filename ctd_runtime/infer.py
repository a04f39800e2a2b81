"""`ctd infer`: captures in, one `CaptureResult` each (+ an overlay PNG), results.jsonl/csv out.

`measure_capture` does one capture: read (image, or OBJ + MTL + texture), detect, PFL in px, in
mm with a pixel spacing (the --spacing option for images, or a `<file>.json` sidecar; see
ctd_runtime.pfl), in 3D through the mesh's UVs, quality flags, overlay. Bad input is a CtdError
naming the file; `run_batch` turns it into an "error" result for that capture and goes on.
A face that is not found is a result too (status "no_face", with the reason), not an error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ctd_runtime.captures import Capture
from ctd_runtime.crop_rule import Box
from ctd_runtime.detection import Detection
from ctd_runtime.errors import CtdError
from ctd_runtime.image_io import MAX_PIXELS, read_image
from ctd_runtime.landmarker import Landmarker
from ctd_runtime.obj_mesh import read_obj
from ctd_runtime.overlay import draw_overlay, pfl_label, write_png_atomic
from ctd_runtime.pfl import quality_flags, resolve_spacing, sidecar_path, validate_spacing
from ctd_runtime.pfl3d import Pfl3D, pfl_3d
from ctd_runtime.results import CaptureResult, write_results


@dataclass(frozen=True)
class InferOptions:
    """What applies to every capture of a batch. `spacing_mm` applies to images only (a texture
    atlas has no single mm per pixel; a mesh's sidecar still does)."""

    box: Box | None = None
    spacing_mm: float | None = None
    overlays: bool = True
    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        if self.spacing_mm is not None:
            validate_spacing(self.spacing_mm, where="--spacing")


@dataclass
class BatchReport:
    """A batch's results in input order, and the files written."""

    results: list[CaptureResult]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def failures(self) -> list[CaptureResult]:
        return [r for r in self.results if r.status == "error"]


def measure_capture(lm: Landmarker, capture: Capture, options: InferOptions,
                    overlay_path: Path | None = None) -> CaptureResult:
    """The result of one capture; CtdError (naming the file) for bad input. The overlay is written
    to `overlay_path` when given."""
    t0 = time.perf_counter()
    mesh = read_obj(capture.path) if capture.is_mesh else None
    texture = _texture_of(mesh) if mesh is not None else capture.path
    image = read_image(texture, options.max_pixels)
    spacing = resolve_spacing(capture.path, None if capture.is_mesh else options.spacing_mm)
    source = None if spacing is None else ("sidecar" if sidecar_path(capture.path).is_file() else "option")
    t_read = time.perf_counter()
    try:
        det = lm.detect(image, options.box)
    except CtdError as e:  # e.g. an image outside a TensorRT engine's profile: name the input
        raise (e if e.path is not None else CtdError(str(e), path=capture.path)) from None
    t_detect = time.perf_counter()
    mapped = pfl_3d(mesh, (image.shape[1], image.shape[0]), det.landmarks, lm.schema) if (mesh and det.found) else None
    t_3d = time.perf_counter()
    result = _result(lm, capture, det, image.shape, spacing, source, mapped)
    result.texture = None if mesh is None else str(texture)
    if overlay_path is not None:
        write_png_atomic(overlay_path, render_overlay(image, det, result))
    t_end = time.perf_counter()
    result.timings = {"read_s": t_read - t0, "detect_s": t_detect - t_read, "pfl3d_s": t_3d - t_detect,
                      "overlay_s": t_end - t_3d, "total_s": t_end - t0,
                      **{f"detect.{k}": v for k, v in det.timings.items()}}
    return result


def _texture_of(mesh) -> Path:
    if mesh.texture_path is None:
        raise CtdError("the OBJ names no texture (mtllib with a map_Kd): cannot find landmarks on it", path=mesh.path)
    return mesh.texture_path


def _result(lm: Landmarker, capture: Capture, det: Detection, shape: tuple[int, ...], spacing: float | None,
            spacing_source: str | None, mapped: Pfl3D | None) -> CaptureResult:
    """The CaptureResult of a detection (flags with spacing and mesh included)."""
    r = CaptureResult(input=str(capture.path), name=capture.name, kind=capture.kind,
                      status="ok" if det.found else "no_face", reason=det.reason,
                      width=int(shape[1]), height=int(shape[0]), box=[float(v) for v in det.box],
                      box_source=det.box_source, passes=len(det.passes), spacing_mm=spacing,
                      spacing_source=spacing_source, model=model_info(lm))
    if not det.found:
        return r
    pfl3 = None if mapped is None else mapped.pfl_3d_mm
    m = det.measurement(spacing, pfl3, () if mapped is None else mapped.outside_uv)
    r.pfl_px, r.pfl_mm, r.pfl_3d_mm = m.pfl_px, m.pfl_mm, m.pfl_3d_mm
    r.flags = [f.to_dict() for f in quality_flags(m, lm.schema, lm.quality)]
    for k, name in enumerate(lm.schema.landmark_names):
        entry = {"name": name, "x": float(det.landmarks[k, 0]), "y": float(det.landmarks[k, 1]),
                 "score": float(det.scores[k])}
        if mapped is not None:
            entry.update(zip(("x3d", "y3d", "z3d"), (float(v) for v in mapped.landmarks_3d[k])))
        r.landmarks.append(entry)
    return r


def model_info(lm: Landmarker) -> dict[str, str]:
    meta = lm.metadata
    return {"path": str(lm.path), "run_id": meta.run_id, "precision": meta.precision, "backend": lm.backend.name,
            "schema": meta.schema.name, "crop_rule": lm.crop_spec.rule}


def render_overlay(image: np.ndarray, det: Detection, result: CaptureResult) -> np.ndarray:
    """The overlay of a result: landmarks, the fissure and its length, and the flags or the reason."""
    notes = [f"no face: {det.reason}"] if not det.found else [f"flag: {c}" for c in flag_codes_of(result)]
    label = pfl_label(result.pfl_px, result.pfl_mm, result.pfl_3d_mm)
    return draw_overlay(image, det.landmarks if det.found else None, det.schema, label, notes)


def flag_codes_of(result: CaptureResult) -> list[str]:
    return list(dict.fromkeys(f["code"] for f in result.flags))


def error_result(capture: Capture, error: Exception) -> CaptureResult:
    """The result of a capture whose input was bad (the error names the file)."""
    return CaptureResult(input=str(capture.path), name=capture.name, kind=capture.kind, status="error",
                         error=str(error))


def run_batch(lm: Landmarker, captures: Sequence[Capture], options: InferOptions, out_dir: str | Path,
              progress: Callable[[Capture, CaptureResult], None] | None = None) -> BatchReport:
    """Every capture through `measure_capture` (an error for one is that capture's result), then
    results.jsonl and results.csv in `out_dir`; overlays in `out_dir/overlays/<name>.png`."""
    out = Path(out_dir)
    results = []
    for capture in captures:
        overlay = out / "overlays" / f"{capture.name}.png" if options.overlays else None
        try:
            result = measure_capture(lm, capture, options, overlay)
        except CtdError as e:
            result = error_result(capture, e)
        results.append(result)
        if progress is not None:
            progress(capture, result)
    jsonl, csv_path = write_results(out, results, lm.schema.landmark_names)
    return BatchReport(results, {"jsonl": jsonl, "csv": csv_path})
