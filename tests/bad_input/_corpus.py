"""Helpers of the bad-input corpus: run `ctd` in-process, break files in known ways, and check
that a refused command left nothing behind."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from tests._cli import run_ctd


def ctd(args: list, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr with its line breaks folded) of `ctd args`."""
    return run_ctd(args, capsys, fold_stderr=True)


def temporaries(root: Path) -> list[Path]:
    """Every ctd temporary (`.NAME.*.tmp`, file or folder) under `root`."""
    return sorted(p for p in Path(root).rglob(".*.tmp"))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file under `root`: to assert nothing changed."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients and noise: a JPEG of it keeps structure, so a cut or a smudge is real."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


def _rewrite(path: Path, change: Callable[[bytes], bytes]) -> None:
    path.write_bytes(change(path.read_bytes()))


def _png_with_size(path: Path, side: int) -> None:
    """A whole small PNG whose header claims side x side pixels."""
    data = bytearray(cv2.imencode(".png", photo(8, 8))[1].tobytes())
    data[16:24] = side.to_bytes(4, "big") * 2
    path.write_bytes(bytes(data))


def _corrupt_jpeg(path: Path) -> None:
    """A whole JPEG with 64 zero bytes in its entropy-coded data: libjpeg decodes it, with the
    warning `Corrupt JPEG data` on stderr (cv2.imread returns an image)."""
    h, w = cv2.imread(str(path)).shape[:2]
    data = cv2.imencode(".jpg", photo(h, w))[1].tobytes()
    mid = len(data) // 2
    path.write_bytes(data[:mid] + b"\x00" * 64 + data[mid + 64:])


# image faults: name -> (extension of the folder's images, how to break one, what the error says)
IMAGE_FAULTS: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "jpeg cut to 35%": (".jpg", lambda p: _rewrite(p, lambda b: b[: int(len(b) * 0.35)]), "truncated JPEG"),
    "jpeg without FFD9": (".jpg", lambda p: _rewrite(p, lambda b: b[:-2]), "end-of-image marker FFD9"),
    "jpeg corrupt data": (".jpg", _corrupt_jpeg, "Corrupt JPEG data"),
    "png without IEND": (".png", lambda p: _rewrite(p, lambda b: b[:-12]), "truncated PNG: no IEND"),
    "png cut in half": (".png", lambda p: _rewrite(p, lambda b: b[: len(b) // 2]), "truncated PNG"),
    "empty file": (".png", lambda p: p.write_bytes(b""), "empty file"),
    "text, not an image": (".png", lambda p: p.write_text("hello, I am text\n"), "cannot decode"),
    "huge image": (".png", lambda p: _png_with_size(p, 40000), "40000x40000 px"),
    "missing": (".png", lambda p: p.unlink(), "image file not found"),
}
