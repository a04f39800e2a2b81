"""What `ctd infer` works on: the captures named by its INPUT arguments.

A capture is an image (any suffix in IMAGE_SUFFIXES) or a 3dMD capture: an OBJ whose MTL names
its texture image, on which the landmarks are found and through whose UVs they map to 3D. An
input argument is a file (image or .obj) or a folder, searched recursively in sorted order; in a
folder, an image that an OBJ there names as its texture belongs to that OBJ and is not a capture
of its own. Hidden files and the files ctd itself writes (results, overlays, sidecars) are skipped.

Each capture has a `name` that is unique in the batch (its path relative to the argument it came
from, "/" as "__"): the overlay is written as `<name>.png`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ctd_runtime.errors import CtdError
from ctd_runtime.obj_mesh import read_mtl_textures

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MESH_SUFFIX = ".obj"
RESULT_MARK = ".ctd."  # capture.png.ctd.json / capture.png.ctd.png: what ctd writes next to a capture


@dataclass(frozen=True)
class Capture:
    """One input: `path` is the image, or the OBJ of a 3dMD capture (kind "mesh")."""

    path: Path
    kind: str  # "image" | "mesh"
    name: str

    @property
    def is_mesh(self) -> bool:
        return self.kind == "mesh"


def capture_kind(path: Path) -> str | None:
    """"image", "mesh" or None (not a capture: other suffix, hidden, or written by ctd)."""
    name = path.name
    if name.startswith(".") or RESULT_MARK in name:
        return None
    suffix = path.suffix.lower()
    if suffix == MESH_SUFFIX:
        return "mesh"
    return "image" if suffix in IMAGE_SUFFIXES else None


def mtllib_paths(obj: Path) -> list[Path]:
    """The material libraries an OBJ names (a scan of its lines; [] when it cannot be read)."""
    try:
        with obj.open("r", encoding="utf-8", errors="replace") as f:
            names = [line.split(None, 1)[1].strip() for line in f if line.startswith("mtllib") and " " in line.strip()]
    except OSError:
        return []
    return [(obj.parent / name).resolve() for name in names]


def mesh_companions(obj: Path, libs: list[Path] | None = None) -> list[Path]:
    """The material libraries of an OBJ (`libs`, or read from it) and the textures they name,
    resolved (best effort: an MTL that cannot be read, or names a missing texture, names none
    here; reading the capture reports it)."""
    found: list[Path] = []
    for mtl in mtllib_paths(obj) if libs is None else libs:
        found.append(mtl)
        try:
            found += [p.resolve() for p in read_mtl_textures(mtl).values() if p is not None]
        except CtdError:
            pass
    return found


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def textures_named_by(obj: Path) -> set[Path]:
    """The texture images of an OBJ (see mesh_companions)."""
    return {p for p in mesh_companions(obj) if is_image_name(p)}


TextureFinder = Callable[[Path], set[Path]]


def find_captures(inputs: Iterable[str | Path], textures_of: TextureFinder = textures_named_by) -> list[Capture]:
    """The captures of the INPUT arguments, in argument order, each folder sorted; CtdError for an
    argument that does not exist or is a file of another kind. `textures_of` (an OBJ's texture
    files) may be a cached version of `textures_named_by`."""
    captures: list[Capture] = []
    for arg in inputs:
        root = Path(arg)
        if root.is_dir():
            captures += _folder_captures(root, textures_of)
        elif root.is_file():
            kind = capture_kind(root)
            if kind is None:
                raise CtdError(f"not an image ({', '.join(IMAGE_SUFFIXES)}) or a 3dMD capture (.obj)", path=root)
            captures.append(Capture(root, kind, root.name))
        else:
            raise CtdError("input not found", path=root)
    return _unique_names(captures)


def _folder_captures(root: Path, textures_of: TextureFinder) -> list[Capture]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and not _hidden(p, root))
    kinds = {p: capture_kind(p) for p in files}
    textures = set().union(*(textures_of(p) for p, k in kinds.items() if k == "mesh"))
    return [Capture(p, k, p.relative_to(root).as_posix().replace("/", "__"))
            for p, k in kinds.items() if k is not None and not (k == "image" and p.resolve() in textures)]


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _unique_names(captures: list[Capture]) -> list[Capture]:
    seen: dict[str, int] = {}
    out = []
    for c in captures:
        n = seen.get(c.name, 0)
        seen[c.name] = n + 1
        out.append(c if n == 0 else Capture(c.path, c.kind, f"{c.name}-{n + 1}"))
    return out
