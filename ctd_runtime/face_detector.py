"""An optional face detector for the first box: OpenCV's `FaceDetectorYN` with a YuNet ONNX file
the user supplies (nothing is downloaded). Without one, the Landmarker finds the face with the
landmark model itself (coarse-to-fine passes).

A detector is anything with `boxes(image) -> list[(x, y, w, h, score)]`, best first; the
Landmarker takes the first box and refines it with its own passes (a detector's face box is not
the box of the annotated points the model was trained on).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ctd_runtime.errors import CtdError

DetectorBox = tuple[float, float, float, float, float]


class FaceDetector(Protocol):
    def boxes(self, image: np.ndarray) -> list[DetectorBox]: ...


class YuNetDetector:
    """`cv2.FaceDetectorYN` on a YuNet ONNX file (e.g. face_detection_yunet_2023mar.onnx).

    Not thread-safe (the OpenCV object keeps its input size): the Landmarker calls it under its lock.
    """

    def __init__(self, path: str | Path, score_threshold: float = 0.6, nms_threshold: float = 0.3) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise CtdError("face detector file not found", path=self.path)
        if not hasattr(cv2, "FaceDetectorYN"):
            raise CtdError("this OpenCV has no FaceDetectorYN (OpenCV >= 4.5.4 needed)", path=self.path)
        try:
            self._yn = cv2.FaceDetectorYN.create(str(self.path), "", (320, 320), score_threshold, nms_threshold)
        except cv2.error as e:
            first = str(e).strip().splitlines()[-1] if str(e).strip() else "cv2.error"
            raise CtdError(f"cannot load the YuNet face detector: {first}", path=self.path) from None

    def boxes(self, image: np.ndarray) -> list[DetectorBox]:
        h, w = image.shape[:2]
        self._yn.setInputSize((int(w), int(h)))
        _, faces = self._yn.detect(image)
        if faces is None:
            return []
        rows = sorted((tuple(float(v) for v in f[:4]) + (float(f[-1]),) for f in faces), key=lambda r: -r[4])
        return [r for r in rows if r[2] > 0 and r[3] > 0]  # type: ignore[misc]
