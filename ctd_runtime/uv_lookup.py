"""Texture-pixel landmarks to 3D points on a textured mesh, through a uniform grid over UV space.

Texture pixels follow the project convention (x right, y down, origin at the *centre* of the
top-left pixel), so the texture's W x H pixels span [-0.5, W - 0.5] x [-0.5, H - 0.5]. OBJ's UV
origin is the bottom-left *corner* of the image, v up. Hence, exactly:

    u = (x + 0.5) / W          v = 1 - (y + 0.5) / H
    x = u * W - 0.5            y = (1 - v) * H - 0.5

A point's 3D position is the barycentric combination, with the weights of the UV triangle that
contains it, of that triangle's 3D vertices. The containing triangle is found through a grid of
G x G cells over [0, 1]^2 (G = sqrt(number of triangles) / 2, a few triangles per cell), each
cell listing the triangles whose UV bounding box touches it: built once per mesh with numpy, a
query tests only the triangles of the point's cell. benchmarks/mesh_lookup.py times it against
a scan of every triangle: on ~10^5 triangles the build costs about as much as scanning a few
dozen points, after which each point costs 50-300x less than a scan. A point in no triangle
gets NaN (flagged by the caller), never an exception. On an edge shared by two triangles either
one is taken: both give the same 3D point. Triangles without UVs or with zero UV area are left out of the index.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctd_runtime.errors import CtdError
from ctd_runtime.obj_mesh import ObjMesh

INSIDE_TOLERANCE = 1e-9    # barycentric weights >= -this count as inside (points on edges)
MIN_UV_AREA2 = 1e-14       # twice the UV area below which a triangle is degenerate
MAX_GRID = 1024            # cells per side at most


def texture_px_to_uv(points: np.ndarray, texture_size: tuple[int, int]) -> np.ndarray:
    """Texture pixels (..., 2) -> OBJ UVs (..., 2); texture_size is (width, height)."""
    w, h = _size(texture_size)
    p = np.asarray(points, dtype=np.float64)
    return np.stack([(p[..., 0] + 0.5) / w, 1.0 - (p[..., 1] + 0.5) / h], axis=-1)


def uv_to_texture_px(uv: np.ndarray, texture_size: tuple[int, int]) -> np.ndarray:
    """OBJ UVs (..., 2) -> texture pixels (..., 2); the inverse of texture_px_to_uv."""
    w, h = _size(texture_size)
    q = np.asarray(uv, dtype=np.float64)
    return np.stack([q[..., 0] * w - 0.5, (1.0 - q[..., 1]) * h - 0.5], axis=-1)


def _size(texture_size: tuple[int, int]) -> tuple[float, float]:
    w, h = (float(s) for s in texture_size)
    if not (w > 0 and h > 0):
        raise ValueError(f"texture size must be (width, height) > 0, got {texture_size}")
    return w, h


@dataclass(frozen=True)
class UvHits:
    """Where points landed: 3D points (P, 3), triangle (P,) and barycentric weights (P, 3).

    Points in no UV triangle have NaN points and weights and triangle -1. `triangle` indexes the
    mesh's triangles (ObjMesh.tri_vertices rows).
    """

    points_3d: np.ndarray
    triangles: np.ndarray
    barycentric: np.ndarray

    @property
    def found(self) -> np.ndarray:
        return self.triangles >= 0


class UvIndex:
    """The UV triangles of one mesh, bucketed in a uniform grid; build once, query many times."""

    def __init__(self, mesh: ObjMesh, cells_per_side: int | None = None) -> None:
        keep, corners, inverse = _usable_triangles(mesh)
        if keep.size == 0:
            raise CtdError("mesh has no textured faces with a non-zero UV area: nothing to map onto", path=mesh.path)
        self.mesh = mesh
        self.tri_ids = keep                                   # rows of mesh.tri_vertices
        self._origin = np.ascontiguousarray(corners[:, 0].T)  # (2, F): each triangle's corner 0
        self._inverse = inverse                               # (4, F): uv offset -> (l1, l2)
        self._vertex_ids = mesh.tri_vertices[keep]            # (F, 3)
        n = len(keep)
        self.grid = cells_per_side or int(np.clip(np.ceil(np.sqrt(n) / 2), 1, MAX_GRID))
        self._cell_start, self._cell_tris = _bucket(corners, self.grid)

    def locate(self, uv: np.ndarray) -> UvHits:
        """UV points (P, 2) -> their 3D points through the grid."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        ok = np.all(np.isfinite(uv), axis=1)
        cells = _cell_of(np.where(ok[:, None], uv, 0.0), self.grid)
        first, count = self._cell_start[cells], self._cell_start[cells + 1] - self._cell_start[cells]
        count = np.where(ok, count, 0)
        pid = np.repeat(np.arange(len(uv)), count)
        offset = np.arange(pid.size) - np.repeat(np.cumsum(count) - count, count)
        cand = self._cell_tris[np.repeat(first, count) + offset]
        return self._best(uv, pid, cand)

    def locate_px(self, points_px: np.ndarray, texture_size: tuple[int, int]) -> UvHits:
        """Texture-pixel points (P, 2) -> their 3D points."""
        return self.locate(texture_px_to_uv(points_px, texture_size))

    def locate_by_scan(self, uv: np.ndarray) -> UvHits:
        """The same answer as `locate` by testing every triangle for every point (the baseline:
        one vectorised pass over all F triangles per point, no index)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        (ou, ov), (i00, i01, i10, i11) = self._origin, self._inverse
        best = np.zeros(len(uv), dtype=np.int64)
        for i, (pu, pv) in enumerate(uv):
            du, dv = pu - ou, pv - ov
            l1 = i00 * du + i01 * dv
            l2 = i10 * du + i11 * dv
            best[i] = np.argmax(np.minimum(np.minimum(1.0 - l1 - l2, l1), l2))
        ok = np.all(np.isfinite(uv), axis=1)
        return self._best(uv, np.flatnonzero(ok), best[ok])

    def _weights(self, uv: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Barycentric weights (n, 3) of points uv (n, 2) in candidate triangles cand (n,)."""
        du, dv = uv[:, 0] - self._origin[0, cand], uv[:, 1] - self._origin[1, cand]
        inv = self._inverse[:, cand]
        l1 = inv[0] * du + inv[1] * dv
        l2 = inv[2] * du + inv[3] * dv
        return np.column_stack([1.0 - l1 - l2, l1, l2])

    def _best(self, uv: np.ndarray, pid: np.ndarray, cand: np.ndarray) -> UvHits:
        """For each point, the candidate it is most inside of (if inside at all)."""
        p = len(uv)
        points = np.full((p, 3), np.nan)
        bary = np.full((p, 3), np.nan)
        tris = np.full(p, -1, dtype=np.int64)
        if pid.size:
            w = self._weights(uv[pid], cand)
            score = w.min(axis=1)
            order = np.lexsort((-score, pid))
            _, first = np.unique(pid[order], return_index=True)
            pick = order[first]
            pick = pick[score[pick] >= -INSIDE_TOLERANCE]
            who, tri, wts = pid[pick], cand[pick], w[pick]
            xyz = self.mesh.vertices[self._vertex_ids[tri]]   # (n, 3 corners, 3)
            points[who] = np.einsum("nk,nkd->nd", wts, xyz)
            bary[who] = wts
            tris[who] = self.tri_ids[tri]
        return UvHits(points, tris, bary)


def _usable_triangles(mesh: ObjMesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Triangles with UVs and a non-degenerate UV area: their indices, UV corners (F, 3, 2) and
    the inverse (4, F) of their edge matrix [c1 - c0, c2 - c0] (rows i00, i01, i10, i11)."""
    textured = mesh.textured
    ids = np.arange(len(textured)) if textured.all() else np.flatnonzero(textured)
    c = mesh.uvs[mesh.tri_uvs if len(ids) == len(textured) else mesh.tri_uvs[ids]]
    e1, e2 = c[:, 1] - c[:, 0], c[:, 2] - c[:, 0]
    det = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
    ok = np.abs(det) > MIN_UV_AREA2
    if not ok.all():
        ids, c, e1, e2, det = ids[ok], c[ok], e1[ok], e2[ok], det[ok]
    inverse = np.stack([e2[:, 1], -e2[:, 0], -e1[:, 1], e1[:, 0]]) / det
    return ids, c, inverse


def _cell_of(uv: np.ndarray, grid: int) -> np.ndarray:
    """Flat cell index of UV points (clipped into the grid)."""
    ij = np.clip(np.floor(uv * grid), 0, grid - 1).astype(np.int64)
    return ij[:, 1] * grid + ij[:, 0]


def _bucket(corners: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists (cell start, triangles) of the triangles whose UV bounding box, padded by
    INSIDE_TOLERANCE, touches each cell; within a cell, triangles in increasing order."""
    lo = np.minimum(np.minimum(corners[:, 0], corners[:, 1]), corners[:, 2])
    hi = np.maximum(np.maximum(corners[:, 0], corners[:, 1]), corners[:, 2])
    lo = np.clip(np.floor((lo - INSIDE_TOLERANCE) * grid), 0, grid - 1).astype(np.int64)
    hi = np.clip(np.floor((hi + INSIDE_TOLERANCE) * grid), 0, grid - 1).astype(np.int64)
    span = hi - lo + 1                                        # (F, 2) cells in u and v
    small = np.all(span <= 2, axis=1)                         # nearly all of a fine mesh
    tri_s, cell_s = _pairs_small(lo[small], span[small], np.flatnonzero(small), grid)
    tri_l, cell_l = _pairs_any(lo[~small], span[~small], np.flatnonzero(~small), grid)
    tri, cell = np.concatenate([tri_s, tri_l]), np.concatenate([cell_s, cell_l])
    order = np.argsort(cell * len(corners) + tri)              # unique keys: a fast, deterministic sort
    start = np.concatenate([[0], np.cumsum(np.bincount(cell, minlength=grid * grid))])
    return start, tri[order]


def _pairs_small(lo: np.ndarray, span: np.ndarray, tri: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """(triangle, cell) pairs of boxes at most 2 x 2 cells: the four candidates, masked."""
    du, dv = np.array([0, 1, 0, 1]), np.array([0, 0, 1, 1])
    keep = (du < span[:, :1]) & (dv < span[:, 1:])
    cells = (lo[:, 1:] + dv) * grid + lo[:, :1] + du
    return np.repeat(tri, keep.sum(axis=1)), cells[keep]


def _pairs_any(lo: np.ndarray, span: np.ndarray, tri: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """(triangle, cell) pairs of boxes of any size: every cell of each box."""
    count = span[:, 0] * span[:, 1]
    rep = np.repeat(np.arange(len(tri)), count)
    local = np.arange(rep.size) - np.repeat(np.cumsum(count) - count, count)
    width = span[rep, 0]
    return tri[rep], (lo[rep, 1] + local // width) * grid + lo[rep, 0] + local % width
