"""Synthetic textured OBJ captures for the mesh, UV-lookup and 3D PFL tests.

A grid surface has (nu + 1) x (nv + 1) vertices at UV (i / nu, j / nv) (scaled into `uv_box`) and
3D position surface(u, v); cells are written as quads (or split into triangles). Texture pixels
of grid vertices are exact: x = u W - 0.5, y = (1 - v) H - 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

Surface = Callable[[np.ndarray, np.ndarray], np.ndarray]   # (u, v) arrays -> (..., 3)


@dataclass(frozen=True)
class Grid:
    """Vertices (V, 3), UVs (V, 2; one UV per vertex) and cells as lists of 0-based corners."""

    vertices: np.ndarray
    uvs: np.ndarray
    faces: list[list[int]]
    nu: int
    nv: int

    def vertex(self, i: int, j: int) -> int:
        return j * (self.nu + 1) + i


def grid(surface: Surface, nu: int, nv: int, quads: bool = True,
         uv_box: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)) -> Grid:
    u0, v0, u1, v1 = uv_box
    iu, jv = np.meshgrid(np.arange(nu + 1), np.arange(nv + 1))
    u = u0 + (u1 - u0) * iu.ravel() / nu
    v = v0 + (v1 - v0) * jv.ravel() / nv
    verts = surface((iu.ravel() / nu), (jv.ravel() / nv))
    faces: list[list[int]] = []
    for j in range(nv):
        for i in range(nu):
            a, b = j * (nu + 1) + i, j * (nu + 1) + i + 1
            c, d = b + nu + 1, a + nu + 1
            faces.extend([[a, b, c, d]] if quads else [[a, b, c], [a, c, d]])
    return Grid(np.asarray(verts, dtype=np.float64), np.column_stack([u, v]), faces, nu, nv)


def plane(lx: float = 60.0, ly: float = 40.0) -> Surface:
    """A plane tilted in 3D: an affine map of (u, v), so UV interpolation is exact everywhere."""
    rot = _rotation(0.3, -0.5, 0.2)

    def f(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        p = np.stack([lx * u, ly * v, np.zeros_like(u)], axis=-1)
        return p @ rot.T + np.array([5.0, -3.0, 100.0])
    return f


def cylinder(radius: float, height: float, sector: float) -> Surface:
    """theta = u * sector around the z axis, z = v * height."""
    def f(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        t = u * sector
        return np.stack([radius * np.cos(t), radius * np.sin(t), height * v], axis=-1)
    return f


def sphere(radius: float, lon: tuple[float, float], lat: tuple[float, float]) -> Surface:
    """Lat-long map: longitude from u, latitude from v (a band that avoids the poles)."""
    def f(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        lam = lon[0] + (lon[1] - lon[0]) * u
        phi = lat[0] + (lat[1] - lat[0]) * v
        return radius * np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=-1)
    return f


def _rotation(a: float, b: float, c: float) -> np.ndarray:
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def write_capture(folder: Path, g: Grid, texture_size: tuple[int, int] = (800, 600),
                  negative: bool = False, form: str = "v/vt", name: str = "capture") -> Path:
    """OBJ + MTL + PNG texture of a grid; `form` is the corner syntax ("v/vt", "v/vt/vn", "v")."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = texture_size
    cv2.imwrite(str(folder / f"{name}.png"), np.zeros((h, w, 3), np.uint8))
    (folder / f"{name}.mtl").write_text(f"newmtl skin\nKd 1 1 1\nmap_Kd {name}.png\n")
    n = len(g.vertices)
    lines = [f"# synthetic capture\nmtllib {name}.mtl"]
    lines += [f"v {x!r} {y!r} {z!r}" for x, y, z in g.vertices.tolist()]
    lines += [f"vt {u!r} {v!r}" for u, v in g.uvs.tolist()]
    if "vn" in form:
        lines += ["vn 0 0 1"]
    lines.append("usemtl skin")
    for face in g.faces:
        refs = [(k - n) if negative else (k + 1) for k in face]
        lines.append("f " + " ".join(_corner(r, form, negative) for r in refs))
    path = folder / f"{name}.obj"
    path.write_text("\n".join(lines) + "\n")
    return path


def _corner(r: int, form: str, negative: bool) -> str:
    vn = -1 if negative else 1
    return {"v": f"{r}", "v/vt": f"{r}/{r}", "v/vt/vn": f"{r}/{r}/{vn}", "v//vn": f"{r}//{vn}"}[form]


def vertex_px(g: Grid, i: int, j: int, texture_size: tuple[int, int]) -> np.ndarray:
    """The texture pixel exactly at grid vertex (i, j)."""
    u, v = g.uvs[g.vertex(i, j)]
    w, h = texture_size
    return np.array([u * w - 0.5, (1.0 - v) * h - 0.5])
