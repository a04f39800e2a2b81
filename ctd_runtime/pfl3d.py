"""3D PFL from a textured capture: landmarks found on the texture image, mapped onto the mesh.

PFL is the Euclidean distance between the schema's two PFL landmarks after mapping each through
its UV triangle (ctd_runtime.uv_lookup) to a 3D point, in mesh units (mm for 3dMD). This is the
straight chord between the eye corners, as calipers measure it, not a geodesic over the skin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ctd_runtime.errors import CtdError
from ctd_runtime.obj_mesh import ObjMesh
from ctd_runtime.pfl import QualityFlag, outside_uv_flag
from ctd_runtime.schema import LandmarkSchema
from ctd_runtime.uv_lookup import UvIndex


@dataclass(frozen=True)
class Pfl3D:
    """The 3D PFL (NaN when a PFL landmark is in no UV triangle), every landmark's 3D point
    (K, 3; NaN rows for those in no triangle), those landmarks' indices, and the flags."""

    pfl_3d_mm: float
    landmarks_3d: np.ndarray
    outside_uv: tuple[int, ...] = ()
    flags: list[QualityFlag] = field(default_factory=list)


def pfl_3d(
    mesh: ObjMesh,
    texture_size: tuple[int, int] | None,
    landmarks: np.ndarray,
    schema: LandmarkSchema,
    index: UvIndex | None = None,
) -> Pfl3D:
    """3D PFL of (K, 2) texture-pixel landmarks on `mesh`.

    `texture_size` is (width, height) of the image the landmarks were found on; None takes the
    mesh's texture size. An image whose size differs from the mesh's texture is a CtdError (the
    landmarks would land on the wrong UVs). Pass `index` to reuse a UvIndex built for this mesh.
    """
    size = _texture_size(mesh, texture_size)
    pts = np.asarray(landmarks, dtype=np.float64)
    if pts.shape != (schema.num_landmarks, 2):
        raise ValueError(
            f"landmarks of shape {pts.shape} do not match schema {schema.name!r} ({schema.num_landmarks}, 2)"
        )
    if index is None:
        index = UvIndex(mesh)
    elif index.mesh is not mesh:
        raise ValueError("the UvIndex was built for another mesh")
    hits = index.locate_px(pts, size)
    outside = tuple(int(i) for i in np.flatnonzero(~hits.found))
    a, b = hits.points_3d[list(schema.pfl_pair)]
    flag = outside_uv_flag(outside)
    return Pfl3D(
        pfl_3d_mm=float(np.linalg.norm(a - b)),
        landmarks_3d=hits.points_3d,
        outside_uv=outside,
        flags=[] if flag is None else [flag],
    )


def _texture_size(mesh: ObjMesh, given: tuple[int, int] | None) -> tuple[int, int]:
    if given is None:
        if mesh.texture_size is None:
            raise CtdError("the mesh names no texture and no texture size was given", path=mesh.path)
        return mesh.texture_size
    w, h = int(given[0]), int(given[1])
    if mesh.texture_size is not None and (w, h) != tuple(mesh.texture_size):
        tw, th = mesh.texture_size
        raise CtdError(
            f"the texture is {tw}x{th} px but the landmarks were found on a {w}x{h} image: "
            "the image does not match this mesh",
            path=mesh.texture_path,
        )
    return w, h
