"""OBJ text -> vertex, UV and triangle arrays; every error names the file and the line.

One pass over the lines sorts them by statement (`v`, `vt`, `vn`, `f`, `mtllib`, `usemtl`; the
rest is ignored); numbers are then converted with numpy. Faces take a vectorised path when every
corner has the same form (`v`, `v/vt` or `v/vt/vn`) with positive indices, as a 3dMD export has;
anything else (negative indices, `v//vn`, mixed or malformed corners) goes corner by corner,
which is also where a malformed face is reported with its line. Semantics (see obj_mesh):
1-based indices; negative ones relative to the elements read before the face; positive ones
checked against the whole file; polygons fan-triangulated (c0, ci, ci+1); corners without vt
get uv index -1; UVs outside [0, 1] by more than UV_TOLERANCE are an error, those within are
clipped into [0, 1].
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ctd_runtime.errors import CtdError

UV_TOLERANCE = 1e-6
_ELEMENTS = ("v", "vt", "vn")
_PLAIN_CORNER = {1: r"\d+", 2: r"\d+/\d+", 3: r"\d+/\d+/\d+"}


@dataclass
class _Lines:
    """The statements of an OBJ file, by kind, with their line numbers."""

    elements: dict[str, tuple[list[list[str]], list[int]]] = field(
        default_factory=lambda: {k: ([], []) for k in _ELEMENTS})
    faces: list[str] = field(default_factory=list)          # what follows "f"
    face_lines: list[int] = field(default_factory=list)
    mtllibs: list[tuple[str, int]] = field(default_factory=list)
    usemtl: list[tuple[int, str, int]] = field(default_factory=list)   # (first face, name, line)


@dataclass(frozen=True)
class ParsedObj:
    """Arrays of one OBJ file plus what its materials need. `used_materials` maps each material
    that textured faces use to the line of its usemtl."""

    vertices: np.ndarray        # (V, 3)
    uvs: np.ndarray             # (T, 2)
    tri_vertices: np.ndarray    # (F, 3)
    tri_uvs: np.ndarray         # (F, 3), -1 for faces without vt
    tri_lines: np.ndarray       # (F,) line of each triangle's face
    mtllibs: list[tuple[Path, int]]
    used_materials: dict[str, int]
    saw_usemtl: bool


def parse_obj(text: str, path: Path) -> ParsedObj:
    """Parse OBJ text; `path` names the file in errors and anchors mtllib names."""
    lines = _split(text, path)
    verts = _floats(*lines.elements["v"], 3, "vertex", path)
    uvs = _uvs(*lines.elements["vt"], path)
    _floats(*lines.elements["vn"], 3, "normal", path)
    if not len(verts):
        raise CtdError("empty OBJ file: no vertices", path=path)
    if not lines.faces:
        raise CtdError("OBJ file has no faces", path=path)
    corners = _plain_faces(lines) or _FaceReader(lines, path).read()
    cv, ct, cn, size = corners
    corner_line = np.repeat(np.asarray(lines.face_lines, dtype=np.int64), size)
    counts = {"vertex": len(verts), "texture coordinate": len(uvs), "normal": len(lines.elements["vn"][1])}
    for kind, idx in zip(counts, (cv, ct, cn)):
        _check_range(idx, counts[kind], kind, corner_line, path)
    tri_v, tri_t, tri_face = _fan_triangles(cv, ct, size)
    textured = ct[np.cumsum(size) - size] >= 0
    return ParsedObj(
        vertices=verts, uvs=uvs, tri_vertices=tri_v, tri_uvs=tri_t,
        tri_lines=np.asarray(lines.face_lines, dtype=np.int64)[tri_face],
        mtllibs=[(path.parent / name, line) for name, line in lines.mtllibs],
        used_materials=_used_materials(lines.usemtl, textured), saw_usemtl=bool(lines.usemtl),
    )


# ---------------------------------------------------------------------------- lines and numbers


def _split(text: str, path: Path) -> _Lines:
    out = _Lines()
    for line_no, raw in enumerate(text.splitlines(), start=1):
        body = raw.split("#", 1)[0] if "#" in raw else raw
        if "\t" in body:
            body = body.replace("\t", " ")
        key, _, rest = body.strip().partition(" ")
        if key == "f":
            out.faces.append(rest)
            out.face_lines.append(line_no)
        elif key in out.elements:
            rows, nums = out.elements[key]
            rows.append(rest.split())
            nums.append(line_no)
        elif key == "mtllib":
            out.mtllibs.append((_mtllib_name(rest, path, line_no), line_no))
        elif key == "usemtl":
            out.usemtl.append((len(out.faces), rest.strip(), line_no))
    return out


def _mtllib_name(rest: str, path: Path, line_no: int) -> str:
    name = rest.strip()
    if not name:
        raise CtdError(f"line {line_no}: mtllib names no file", path=path)
    if not (path.parent / name).is_file():
        raise CtdError(
            f"line {line_no}: material library {name!r} not found (looked for {path.parent / name})", path=path
        )
    return name


def _floats(rows: list[list[str]], lines: list[int], n: int, what: str, path: Path) -> np.ndarray:
    """(len(rows), n) finite floats from the first n tokens of each row; CtdError at the first bad line."""
    for tokens, line in zip(rows, lines):
        if len(tokens) < n:
            raise CtdError(f"line {line}: {what} needs {n} numbers, got {len(tokens)}", path=path)
    try:
        values = np.array([t[:n] for t in rows], dtype=np.float64).reshape(-1, n)
    except ValueError:
        values = None
    bad = range(len(rows)) if values is None else np.flatnonzero(~np.isfinite(values).all(axis=1))
    for i in bad:
        tokens = rows[i][:n]
        try:
            finite = all(math.isfinite(float(t)) for t in tokens)
        except ValueError:
            raise CtdError(
                f"line {lines[i]}: {what} has a non-numeric value in {' '.join(tokens)!r}", path=path
            ) from None
        if not finite:
            raise CtdError(f"line {lines[i]}: {what} has a non-finite value in {' '.join(tokens)!r}", path=path)
    return values  # type: ignore[return-value]


def _uvs(rows: list[list[str]], lines: list[int], path: Path) -> np.ndarray:
    for tokens, line in zip(rows, lines):
        if len(tokens) < 2:
            raise CtdError(f"line {line}: texture coordinate needs u and v", path=path)
    uvs = _floats(rows, lines, 2, "texture coordinate", path)
    bad = np.flatnonzero(np.any((uvs < -UV_TOLERANCE) | (uvs > 1 + UV_TOLERANCE), axis=1))
    if bad.size:
        u, v = uvs[bad[0]]
        raise CtdError(
            f"line {lines[bad[0]]}: texture coordinate ({u}, {v}) is outside [0, 1] "
            "(wrapped or tiled UVs are not supported for a capture)",
            path=path,
        )
    return np.clip(uvs, 0.0, 1.0)


# ---------------------------------------------------------------------------- faces

Corners = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]   # flat v, vt, vn (0-based, -1 absent), face sizes


def _plain_faces(lines: _Lines) -> Corners | None:
    """All faces at once when every corner has the first corner's form and positive indices."""
    first = lines.faces[0].split()
    form = first[0].count("/") + 1 if first else 0
    if form not in _PLAIN_CORNER or "//" in first[0]:
        return None
    corner = _PLAIN_CORNER[form]
    face = rf"[ \t]*{corner}(?:[ \t]+{corner}){{2,}}[ \t]*"
    text = "\n".join(lines.faces)
    if re.fullmatch(rf"{face}(?:\n{face})*", text) is None:
        return None
    numbers = np.array(text.replace("/", " ").split(), dtype=np.int64).reshape(-1, form)
    if np.any(numbers == 0):
        return None  # index 0: let the reader name the line
    size = np.array([len(f.split()) for f in lines.faces], dtype=np.int64)
    absent = np.full(len(numbers), -1, dtype=np.int64)
    cv = numbers[:, 0] - 1
    ct = numbers[:, 1] - 1 if form > 1 else absent
    cn = numbers[:, 2] - 1 if form > 2 else absent
    return cv, ct, cn, size


class _FaceReader:
    """Faces corner by corner: negative indices, `v//vn`, and errors with their line."""

    def __init__(self, lines: _Lines, path: Path) -> None:
        self.lines, self.path = lines, path
        face_lines = np.asarray(lines.face_lines)
        # elements read before each face, for relative indices
        self.before = {k: np.searchsorted(np.asarray(lines.elements[k][1], dtype=np.int64), face_lines)
                       for k in _ELEMENTS}

    def read(self) -> Corners:
        cv: list[int] = []
        ct: list[int] = []
        cn: list[int] = []
        size: list[int] = []
        for f, (body, line_no) in enumerate(zip(self.lines.faces, self.lines.face_lines)):
            tokens = body.split()
            if len(tokens) < 3:
                raise CtdError(f"line {line_no}: a face needs at least 3 corners, got {len(tokens)}", path=self.path)
            corners = [self._corner(t, f, line_no) for t in tokens]
            if len({c[1] < 0 for c in corners}) > 1:
                raise CtdError(
                    f"line {line_no}: face mixes corners with and without texture coordinates", path=self.path
                )
            for v, t, n in corners:
                cv.append(v)
                ct.append(t)
                cn.append(n)
            size.append(len(corners))
        return tuple(np.asarray(a, dtype=np.int64) for a in (cv, ct, cn, size))  # type: ignore[return-value]

    def _corner(self, token: str, face: int, line_no: int) -> tuple[int, int, int]:
        parts = token.split("/")
        if len(parts) > 3 or parts[0] == "":
            raise CtdError(f"line {line_no}: malformed face corner {token!r}", path=self.path)
        parts += [""] * (3 - len(parts))
        kinds = (("v", "vertex"), ("vt", "texture coordinate"), ("vn", "normal"))
        return tuple(  # type: ignore[return-value]
            -1 if text == "" else self._index(text, int(self.before[key][face]), kind, token, line_no)
            for text, (key, kind) in zip(parts, kinds)
        )

    def _index(self, text: str, count: int, kind: str, token: str, line_no: int) -> int:
        """0-based index; positive ones are range-checked against the whole file later."""
        try:
            i = int(text)
        except ValueError:
            raise CtdError(
                f"line {line_no}: non-integer {kind} index in face corner {token!r}", path=self.path
            ) from None
        if i == 0:
            raise CtdError(f"line {line_no}: {kind} index 0 in {token!r} (OBJ indices start at 1)", path=self.path)
        if i > 0:
            return i - 1
        if -i > count:
            raise CtdError(
                f"line {line_no}: relative {kind} index {i} in {token!r} but only {count} read so far",
                path=self.path,
            )
        return count + i


def _check_range(idx: np.ndarray, count: int, kind: str, corner_line: np.ndarray, path: Path) -> None:
    bad = np.flatnonzero(idx >= count)
    if bad.size:
        raise CtdError(
            f"line {int(corner_line[bad[0]])}: face refers to {kind} {int(idx[bad[0]]) + 1} "
            f"but the file has only {count}",
            path=path,
        )


def _fan_triangles(cv: np.ndarray, ct: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face (c0 .. ck-1) -> triangles (c0, ci, ci+1), i = 1 .. k-2; also each triangle's face."""
    first = np.cumsum(size) - size
    n_tri = size - 2
    face = np.repeat(np.arange(len(size)), n_tri)
    i = np.arange(face.size) - np.repeat(np.cumsum(n_tri) - n_tri, n_tri) + 1
    corners = np.stack([first[face], first[face] + i, first[face] + i + 1], axis=1)
    return cv[corners], ct[corners], face


def _used_materials(usemtl: list[tuple[int, str, int]], textured: np.ndarray) -> dict[str, int]:
    """Materials active on at least one textured face -> line of their usemtl."""
    used: dict[str, int] = {}
    bounds = [u[0] for u in usemtl[1:]] + [len(textured)]
    for (start, name, line), stop in zip(usemtl, bounds):
        if name and textured[start:stop].any():
            used.setdefault(name, line)
    return used
