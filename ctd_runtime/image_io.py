"""The one image reader of training, evaluation, export calibration and the station: a file that
is truncated or corrupt is refused, naming the file and why, never decoded half-grey.

OpenCV alone is not enough: `cv2.imread` decodes a JPEG cut at a third of its bytes (the rest is
grey) and only prints libjpeg's `Premature end of JPEG file` on the process's stderr, with no
file name; OpenCV's logging level does not silence or route it (measured with OpenCV 5.0). So a
file must pass three checks:

1. structure, from its bytes: a JPEG ends with its end-of-image marker FFD9 (trailing zero or
   whitespace padding allowed, data appended after the marker is not), a PNG with its IEND chunk;
2. the decoder (`cv2.imdecode`) returns an image;
3. the decoder wrote nothing to stderr while decoding it (libjpeg's `Corrupt JPEG data`,
   `Premature end`; libpng and libtiff errors; OpenCV's own error log). stderr (file descriptor
   2, process-wide) is redirected to a temporary file for the decode, under a lock, so decodes
   in several threads are attributed to the right file; anything another thread writes to
   stderr in those milliseconds is attributed to the image too, except glog/absl log lines
   (MediaPipe's threads write those at any time; no decoder does).

What comes back is always BGR uint8 [H, W, 3] (DESIGN.md, "Colour"): a grayscale image is
replicated into three channels, an alpha channel is dropped, a 16-bit image is scaled by
255 / 65535 (full range to full range, rounded); EXIF orientation is applied, as `cv2.imread`
does. Floating-point images (HDR, float TIFF) are refused: no scale is right for all of them.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ctd_runtime.errors import CtdError

MAX_PIXELS = 16384 * 16384  # 268 MP (800 MB as BGR): beyond any capture; refused before decoding
JPEG_START = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_PADDING = b"\x00\r\n\t "
_OPENCV_LOG_PREFIX = re.compile(r"^\[\s*\w+:[\d@.]+\]\s*global\s+\S+\s+\S+\s+")
_OPENCV_ERROR = re.compile(r"^.*OpenCV\([^)]*\) \S+: error: \(-?\d+:[^)]*\) ")
# glog / absl log lines (MediaPipe, TensorFlow Lite, gRPC threads write them to fd 2 at any time):
# never an image decoder's, so they are not held against the image being decoded meanwhile
_FOREIGN_LOG_LINE = re.compile(
    r"^(?:[IWEF]\d{4} \d\d:\d\d:\d+(?:\.\d+)?\s+\d+\s+\S+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called)"
)
# stderr is one per process: one decode at a time may own it
_STDERR_LOCK = threading.Lock()


class ImageError(CtdError):
    """An image file that cannot be used; `reason` says why without the file name."""

    def __init__(self, reason: str, path: str | Path):
        self.reason = reason
        super().__init__(reason, path=path)


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The image at `path` as BGR uint8 [H, W, 3]; ImageError naming the file when it is missing,
    empty, truncated, corrupt, too large or not an image OpenCV decodes."""
    path = Path(path)
    data = _read_bytes(path)
    fault = structural_fault(data)
    if fault is not None:
        raise ImageError(fault, path)
    size = header_size(data)
    if size is not None:
        _check_pixels(size, max_pixels, path)
    image, messages = _decode(data)
    if image is None:
        raise ImageError(f"cannot decode the image ({messages or 'not an image format OpenCV reads'})", path)
    if messages:
        raise ImageError(f"the decoder reports a damaged file: {messages}", path)
    _check_pixels((image.shape[1], image.shape[0]), max_pixels, path)
    return as_bgr8(image, path)


def _read_bytes(path: Path) -> np.ndarray:
    if not path.exists():
        raise ImageError("image file not found", path)
    if not path.is_file():
        raise ImageError("not a file (expected an image)", path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"cannot read the image file: {e.strerror or e}", path) from None
    if data.size == 0:
        raise ImageError("empty file (0 bytes), not an image", path)
    return data


def structural_fault(data: bytes | np.ndarray) -> str | None:
    """Why a JPEG or PNG byte string is incomplete (None when its end marker is there, or for
    other formats, which the decoder alone judges)."""
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if raw.startswith(JPEG_START):
        if not raw.rstrip(_PADDING).endswith(JPEG_END):
            return ("truncated JPEG: the file does not end with its end-of-image marker FFD9 "
                    "(or has data appended after it)")
    elif raw.startswith(PNG_SIGNATURE):
        if not raw.rstrip(b"\x00").endswith(PNG_IEND):
            return "truncated PNG: no IEND chunk at the end of the file"
    return None


def header_size(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's frame header, without decoding; None for
    other formats or a header that cannot be parsed (the decoder then decides)."""
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    if raw.startswith(PNG_SIGNATURE) and len(raw) >= 24 and raw[12:16] == b"IHDR":
        return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    if raw.startswith(JPEG_START):
        return _jpeg_frame_size(raw)
    return None


def _jpeg_frame_size(raw: bytes) -> tuple[int, int] | None:
    """Walk the JPEG marker segments to the first start-of-frame (SOF0..SOF15 but DHT, JPG, DAC)."""
    i = 2
    while i + 9 <= len(raw):
        if raw[i] != 0xFF:
            return None
        marker = raw[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = int.from_bytes(raw[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return int.from_bytes(raw[i + 7:i + 9], "big"), int.from_bytes(raw[i + 5:i + 7], "big")
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            return None
        i += 2 + length
    return None


def _check_pixels(size: tuple[int, int], max_pixels: int, path: Path) -> None:
    w, h = size
    if w * h > max_pixels:
        raise ImageError(f"image of {w}x{h} px ({w * h / 1e6:.0f} MP) is larger than the {max_pixels / 1e6:.0f} MP "
                         "ctd reads", path)


def _decode(data: np.ndarray) -> tuple[np.ndarray | None, str]:
    """(cv2.imdecode's image or None, what the decoders wrote to stderr meanwhile, one line)."""
    with captured_stderr() as messages:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    return image, _one_line(messages)


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 to a temporary file for the block; the list gets its text.
    Without a usable fd 2 (a daemon with it closed) nothing is captured."""
    messages: list[str] = []
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        try:
            if sys.stderr is not None:
                sys.stderr.flush()  # Python's buffered text goes out before the swap
            saved: int | None = os.dup(2)
        except (OSError, ValueError):
            saved = None
        if saved is None:
            yield messages
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield messages
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            messages.append(sink.read().decode("utf-8", errors="replace"))


def _one_line(messages: list[str]) -> str:
    """The decoders' lines without OpenCV's log prefixes, joined, de-duplicated, at most 300 chars."""
    lines: list[str] = []
    for text in messages:
        for line in text.splitlines():
            if _FOREIGN_LOG_LINE.match(line.strip()):
                continue
            line = _OPENCV_ERROR.sub("", _OPENCV_LOG_PREFIX.sub("", line.strip()))
            if line and line not in lines:
                lines.append(line)
    text = "; ".join(lines)
    return text if len(text) <= 300 else text[:297] + "..."


def as_bgr8(image: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """A decoded image as BGR uint8 [H, W, 3] (16-bit scaled by 255 / 65535; gray replicated,
    alpha dropped); ImageError for floating-point or other pixel types."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"unsupported image layout {image.shape} (expected gray, BGR or BGRA)", path or "image")
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)
    elif image.dtype != np.uint8:
        raise ImageError(f"unsupported pixel type {image.dtype} (ctd reads 8- and 16-bit images)", path or "image")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ImageError(f"image has no pixels ({image.shape[1]}x{image.shape[0]})", path or "image")
    return np.ascontiguousarray(image)
