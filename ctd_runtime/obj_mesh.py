"""Reader for 3dMD-style textured OBJ captures: vertices, UVs, triangles, and the MTL's texture.

What is read:

- `v x y z [...]`: the first three numbers (a `w` or vertex colours after them are ignored);
- `vt u v [w]`: u and v, OBJ's texture origin (bottom left). A UV outside [0, 1] by more than
  UV_TOLERANCE is an *error*, not a flag: a 3dMD texture atlas maps into the unit square, and
  a wrapped (tiling) UV would put a landmark on the wrong part of the face. UVs within the
  tolerance are clipped into [0, 1];
- `vn`: checked and counted only, so that `v//vn` and `v/vt/vn` references are checked;
- `f`: three or more corners `v`, `v/vt`, `v/vt/vn` or `v//vn`, 1-based, negative indices relative
  to the elements read so far (-1 is the last); a polygon is fan-triangulated (0, i, i+1). A face
  whose corners have no vt is kept for its 3D triangles and marked -1 in `tri_uvs`, so UV lookup
  skips it; one mixing corners with and without vt is an error;
- `mtllib` (the rest of the line is one file name, relative to the OBJ) and `usemtl`; from the MTL,
  each material's `map_Kd` (options such as `-s 1 1 1` skipped; relative to the MTL). The texture
  is that of the materials used by textured faces (or, with no `usemtl`, the MTL's only
  `map_Kd`); more than one distinct texture is refused. Everything else (`o`, `g`, `s`, `l`, ...)
  is ignored.

Bad input is a CtdError naming the file and, where there is one, the line. The line parsing
itself is in ctd_runtime.obj_parser; this module adds the materials and the texture.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ctd_runtime.errors import CtdError
from ctd_runtime.image_io import ImageError, read_image
from ctd_runtime.obj_parser import UV_TOLERANCE, ParsedObj, parse_obj

__all__ = ["UV_TOLERANCE", "ObjMesh", "read_obj", "read_mtl_textures", "read_texture_size"]
# map_Kd options and how many arguments each takes at most (numbers, or one on/off or channel word)
_MAP_OPTIONS = {
    "-blendu": 1, "-blendv": 1, "-boost": 1, "-mm": 2, "-o": 3, "-s": 3, "-t": 3,
    "-texres": 1, "-clamp": 1, "-bm": 1, "-imfchan": 1, "-type": 1, "-cc": 1,
}


@dataclass(frozen=True)
class ObjMesh:
    """A triangulated OBJ mesh. `tri_uvs` rows are -1 for faces that carry no vt.

    `texture_size` is (width, height) in pixels of `texture_path`, read when the mesh was loaded
    (None when the OBJ names no texture or reading was turned off).
    """

    path: Path
    vertices: np.ndarray      # (V, 3) float64, mesh units (mm for 3dMD)
    uvs: np.ndarray           # (T, 2) float64, OBJ convention: origin bottom left, v up
    tri_vertices: np.ndarray  # (F, 3) int64 indices into vertices
    tri_uvs: np.ndarray       # (F, 3) int64 indices into uvs, -1 where the face has no vt
    texture_path: Path | None = None
    texture_size: tuple[int, int] | None = None
    tri_lines: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    @property
    def textured(self) -> np.ndarray:
        """(F,) bool: the triangle has texture coordinates."""
        return self.tri_uvs[:, 0] >= 0


def read_obj(path: str | Path, read_texture: bool = True) -> ObjMesh:
    """Parse an OBJ (and its MTL); with `read_texture`, also check the texture and read its size."""
    path = Path(path)
    parsed = parse_obj(_read_text(path, "OBJ"), path)
    texture = _texture_of(path, parsed)
    size = read_texture_size(texture) if (texture is not None and read_texture) else None
    return ObjMesh(
        path=path, vertices=parsed.vertices, uvs=parsed.uvs, tri_vertices=parsed.tri_vertices,
        tri_uvs=parsed.tri_uvs, texture_path=texture, texture_size=size, tri_lines=parsed.tri_lines,
    )


def read_texture_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of a texture image, read by `ctd_runtime.image_io` (a truncated or corrupt
    texture is refused like any image); CtdError naming it when it cannot be read."""
    path = Path(path)
    try:
        image = read_image(path)
    except ImageError as e:
        raise CtdError(f"cannot read the texture image's size: {e.reason}", path=path) from None
    return int(image.shape[1]), int(image.shape[0])


def _read_text(path: Path, kind: str) -> str:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CtdError(f"cannot read the {kind} file: {e.strerror}", path=path) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


# ---------------------------------------------------------------------------- materials


def read_mtl_textures(path: str | Path) -> dict[str, Path | None]:
    """Material name -> its map_Kd texture path (relative to the MTL), checked to exist."""
    path = Path(path)
    textures: dict[str, Path | None] = {}
    current: str | None = None
    for line_no, raw in enumerate(_read_text(path, "MTL").splitlines(), start=1):
        body = raw.split("#", 1)[0].strip()
        tokens = body.split()
        if not tokens:
            continue
        if tokens[0] == "newmtl":
            current = " ".join(tokens[1:])
            textures[current] = None
        elif tokens[0] == "map_Kd":
            if current is None:
                raise CtdError(f"line {line_no}: map_Kd before any newmtl", path=path)
            name = _map_file_name(tokens[1:])
            if not name:
                raise CtdError(f"line {line_no}: map_Kd names no file", path=path)
            texture = Path(os.path.normpath(path.parent / name))
            if not texture.is_file():
                raise CtdError(f"line {line_no}: texture {name!r} not found (looked for {texture})", path=path)
            textures[current] = texture
    return textures


def _map_file_name(tokens: list[str]) -> str:
    """The file name of a map_Kd statement after its options."""
    i = 0
    while i < len(tokens) and tokens[i] in _MAP_OPTIONS:
        most = _MAP_OPTIONS[tokens[i]]
        i += 1
        taken = 0
        while taken < most and i < len(tokens) - 1 and (_is_number(tokens[i]) or taken == 0):
            i += 1
            taken += 1
    return " ".join(tokens[i:])


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _texture_of(obj_path: Path, parser: ParsedObj) -> Path | None:
    """The one texture of the textured faces' materials (None when the OBJ names none)."""
    materials: dict[str, Path | None] = {}
    for mtl, _ in parser.mtllibs:
        materials.update(read_mtl_textures(mtl))
    if not parser.mtllibs:
        return None
    if parser.saw_usemtl:
        for name, line_no in parser.used_materials.items():
            if name not in materials:
                raise CtdError(f"line {line_no}: material {name!r} is in no material library", path=obj_path)
        found = {materials[n] for n in parser.used_materials if materials[n] is not None}
    else:
        found = {t for t in materials.values() if t is not None}
    if len(found) > 1:
        names = ", ".join(sorted(str(p.name) for p in found))
        raise CtdError(
            f"the textured faces use {len(found)} textures ({names}); one texture atlas is supported", path=obj_path
        )
    return found.pop() if found else None
