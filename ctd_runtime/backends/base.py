"""The backend protocol: every way of running an exported model (ONNX Runtime, TensorRT) shows
the same small surface, so the parity gate, `ctd bench` and the station can use any of them.

    with OnnxRuntimeBackend("model.onnx") as backend:        # open() ... close()
        landmarks, scores = backend.run(image, crop)          # uint8 BGR [N,H,W,3], float [N,2,3]
        backend.metadata.schema.landmark_names

`run` takes the fused graph's inputs: BGR uint8 images (OpenCV's order) and the 2x3 crop -> image
affines of `ctd_runtime.geometry.crop_affine`; it returns landmarks in source-image pixels
[N, K, 2] float32 and scores [N, K] float32. A single image [H,W,3] with a single affine [2,3]
gives [K, 2] and [K].
"""

from __future__ import annotations

import abc
from typing import Any, Protocol

import numpy as np

from ctd_runtime.errors import CtdError
from ctd_runtime.model_meta import ModelMetadata


class Backend(Protocol):
    """What the parity gate, the benchmarks and the Landmarker rely on (for type checkers; at
    run time the backends derive from `BaseBackend`)."""

    name: str

    @property
    def metadata(self) -> ModelMetadata: ...

    @property
    def is_open(self) -> bool: ...

    def open(self) -> "Backend": ...

    def run(self, image: np.ndarray, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def run_outputs(self, image: np.ndarray, crop: np.ndarray) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Backend": ...

    def __exit__(self, *exc: Any) -> None: ...


# Inputs ONNX Runtime and TensorRT would run without complaint and answer with finite-looking
# landmarks or NaN with normal scores: every entry point goes through these checks.
MIN_IMAGE_SIDE = 8          # px; a 1x1 image is one grey value
MIN_CROP_DET = 1e-8         # |det| of the crop -> image 2x2 part; a 256 px crop of a 1 px box has 1.5e-5


def prepare_inputs(image: np.ndarray, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Checked, batched, contiguous (image uint8 [N,H,W,3], crop float32 [N,2,3], was_single):
    CtdError for a wrong dtype or shape, a non-finite or degenerate crop affine, or an image
    smaller than MIN_IMAGE_SIDE."""
    img = np.asarray(image)
    a = np.asarray(crop)
    single = img.ndim == 3
    if single:
        img = img[None]
    if a.ndim == 2:
        a = a[None]
    if img.dtype != np.uint8:
        raise CtdError(f"image must be uint8 (BGR, as cv2.imread gives it), not {img.dtype}")
    if img.ndim != 4 or img.shape[3] != 3:
        raise CtdError(f"image must be [H, W, 3] or [N, H, W, 3] BGR, got shape {np.asarray(image).shape}")
    if a.ndim != 3 or a.shape[1:] != (2, 3):
        raise CtdError(f"crop must be a 2x3 affine or [N, 2, 3], got shape {np.asarray(crop).shape}")
    if a.shape[0] != img.shape[0]:
        raise CtdError(f"{img.shape[0]} images but {a.shape[0]} crop affines")
    if not np.all(np.isfinite(a)):
        raise CtdError("crop affine has non-finite values")
    det = np.abs(a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0])
    if np.any(det < MIN_CROP_DET):  # e.g. all zeros: every crop pixel samples one source point
        raise CtdError(f"crop affine {int(np.argmin(det))} is degenerate (determinant {det.min():.3g} of its 2x2 "
                       "part): it maps the crop onto a point or a line, not a square of the image")
    if img.shape[1] < MIN_IMAGE_SIDE or img.shape[2] < MIN_IMAGE_SIDE:
        raise CtdError(f"image of {img.shape[2]}x{img.shape[1]} px: smaller than {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}, "
                       "it holds no face to measure")
    return np.ascontiguousarray(img), np.ascontiguousarray(a, dtype=np.float32), single


class BaseBackend(abc.ABC):
    """Context-manager plumbing and input checks; subclasses implement `_open`, `_run`, `_close`."""

    name = "base"

    def __init__(self) -> None:
        self._metadata: ModelMetadata | None = None
        self._is_open = False

    @property
    def is_open(self) -> bool:
        return self._is_open

    @property
    def metadata(self) -> ModelMetadata:
        if self._metadata is None:
            raise RuntimeError(f"{type(self).__name__}: open() the backend before reading its metadata")
        return self._metadata

    def open(self) -> "BaseBackend":
        if not self._is_open:
            self._metadata = self._open()
            self._is_open = True
        return self

    def close(self) -> None:
        if self._is_open:
            self._close()
            self._is_open = False

    def __enter__(self) -> "BaseBackend":
        return self.open()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, image: np.ndarray, crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (source px) and scores; see the module docstring."""
        outputs = self.run_outputs(image, crop)
        return outputs["landmarks"], outputs["scores"]

    def run_outputs(self, image: np.ndarray, crop: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the graph by name (`heatmaps` too where the graph has it)."""
        if not self._is_open:
            raise RuntimeError(f"{type(self).__name__}: open() the backend before run()")
        img, a, single = prepare_inputs(image, crop)
        outputs = self._run(img, a)
        if single:
            outputs = {k: v[0] for k, v in outputs.items()}
        return outputs

    @abc.abstractmethod
    def _open(self) -> ModelMetadata:
        """Load the model; return its metadata."""

    @abc.abstractmethod
    def _run(self, image: np.ndarray, crop: np.ndarray) -> dict[str, np.ndarray]:
        """Batched, checked inputs -> outputs by name (float32 arrays)."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release the model."""
