"""iBUG / 300-W `.pts` files -> the project's folder format.

    version: 1
    n_points:  68
    {
    x y
    ...
    }

Pixel convention: iBUG/300-W coordinates are 1-based (the centre of the top-left pixel is
(1, 1), the Matlab convention of the 300-W annotation tools), so this reader subtracts 1 from
both coordinates to get the project's 0-based pixel-centre convention. `write_pts` adds it back.

`import_pts` looks for `.pts` files under a folder (recursively), takes the image with the same
stem next to each (.jpg, .jpeg, .png, .bmp; any case), and writes `out_dir/images/` (symlinks,
or copies) plus `annotations.csv`, keeping sub-folders in the image names. iBUG data has no
person identities: each image is its own subject (named by its relative path without suffix).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctd_runtime.atomic import write_text_atomic
from ctd_runtime.errors import CtdError
from ctd_train.data.annotations import first_outside, read_image
from ctd_train.data.imm_asf import ImportReport, write_imported_folder

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
PTS_OFFSET = 1.0  # iBUG coordinates are 1-based


def read_pts_with_lines(path: str | Path) -> tuple[np.ndarray, list[int]]:
    """Points [n, 2] in 0-based pixels and the line number of each point in the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as e:
        raise CtdError(f"cannot read .pts file: {e.strerror}", path=path) from None
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines())]
    lines = [(n, ln) for n, ln in lines if ln]
    if not lines:
        raise CtdError("empty .pts file", path=path)
    it = iter(lines)
    n_points: int | None = None
    n = 0
    for n, ln in it:
        if ln == "{":
            break
        key, sep, value = ln.partition(":")
        if not sep:
            raise CtdError(f"expected 'key: value' or '{{', found {ln!r}", path=path, row=n)
        key = key.strip().lower()
        if key == "n_points":
            try:
                n_points = int(value.strip())
            except ValueError:
                raise CtdError(f"n_points is not an integer: {value.strip()!r}", path=path, row=n) from None
            if n_points <= 0:
                raise CtdError(f"n_points is {n_points}", path=path, row=n)
        elif key == "version":
            if value.strip() not in ("1", "1.0"):
                raise CtdError(f"unsupported .pts version {value.strip()!r} (expected 1)", path=path, row=n)
        # other header keys are ignored
    else:
        raise CtdError("no '{' opening the point list", path=path, row=n)
    if n_points is None:
        raise CtdError("header has no n_points line", path=path, row=n)
    pts: list[tuple[float, float]] = []
    where: list[int] = []
    closed = False
    for n, ln in it:
        if ln == "}":
            closed = True
            break
        tok = ln.split()
        if len(tok) != 2:
            raise CtdError(f"expected 'x y', found {ln!r}", path=path, row=n)
        try:
            x, y = float(tok[0]), float(tok[1])
        except ValueError:
            raise CtdError(f"coordinate is not a number: {ln!r}", path=path, row=n) from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise CtdError(f"non-finite coordinate: {ln!r}", path=path, row=n)
        pts.append((x - PTS_OFFSET, y - PTS_OFFSET))
        where.append(n)
    if not closed:
        raise CtdError("no '}' closing the point list", path=path, row=n)
    extra = next(it, None)
    if extra is not None:
        raise CtdError(f"unexpected text after '}}': {extra[1]!r}", path=path, row=extra[0])
    if len(pts) != n_points:
        raise CtdError(f"n_points says {n_points} but the file has {len(pts)} points", path=path, row=n)
    return np.asarray(pts, dtype=np.float64), where


def read_pts(path: str | Path) -> np.ndarray:
    """Points [n, 2] in the project's 0-based pixel convention (file coordinates minus 1)."""
    return read_pts_with_lines(path)[0]


def write_pts(path: str | Path, points: np.ndarray) -> None:
    """Write 0-based points as an iBUG .pts file (adds 1), atomically."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) + PTS_OFFSET
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
    write_text_atomic(path, f"version: 1\nn_points: {len(pts)}\n{{\n{body}\n}}\n")


def find_image(pts_path: Path) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        for cand in (pts_path.with_suffix(suffix), pts_path.with_suffix(suffix.upper())):
            if cand.is_file():
                return cand
    return None


def import_pts(
    folder: str | Path,
    out_dir: str | Path,
    skip_invalid: bool = False,
    copy: bool = False,
    force: bool = False,
) -> ImportReport:
    """Convert a folder of images + iBUG .pts files to `out_dir/{images/,annotations.csv}`.

    A .pts file without an image, or with a point outside its image (some 300-W faces touch the
    border), is an error naming the file and line; with `skip_invalid` it is skipped and listed
    in the report. Malformed .pts files are always errors.
    """
    folder, out_dir = Path(folder), Path(out_dir)
    if not folder.is_dir():
        raise CtdError("folder not found", path=folder)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".pts" and p.is_file())
    if not files:
        raise CtdError("no .pts files in the folder", path=folder)

    report = ImportReport(out_dir=out_dir)
    names: list[str] = []
    subjects: list[str] = []
    points: list[np.ndarray] = []
    sources: list[Path] = []
    n_points: int | None = None
    first_file: Path | None = None
    for f in files:
        pts, where = read_pts_with_lines(f)
        if n_points is None:
            n_points, first_file = len(pts), f
        elif len(pts) != n_points:
            raise CtdError(f"{len(pts)} points, but {first_file} has {n_points}; all files must have the same",
                           path=f)
        img_path = find_image(f)
        if img_path is None:
            if skip_invalid:
                report.skipped.append((str(f.relative_to(folder)), "no image with the same name"))
                continue
            raise CtdError(f"no image with the same name ({', '.join(IMAGE_SUFFIXES)}) next to it", path=f)
        img = read_image(img_path, where=f)
        h, w = img.shape[:2]
        bad = first_outside(pts, w, h)
        if bad is not None:
            msg = (f"point {bad} ({pts[bad, 0] + PTS_OFFSET:g}, {pts[bad, 1] + PTS_OFFSET:g} in the file's "
                   f"1-based pixels) lies outside its image {img_path.name} ({w}x{h})")
            if skip_invalid:
                report.skipped.append((str(f.relative_to(folder)), msg))
                continue
            raise CtdError(msg + " (use --skip-invalid to skip such files)", path=f, row=where[bad])
        rel = img_path.relative_to(folder)
        names.append(rel.as_posix())
        subjects.append(rel.with_suffix("").as_posix())
        points.append(pts)
        sources.append(img_path)
    if not names:
        raise CtdError("no usable .pts file (all were skipped)", path=folder)

    return write_imported_folder(out_dir, names, subjects, points, sources, copy, force, report)
