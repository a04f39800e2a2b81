"""Synthetic station inputs for the infer and watch tests: blob images the tiny model reads, a
3dMD-like capture (a tilted plane whose texture is a blob image, so its 3D PFL is known exactly),
and broken files of every kind `ctd infer` must refuse."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from ctd_runtime.uv_lookup import texture_px_to_uv
from tests.runtime import _meshes
from tests.runtime.conftest import tiny_blob_image

TEXTURE = (110, 120)  # width, height of the blob textures
PLANE = _meshes.plane(60.0, 40.0)


def blob_png(path: Path, seed: int, h: int = 120, w: int = 110) -> np.ndarray:
    """Write a blob image; its blob centres (3, 2)."""
    img, centres = tiny_blob_image(seed, h, w)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return centres


def plane_capture(folder: Path, seed: int, name: str = "capture", uv_box=(0.0, 0.0, 1.0, 1.0)) -> Path:
    """OBJ + MTL + blob texture of a tilted plane (UVs cover `uv_box`); the OBJ's path."""
    obj = _meshes.write_capture(folder, _meshes.grid(PLANE, 8, 8, uv_box=uv_box), texture_size=TEXTURE, name=name)
    blob_png(folder / f"{name}.png", seed, h=TEXTURE[1], w=TEXTURE[0])
    return obj


def plane_pfl_3d(landmarks_px: np.ndarray, pair: tuple[int, int] = (0, 1)) -> float:
    """The exact 3D PFL on the plane of texture-pixel landmarks (the plane is affine in u, v)."""
    uv = texture_px_to_uv(np.asarray(landmarks_px, dtype=np.float64), TEXTURE)
    p = PLANE(uv[:, 0], uv[:, 1])
    return float(np.linalg.norm(p[pair[0]] - p[pair[1]]))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png_header(path: Path, side: int = 40000) -> None:
    """A PNG whose header claims side x side pixels (refused before decoding)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00"))
                     + png_chunk(b"IEND", b""))


def truncated_copy(src: Path, dst: Path, fraction: float = 0.5) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
