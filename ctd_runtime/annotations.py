"""The project's folder format for annotated images, read and written with full validation.

    DIR/images/...            the images (any format OpenCV reads; subfolders allowed)
    DIR/annotations.csv       header `image,subject,x0,y0,...,x{P-1},y{P-1}`, one row per image

`image` is the image's path relative to `DIR/images/`; `subject` groups the images of one person
(train/val/test splits are made by subject). Coordinates are pixels of that image, origin at the
centre of the top-left pixel, x right, y down (OpenCV; DESIGN.md "Pixels"). A point may lie
anywhere in the continuous image area [-0.5, w - 0.5] x [-0.5, h - 0.5].

Errors name the file and the row; rows are counted as lines of the CSV, the header being row 1
(what a text editor or spreadsheet shows).
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ctd_runtime import image_io
from ctd_runtime.atomic import write_text_atomic
from ctd_runtime.errors import CtdError

ANNOTATIONS_FILE = "annotations.csv"
IMAGES_DIR = "images"
_COORD = re.compile(r"^([xy])(\d+)$")


@dataclass
class AnnotatedImages:
    """N annotated images with P points each; `points` [N, P, 2] float64 in image pixels."""

    root: Path
    image_paths: list[Path]
    subjects: list[str]
    points: np.ndarray
    image_sizes: np.ndarray | None = None  # [N, 2] (width, height), known when images were validated
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def num_points(self) -> int:
        return int(self.points.shape[1])

    @property
    def image_names(self) -> list[str]:
        """Image paths relative to `root/images` (as written in the CSV), POSIX style."""
        base = self.root / IMAGES_DIR
        out = []
        for p in self.image_paths:
            try:
                out.append(p.relative_to(base).as_posix())
            except ValueError:
                out.append(str(p))
        return out

    def load_image(self, index: int, cache: bool = False) -> np.ndarray:
        """The image as BGR uint8 [H, W, 3]; CtdError when it cannot be read."""
        if index in self._cache:
            return self._cache[index]
        img = read_image(self.image_paths[index])
        if cache:
            self._cache[index] = img
        return img

    def subset(self, indices: Sequence[int]) -> "AnnotatedImages":
        idx = [int(i) for i in indices]
        return AnnotatedImages(
            root=self.root,
            image_paths=[self.image_paths[i] for i in idx],
            subjects=[self.subjects[i] for i in idx],
            points=self.points[idx].copy(),
            image_sizes=None if self.image_sizes is None else self.image_sizes[idx].copy(),
        )


def read_image(path: str | Path, where: str | Path | None = None, row: int | None = None) -> np.ndarray:
    """BGR uint8 through the one image reader (`ctd_runtime.image_io`: truncated and corrupt
    files refused); CtdError naming the image, or the annotation file and row that list it."""
    try:
        return image_io.read_image(path)
    except image_io.ImageError as e:
        if where is None:
            raise
        raise CtdError(f"image {path}: {e.reason}", path=where, row=row) from None


def _parse_header(header: list[str], csv_path: Path) -> tuple[int, int, list[tuple[int, int]]]:
    """Column indices of image and subject, and for each point p the columns of (x_p, y_p)."""
    names = [h.strip() for h in header]
    if "image" not in names or "subject" not in names:
        missing = [c for c in ("image", "subject") if c not in names]
        raise CtdError(
            f"header lacks column(s) {', '.join(missing)}; expected image,subject,x0,y0,...",
            path=csv_path,
            row=1,
        )
    seen: dict[str, int] = {}
    xs: dict[int, int] = {}
    ys: dict[int, int] = {}
    for col, name in enumerate(names):
        if name in seen:
            raise CtdError(f"column {name!r} appears twice", path=csv_path, row=1)
        seen[name] = col
        if name in ("image", "subject"):
            continue
        m = _COORD.match(name)
        if m is None:
            raise CtdError(
                f"unexpected column {name!r}; coordinate columns are named x0,y0,x1,y1,...",
                path=csv_path,
                row=1,
            )
        (xs if m.group(1) == "x" else ys)[int(m.group(2))] = col
    if not xs and not ys:
        raise CtdError("header has no coordinate columns x0,y0,...", path=csv_path, row=1)
    for i in sorted(set(xs) | set(ys)):
        if i not in xs:
            raise CtdError(f"column y{i} has no matching x{i}", path=csv_path, row=1)
        if i not in ys:
            raise CtdError(f"column x{i} has no matching y{i}", path=csv_path, row=1)
    n = max(xs) + 1
    for i in range(n):
        if i not in xs:
            raise CtdError(f"columns x{i},y{i} are missing (points must be numbered 0..{n - 1})",
                           path=csv_path, row=1)
    return seen["image"], seen["subject"], [(xs[i], ys[i]) for i in range(n)]


def _data_paths(root: Path) -> tuple[Path, Path]:
    """(annotations.csv, images/) of a data folder; CtdError naming what is missing."""
    if not root.exists():
        raise CtdError("data folder not found", path=root)
    if not root.is_dir():
        raise CtdError("not a folder (expected a data folder with images/ and annotations.csv)", path=root)
    csv_path = root / ANNOTATIONS_FILE
    if not csv_path.is_file():
        raise CtdError(f"{ANNOTATIONS_FILE} not found in the data folder", path=csv_path)
    images_dir = root / IMAGES_DIR
    if not images_dir.is_dir():
        raise CtdError(f"the data folder has no {IMAGES_DIR}/ folder", path=images_dir)
    return csv_path, images_dir


def _csv_rows(csv_path: Path):
    """(header, iterator of (row number, values)) of the CSV; CtdError for unreadable or invalid CSV."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise CtdError(f"cannot read: {e}", path=csv_path) from None
    reader = csv.reader(text.splitlines())
    try:
        header = next(reader)
    except StopIteration:
        raise CtdError("file is empty (expected a header image,subject,x0,y0,...)", path=csv_path) from None
    except csv.Error as e:
        raise CtdError(f"not valid CSV: {e}", path=csv_path, row=1) from None

    def rows():
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise CtdError(f"not valid CSV: {e}", path=csv_path, row=reader.line_num) from None
            if values and any(v.strip() for v in values):   # blank lines are skipped
                yield reader.line_num, values

    return header, rows()


def _row_points(values: list[str], header: list[str], pcols, csv_path: Path, row: int) -> np.ndarray:
    """The (x, y) of every point of one row; CtdError naming the column of a non-number or non-finite value."""
    pts = np.empty((len(pcols), 2), dtype=np.float64)
    for p, (cx, cy) in enumerate(pcols):
        for axis, col in ((0, cx), (1, cy)):
            raw = values[col].strip()
            try:
                v = float(raw)
            except ValueError:
                raise CtdError(f"column {header[col].strip()!r}: {raw!r} is not a number",
                               path=csv_path, row=row) from None
            if not math.isfinite(v):
                raise CtdError(f"column {header[col].strip()!r}: coordinate is {raw} (must be finite)",
                               path=csv_path, row=row)
            pts[p, axis] = v
    return pts


def _image_sizes(paths: list[Path], points: np.ndarray, rows: list[int], csv_path: Path) -> np.ndarray:
    """(width, height) of every image, each read (it must decode) and its points checked inside it."""
    sizes = np.zeros((len(paths), 2), dtype=np.int64)
    for i, (path, row) in enumerate(zip(paths, rows)):
        img = read_image(path, where=csv_path, row=row)
        h, w = img.shape[:2]
        sizes[i] = (w, h)
        check_inside(points[i], w, h, where=csv_path, row=row, image=path.name)
    return sizes


def read_annotations(root: str | Path, validate_images: bool = True) -> AnnotatedImages:
    """Read `root/annotations.csv`; with `validate_images`, read every image to check that it
    decodes and that every landmark lies inside it."""
    root = Path(root)
    csv_path, images_dir = _data_paths(root)
    header, rows = _csv_rows(csv_path)
    col_image, col_subject, pcols = _parse_header(header, csv_path)
    paths: list[Path] = []
    subjects: list[str] = []
    rows_pts: list[np.ndarray] = []
    row_numbers: list[int] = []
    first_row: dict[str, int] = {}
    for row, values in rows:
        if len(values) != len(header):
            raise CtdError(f"{len(values)} values but the header has {len(header)} columns", path=csv_path, row=row)
        image, subject = values[col_image].strip(), values[col_subject].strip()
        if not image:
            raise CtdError("empty image name", path=csv_path, row=row)
        if not subject:
            raise CtdError("empty subject", path=csv_path, row=row)
        if image in first_row:
            raise CtdError(f"image {image!r} is listed twice (first in row {first_row[image]})",
                           path=csv_path, row=row)
        first_row[image] = row
        rows_pts.append(_row_points(values, header, pcols, csv_path, row))
        paths.append(images_dir / image)
        subjects.append(subject)
        row_numbers.append(row)
    if not paths:
        raise CtdError("no annotated images (only a header)", path=csv_path)
    points = np.stack(rows_pts)
    sizes = _image_sizes(paths, points, row_numbers, csv_path) if validate_images else None
    return AnnotatedImages(root=root, image_paths=paths, subjects=subjects, points=points, image_sizes=sizes)


def first_outside(points: np.ndarray, width: int, height: int) -> int | None:
    """Index of the first point outside [-0.5, w - 0.5] x [-0.5, h - 0.5], or None."""
    pts = np.asarray(points, dtype=np.float64)
    bad = (pts[:, 0] < -0.5) | (pts[:, 0] > width - 0.5) | (pts[:, 1] < -0.5) | (pts[:, 1] > height - 0.5)
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def check_inside(points: np.ndarray, width: int, height: int, where: str | Path, row: int | None = None,
                 image: str = "") -> None:
    """CtdError naming the file, row and columns of the first point outside the image."""
    p = first_outside(points, width, height)
    if p is not None:
        pts = np.asarray(points, dtype=np.float64)
        raise CtdError(
            f"point {p} (columns x{p},y{p}) at ({pts[p, 0]:g}, {pts[p, 1]:g}) lies outside image "
            f"{image} ({width}x{height} px, valid x in [-0.5, {width - 0.5:g}], y in [-0.5, {height - 0.5:g}])",
            path=where,
            row=row,
        )


def write_annotations(
    root: str | Path,
    image_names: Sequence[str],
    subjects: Sequence[str],
    points: np.ndarray,
    decimals: int = 4,
) -> Path:
    """Write `root/annotations.csv` atomically (the images go in `root/images/`, written by the caller)."""
    root = Path(root)
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 3 or pts.shape[2] != 2:
        raise ValueError(f"points must be [N, P, 2], got {pts.shape}")
    if not (len(image_names) == len(subjects) == pts.shape[0]):
        raise ValueError("image_names, subjects and points disagree in length")
    if not np.isfinite(pts).all():
        raise ValueError("points contain NaN or inf")
    p = pts.shape[1]
    lines: list[list[str]] = [["image", "subject"] + [f"{a}{i}" for i in range(p) for a in "xy"]]
    for name, subj, row in zip(image_names, subjects, pts):
        lines.append([str(name), str(subj)] + [f"{v:.{decimals}f}" for v in row.reshape(-1)])
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    out = root / ANNOTATIONS_FILE
    write_text_atomic(out, buf.getvalue())
    return out
