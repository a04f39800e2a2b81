"""A 3dMD-style capture of a synthetic face: OBJ (the face surface as a triangulated height field,
mm), its MTL and a texture that is the generated photograph itself.

Each mesh vertex (X, Y, depth(X, Y)) gets the UV of its own projection into the photograph
(ctd_runtime.uv_lookup's convention: u = (x + 0.5) / W, v = 1 - (y + 0.5) / H), so a texture
pixel maps through its UV triangle back onto the surface. Weak perspective makes that map affine
inside each triangle, so a landmark's 3D point is the surface point up to the mesh's flat-
triangle error: for a STEP_MM grid and surface curvature |d2z| < 0.1 / mm near the eyes, at most
STEP_MM^2 / 8 * 0.1 * 2 ~ 0.06 mm per point (the factor 2 for the two directions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctd_runtime.atomic import write_text_atomic
from ctd_runtime.uv_lookup import texture_px_to_uv
from ctd_train.synthetic import face3d
from ctd_train.synthetic.face3d import Identity, Pose

STEP_MM = 1.5
MATERIAL = "face"


def surface_grid(ident: Identity, pose: Pose, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices (V, 3) mm, uvs (V, 2), triangles (F, 3) 0-based) of the face surface's part that
    is well inside the head ellipsoid and projects inside the photograph."""
    a = ident.face_half_width + 10.0
    xs = np.arange(-a, a + 1e-9, STEP_MM)
    ys = np.arange(-70.0, ident.chin_y + 5.0 + 1e-9, STEP_MM)
    gx, gy = np.meshgrid(xs, ys)
    verts = face3d.with_depth(ident, np.column_stack([gx.ravel(), gy.ravel()]))
    px = pose.project(verts)
    w, h = size
    inside = (px[:, 0] > -0.49) & (px[:, 0] < w - 0.51) & (px[:, 1] > -0.49) & (px[:, 1] < h - 0.51)
    inside &= (verts[:, 0] / (ident.face_half_width + 14.0)) ** 2 + ((verts[:, 1] - 20.0) / 135.0) ** 2 < 0.8
    nx = len(xs)
    i, j = np.meshgrid(np.arange(nx - 1), np.arange(len(ys) - 1))
    a00 = (j * nx + i).ravel()
    quads = np.column_stack([a00, a00 + 1, a00 + nx + 1, a00 + nx])
    tris = np.vstack([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]])
    tris = tris[inside[tris].all(axis=1)]
    used = np.unique(tris)
    remap = np.full(len(verts), -1, np.int64)
    remap[used] = np.arange(len(used))
    return verts[used], texture_px_to_uv(px[used], size), remap[tris]


def write_capture(folder: Path, stem: str, texture_name: str, ident: Identity, pose: Pose,
                  size: tuple[int, int]) -> Path:
    """Write `folder/stem.obj` and `folder/stem.mtl` (whose map_Kd is `texture_name`, beside them);
    the OBJ's path."""
    verts, uvs, tris = surface_grid(ident, pose, size)
    lines = [f"# ctd synthetic 3dMD-style capture {stem}: face surface in mm, texture = the photograph",
             f"mtllib {stem}.mtl", f"usemtl {MATERIAL}"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    lines += [f"vt {u:.8f} {v:.8f}" for u, v in uvs]
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in tris + 1]
    obj = folder / f"{stem}.obj"
    write_text_atomic(folder / f"{stem}.mtl", f"newmtl {MATERIAL}\nKd 1 1 1\nmap_Kd {texture_name}\n")
    write_text_atomic(obj, "\n".join(lines) + "\n")
    return obj
