"""The overlay PNG of one capture: numbered landmarks, the fissure drawn with its length on it,
and the flags (or why no face was found), so a clinician sees at a glance what was measured."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from ctd_runtime.atomic import write_bytes_atomic
from ctd_runtime.errors import CtdError
from ctd_runtime.schema import LandmarkSchema

GREEN, RED, YELLOW, WHITE, BLACK = (60, 220, 60), (40, 40, 230), (40, 220, 240), (255, 255, 255), (0, 0, 0)


def pfl_label(pfl_px: float | None, pfl_mm: float | None, pfl_3d_mm: float | None) -> str:
    """'PFL 34.1 px  8.53 mm  3D 8.61 mm' with what is known."""
    parts = [f"PFL {pfl_px:.1f} px"] if pfl_px is not None and math.isfinite(pfl_px) else ["PFL -"]
    if pfl_mm is not None and math.isfinite(pfl_mm):
        parts.append(f"{pfl_mm:.2f} mm")
    if pfl_3d_mm is not None and math.isfinite(pfl_3d_mm):
        parts.append(f"3D {pfl_3d_mm:.2f} mm")
    return "  ".join(parts)


def draw_overlay(image: np.ndarray, landmarks: np.ndarray | None, schema: LandmarkSchema, label: str,
                 notes: list[str]) -> np.ndarray:
    """A copy of the BGR image with landmarks numbered 0..K-1, the PFL pair joined and `label`
    written at the fissure, and `notes` (flags, or the no-face reason) in the top-left corner."""
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(0.7, min(h, w) / 500.0)
    thick = max(1, int(round(2 * scale)))
    if landmarks is not None and np.all(np.isfinite(landmarks)):
        pts = np.asarray(landmarks, dtype=np.float64)
        a, b = (tuple(int(round(v)) for v in pts[i]) for i in schema.pfl_pair)
        cv2.line(out, a, b, YELLOW, thick, cv2.LINE_AA)
        for k, (x, y) in enumerate(pts):
            c = (int(round(x)), int(round(y)))
            cv2.circle(out, c, max(2, thick + 1), GREEN, -1, cv2.LINE_AA)
            _text(out, str(k), (c[0] + 3 * thick, c[1] - 3 * thick), 0.45 * scale, GREEN, thick)
        mid = ((a[0] + b[0]) // 2, min(a[1], b[1]) - int(12 * scale))
        _text(out, label, mid, 0.6 * scale, YELLOW, thick)
    y = int(22 * scale)
    for note in notes:
        _text(out, note, (int(8 * scale), y), 0.5 * scale, RED, thick)
        y += int(20 * scale)
    return out


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, colour: tuple[int, int, int], thick: int) -> None:
    """Text with a dark outline, readable on skin and on background."""
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, BLACK, thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


def write_png_atomic(path: str | Path, image: np.ndarray) -> None:
    """Encode and write a PNG through a temporary file (never half-written)."""
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise CtdError("cannot encode the overlay PNG", path=path)
    write_bytes_atomic(path, data.tobytes())
