"""The station's one call: `Landmarker(model_path).detect(image) -> Detection`.

    lm = Landmarker("model.onnx")                 # or model.plan (TensorRT)
    det = lm.detect(read_image("capture.png"))    # ctd_runtime.image_io; face found by the model itself
    det = lm.detect(image, box=(x, y, w, h))      # or a known box of the annotated points
    if det.found: print(det.pfl_px, det.flags)

The whole uint8 BGR image goes to the fused graph with a crop affine; warp, normalisation,
network and decode run in the graph, so only K x 3 floats come back per pass.

Finding the face without a detector (DESIGN.md "Face box"): pass 1 on the square crop holding the
whole image, then passes on the crop that the model's own training rule (`ctd.crop`,
`crop_rule.crop_from_landmarks`) makes from the previous pass's landmarks, until that crop stops
moving (centre and side within `converge_tol` of the side) or `max_passes` is reached. A given box
is the box of the annotated points (what the training crop is made from): one pass on its crop,
unless `refine_given_box`. A YuNet file (`face_detector`) gives the first box instead of the
whole image; passes then refine it as in the automatic search.

No face (found False, NaN landmarks, a `reason`): the mean landmark score of the last pass is
below `min_mean_score`; or the crop its landmarks call for differs in side from the crop they were
found in by more than `max_spread_ratio` (landmarks scattered over noise, or squeezed into a
corner); or the passes did not converge.

Threads: one Landmarker may be shared between threads. The backend call (and the detector) run
under a lock, because TensorRT execution contexts and OpenCV's detector are not thread-safe;
everything else keeps no state between calls. Calls from several threads therefore give the same
results as the same calls made one after another; for parallel inference use one Landmarker per
thread.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ctd_runtime.backends import BaseBackend, create_backend
from ctd_runtime.crop_rule import (
    Box, CropBox, CropSpec, FaceFromSchema, check_box, crop_from_box, crop_from_landmarks, whole_image_crop,
)
from ctd_runtime.detection import Detection, PassResult, measurement_of_passes as _measurement
from ctd_runtime.errors import CtdError
from ctd_runtime.face_detector import FaceDetector, YuNetDetector
from ctd_runtime.model_meta import ModelMetadata
from ctd_runtime.pfl import QualityOptions, quality_flags

CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
DAMP_BELOW = 0.2  # crop changes below this fraction of the side are taken half-way


@dataclass(frozen=True)
class LandmarkerOptions:
    """How a Landmarker runs. `backend` None picks by file suffix; `providers` None means CUDA when
    this onnxruntime offers it (onnxruntime-gpu), else the CPU; `crop` None takes the model's
    `ctd.crop`; `face_fit` None the built-in fit of the schema (crop rule "face" only)."""

    backend: str | None = None
    providers: tuple[str, ...] | None = None
    threads: int | None = None
    face_detector: Path | None = None
    max_passes: int = 8
    min_passes: int = 2
    converge_tol: float = 0.05
    refine_given_box: bool = False
    max_batch: int = 8
    min_mean_score: float = 0.25
    max_spread_ratio: float = 1.6
    crop: CropSpec | None = None
    face_fit: FaceFromSchema | None = None
    quality: QualityOptions = field(default_factory=QualityOptions)

    def __post_init__(self) -> None:
        if not 1 <= self.min_passes <= self.max_passes:
            raise CtdError(f"need 1 <= min_passes <= max_passes, not {self.min_passes} and {self.max_passes}")
        if not self.converge_tol > 0 or not self.max_spread_ratio > 1:
            raise CtdError("converge_tol must be > 0 and max_spread_ratio > 1")


def default_providers() -> list[str]:
    """CUDA then CPU when this onnxruntime has the CUDA provider (onnxruntime-gpu), else the CPU."""
    import onnxruntime as ort

    return [CUDA_PROVIDER, CPU_PROVIDER] if CUDA_PROVIDER in ort.get_available_providers() else [CPU_PROVIDER]


def open_backend(path: str | Path, options: LandmarkerOptions) -> BaseBackend:
    """The opened backend for the model file (ONNX Runtime for .onnx, TensorRT for .plan)."""
    backend = create_backend(path, options.backend)  # CtdError for a file of the wrong kind
    if backend.name == "onnxruntime":
        providers = list(options.providers) if options.providers else default_providers()
        backend = create_backend(path, "onnxruntime", providers=providers, threads=options.threads)
    return backend.open()


class Landmarker:
    """Landmarks of faces in images through an exported ctd model; see the module docstring."""

    def __init__(self, model: str | Path | BaseBackend, options: LandmarkerOptions | None = None,
                 detector: FaceDetector | None = None) -> None:
        """`model`: a model file (.onnx, .plan), or a backend made elsewhere (opened here if it is not)."""
        self.options = options or LandmarkerOptions()
        if isinstance(model, BaseBackend):
            self.backend, self.path = model.open(), getattr(model, "path", None)
        else:
            self.backend, self.path = open_backend(model, self.options), Path(model)
        self.metadata: ModelMetadata = self.backend.metadata
        self.crop_spec: CropSpec = self.options.crop or self.metadata.crop_spec
        self.quality = replace(self.options.quality, crop_size=self.metadata.input_size)
        if detector is None and self.options.face_detector is not None:
            detector = YuNetDetector(self.options.face_detector)
        self.detector = detector
        self._lock = threading.Lock()

    @property
    def schema(self):
        return self.metadata.schema

    @property
    def max_batch(self) -> int:
        """Images per backend call: the option, within a TensorRT engine's profile."""
        manifest = getattr(self.backend, "manifest", None)
        profile_max = manifest.profile.get("image", {}).get("max", [self.options.max_batch])[0] if manifest else None
        return max(1, min(self.options.max_batch, profile_max or self.options.max_batch))

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Landmarker":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------------ public calls

    def detect(self, image: np.ndarray, box: Box | None = None) -> Detection:
        """The landmarks of the face in one BGR uint8 image [H, W, 3]; `box` (x, y, w, h) if known."""
        return self.detect_batch([image], [box])[0]

    def detect_batch(self, images: Sequence[np.ndarray], boxes: Sequence[Box | None] | None = None) -> list[Detection]:
        """`detect` for several images; images of the same size share each backend call."""
        images = [_check_image(im) for im in images]
        boxes = list(boxes) if boxes is not None else [None] * len(images)
        if len(boxes) != len(images):
            raise CtdError(f"{len(images)} images but {len(boxes)} boxes")
        boxes = [None if b is None else check_box(b) for b in boxes]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape, []).append(i)
        out: list[Detection | None] = [None] * len(images)
        size = self.max_batch
        for group in groups.values():
            for idx in (group[j:j + size] for j in range(0, len(group), size)):
                stack = images[idx[0]][None] if len(idx) == 1 else np.stack([images[i] for i in idx])
                for i, det in zip(idx, self._detect_group(stack, [boxes[i] for i in idx])):
                    out[i] = det
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------------ the passes

    def _detect_group(self, images: np.ndarray, boxes: list[Box | None]) -> list[Detection]:
        start = time.perf_counter()
        searches = [self._start(img, box) for img, box in zip(images, boxes)]
        active = [i for i, s in enumerate(searches) if s.crop is not None]
        while active:
            affines = np.stack([searches[i].crop.affine(self.metadata.input_size) for i in active])  # type: ignore[union-attr]
            t0 = time.perf_counter()
            with self._lock:
                batch = images if len(active) == len(images) else images[active]
                landmarks, scores = self.backend.run(batch, affines.astype(np.float32))
            seconds = time.perf_counter() - t0
            for j, i in enumerate(active):
                searches[i].add_pass(PassResult(np.asarray(landmarks[j], np.float64), np.asarray(scores[j], np.float64),
                                                searches[i].crop, affines[j], seconds), self)  # type: ignore[arg-type]
            active = [i for i in active if not searches[i].done]
        total = time.perf_counter() - start
        return [s.detection(self, total) for s in searches]

    def _start(self, image: np.ndarray, box: Box | None) -> "_Search":
        h, w = image.shape[:2]
        if box is not None:
            passes = self.options.max_passes if self.options.refine_given_box else 1
            return _Search(crop_from_box(self.crop_spec, box), box, "given", passes, min(self.options.min_passes, passes))
        if self.detector is not None:
            t0 = time.perf_counter()
            with self._lock:
                found = self.detector.boxes(image)
            search = _Search(None, None, "detector", self.options.max_passes, self.options.min_passes)
            search.timings["detector"] = time.perf_counter() - t0
            if not found:
                search.reason = "the face detector found no face"
                return search
            x, y, bw, bh, _ = found[0]
            search.box = (x, y, bw, bh)
            search.crop = crop_from_box(self.crop_spec, search.box)
            return search
        return _Search(whole_image_crop(w, h), None, "auto", self.options.max_passes, self.options.min_passes)

    def next_crop(self, result: PassResult) -> CropBox:
        """The crop the training rule makes from a pass's landmarks."""
        return crop_from_landmarks(self.crop_spec, result.landmarks, self.schema, self.options.face_fit)


@dataclass
class _Search:
    """The passes of one image: the next crop to run, or done."""

    crop: CropBox | None
    box: Box | None
    source: str
    max_passes: int
    min_passes: int
    passes: list[PassResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    reason: str | None = None
    done: bool = False

    def add_pass(self, result: PassResult, lm: Landmarker) -> None:
        """Record a pass; done when its crop stops moving (then check it shows a face) or at the last pass."""
        self.passes.append(result)
        self.timings[f"pass_{len(self.passes)}"] = result.seconds
        nxt = lm.next_crop(result) if np.all(np.isfinite(result.landmarks)) else None
        moved = _crop_change(result.crop, nxt)
        n = len(self.passes)
        if n < self.max_passes and not (n >= self.min_passes and moved <= lm.options.converge_tol):
            # near the fixed point, half steps: the rule's crop can swing between two crops a few % apart
            self.crop = _midway(result.crop, nxt) if moved <= DAMP_BELOW else nxt
            return
        self.done = True
        self.reason = _no_face_reason(result, nxt, lm.options)
        if self.reason is None and moved > lm.options.converge_tol and self.max_passes > 1:
            self.reason = (f"the passes did not converge: the crop still moved {100 * moved:.0f}% of its side "
                           f"after {n} passes (face not found or not in view)")

    def detection(self, lm: Landmarker, total: float) -> Detection:
        k = lm.metadata.num_landmarks
        found = self.reason is None and bool(self.passes)
        final = self.passes[-1] if self.passes else None
        landmarks = final.landmarks if (found and final) else np.full((k, 2), np.nan)
        scores = final.scores if (found and final) else np.full(k, np.nan)
        box = self.box if self.box is not None else (final.crop.box if final else (math.nan,) * 4)
        t0 = time.perf_counter()
        flags = []
        if found:
            flags = quality_flags(_measurement(self.passes, lm.schema), lm.schema, lm.quality)
        timings = dict(self.timings) | {"flags": time.perf_counter() - t0, "total": total}
        return Detection(found, landmarks, scores, lm.schema, box, self.source, tuple(self.passes), timings,  # type: ignore[arg-type]
                         flags, None if found else (self.reason or "no pass was run"))


def _crop_change(a: CropBox, b: CropBox | None) -> float:
    """How far crop b is from crop a, as a fraction of a's side (centre shift or side change); inf for None."""
    if b is None:
        return math.inf
    shift = math.hypot(b.center[0] - a.center[0], b.center[1] - a.center[1]) / a.side
    return max(shift, abs(b.side / a.side - 1.0))


def _midway(a: CropBox, b: CropBox | None) -> CropBox | None:
    """The crop halfway between a and b (same fixed point as b, without b's swings)."""
    if b is None:
        return None
    center = ((a.center[0] + b.center[0]) / 2, (a.center[1] + b.center[1]) / 2)
    return CropBox(center, (a.side + b.side) / 2, (a.rotation_deg + b.rotation_deg) / 2)


def _no_face_reason(result: PassResult, nxt: CropBox | None, options: LandmarkerOptions) -> str | None:
    """Why the last pass shows no face (None when it does)."""
    if nxt is None:
        return "the model returned non-finite landmarks"
    mean_score = float(np.mean(result.scores))
    if not mean_score >= options.min_mean_score:
        return f"no face: mean landmark score {mean_score:.3f} is below {options.min_mean_score}"
    ratio = nxt.side / result.crop.side
    if not 1 / options.max_spread_ratio <= ratio <= options.max_spread_ratio:
        return (f"no face: the landmarks span a crop {ratio:.2f} times the one they were found in "
                f"(outside 1/{options.max_spread_ratio:g}..{options.max_spread_ratio:g})")
    return None


def _check_image(image: Any) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 1:
        raise CtdError(f"an image must be BGR uint8 [H, W, 3] (ctd_runtime.image_io.read_image gives that), "
                       f"not {img.dtype} {img.shape}")
    return img
