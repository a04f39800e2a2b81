"""IMM Face Database ASF files -> the project's folder format.

ASF (AAM Shape File, `imm_face_db.pdf`): comment lines start with `#`; the first non-comment line
is the number of points P; then P lines `<path#> <type> <x rel.> <y rel.> <point#> <connects from>
<connects to>` (some files carry three extra `0.00` columns, which are ignored); the last
non-comment line is the host image's file name.

Pixel convention: x = x_rel * width, y = y_rel * height, with no half-pixel shift. This is read
as the project's convention (origin at the centre of the top-left pixel): it reproduces the
reference `annotations.csv` of `shared/data/imm-face` to its rounding (max 4.6e-4 px over all
180 images), whereas `x_rel * width - 0.5` is off by 0.5 px and `x_rel * (width - 1)` by up to
0.77 px. The image size is read from the image itself.

Eye-contour normalisation (`shared/data/imm-face/README.md`): the 8-point contours 13-20 and
21-28 have their corners at local positions 0 and 4; the lateral corner is the one farther from
the other eye's centroid. When it is at position 4 the contour is mirrored,
`new[i] = old[(4 - i) mod 8]`, so that 13/21 are always the exocanthia, 17/25 the endocanthia,
and the upper lid follows the lateral corner. Nine of the original 240 files need it.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ctd_runtime.errors import CtdError
from ctd_train.data.annotations import (
    ANNOTATIONS_FILE,
    IMAGES_DIR,
    check_inside,
    read_image,
    write_annotations,
)

IMM_NUM_POINTS = 58
EYE_CONTOURS = {"left": 13, "right": 21}  # subject's left eye: 13-20, subject's right eye: 21-28


@dataclass
class AsfShape:
    """One ASF file: relative points [P, 2], their path numbers and the host image's name."""

    path: Path
    points_rel: np.ndarray
    path_ids: np.ndarray
    image_name: str

    def to_pixels(self, width: int, height: int) -> np.ndarray:
        """Pixel coordinates (project convention): x_rel * width, y_rel * height."""
        return self.points_rel * np.array([float(width), float(height)])


def read_asf(path: str | Path) -> AsfShape:
    """Parse an ASF file; CtdError naming the file and line for anything malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as e:
        raise CtdError(f"cannot read ASF file: {e.strerror}", path=path) from None
    lines = [(i + 1, ln.strip()) for i, ln in enumerate(text.splitlines())]
    content = [(n, ln) for n, ln in lines if ln and not ln.startswith("#")]
    if not content:
        raise CtdError("empty ASF file (no point count)", path=path)
    n0, first = content[0]
    try:
        count = int(first)
    except ValueError:
        raise CtdError(f"expected the number of points, found {first!r}", path=path, row=n0) from None
    if count <= 0:
        raise CtdError(f"number of points is {count}", path=path, row=n0)
    if len(content) < count + 2:
        raise CtdError(
            f"file declares {count} points but has {max(len(content) - 2, 0)} point lines and an image name",
            path=path,
        )
    pts = np.empty((count, 2), dtype=np.float64)
    pids = np.empty(count, dtype=np.int64)
    for k, (n, ln) in enumerate(content[1 : count + 1]):
        tok = ln.split()
        if len(tok) < 7:
            raise CtdError(
                f"point line has {len(tok)} fields, expected 7 (<path#> <type> <x rel.> <y rel.> "
                "<point#> <connects from> <connects to>)",
                path=path,
                row=n,
            )
        try:
            pid, x, y, num = int(tok[0]), float(tok[2]), float(tok[3]), int(tok[4])
        except ValueError:
            raise CtdError(f"point line is not numeric: {ln!r}", path=path, row=n) from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise CtdError(f"non-finite coordinate in {ln!r}", path=path, row=n)
        if num != k:
            raise CtdError(f"point number {num}, expected {k}", path=path, row=n)
        pts[k] = (x, y)
        pids[k] = pid
    rest = content[count + 1 :]
    if len(rest) != 1:
        n = rest[1][0] if len(rest) > 1 else content[-1][0]
        raise CtdError("expected exactly one line (the host image name) after the points", path=path, row=n)
    return AsfShape(path=path, points_rel=pts, path_ids=pids, image_name=rest[0][1])


def normalize_eye_contours(points: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Mirror each IMM eye contour that starts at the medial corner; returns (points, eyes changed)."""
    pts = np.array(points, dtype=np.float64, copy=True)
    if pts.shape != (IMM_NUM_POINTS, 2):
        raise ValueError(f"IMM shapes have {IMM_NUM_POINTS} points, got {pts.shape}")
    changed: list[str] = []
    centroids = {eye: pts[s : s + 8].mean(axis=0) for eye, s in EYE_CONTOURS.items()}
    for eye, start in EYE_CONTOURS.items():
        other = centroids["right" if eye == "left" else "left"]
        contour = pts[start : start + 8]
        d0 = np.linalg.norm(contour[0] - other)
        d4 = np.linalg.norm(contour[4] - other)
        if d4 > d0:
            pts[start : start + 8] = contour[[(4 - i) % 8 for i in range(8)]]
            changed.append(eye)
    return pts, changed


def subject_of(stem: str) -> str:
    """IMM file names are NN-TG (subject, image type, gender): the subject is the NN prefix."""
    m = re.match(r"^(\d+)-", stem)
    return m.group(1) if m else stem.split("-")[0]


@dataclass
class ImportReport:
    out_dir: Path
    num_images: int = 0
    num_points: int = 0
    linked: int = 0
    copied: int = 0
    reordered: list[tuple[str, str]] = field(default_factory=list)  # (image, eye)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


def prepare_out_dir(out_dir: Path, force: bool) -> Path:
    """Create `out_dir/images`; refuse a file, or an existing data folder unless `force`."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CtdError("output path exists and is not a folder", path=out_dir)
    if (out_dir / ANNOTATIONS_FILE).exists() and not force:
        raise CtdError(f"output folder already holds {ANNOTATIONS_FILE} (use --force to overwrite)",
                       path=out_dir)
    images = out_dir / IMAGES_DIR
    try:
        images.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CtdError(f"cannot create the output folder: {e.strerror}", path=images) from None
    return images


def write_imported_folder(
    out_dir: Path, names: list[str], subjects: list[str], points: list[np.ndarray], sources: list[Path],
    copy: bool, force: bool, report: ImportReport,
) -> ImportReport:
    """The last step of every importer: out_dir/images/ (links or copies) + annotations.csv."""
    images_out = prepare_out_dir(out_dir, force)
    for name, src in zip(names, sources):
        place_image(src, images_out / name, copy, report)
    write_annotations(out_dir, names, subjects, np.stack(points))
    report.num_images = len(names)
    report.num_points = int(points[0].shape[0])
    return report


def place_image(src: Path, dst: Path, copy: bool, report: ImportReport) -> None:
    """Symlink `dst` -> `src` (absolute), falling back to a copy where links are not possible."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        if not dst.is_symlink() and dst.resolve() == src.resolve():
            report.copied += 1  # importing in place: the image is already there
            return
        dst.unlink()
    if not copy:
        try:
            os.symlink(src.resolve(), dst)
            report.linked += 1
            return
        except OSError:
            pass
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)
    report.copied += 1


def import_imm(
    asf_dir: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    skip_missing_images: bool = False,
    copy: bool = False,
    force: bool = False,
) -> ImportReport:
    """Convert a folder of IMM ASF files (and their images) to `out_dir/{images/,annotations.csv}`.

    Images are symlinked into `out_dir/images/` (copied with `copy=True` or where links fail);
    subject = the NN prefix of the file name; eye contours are normalised (module docstring).
    An ASF file whose image is absent is an error, or skipped with `skip_missing_images`.
    """
    asf_dir, images_dir, out_dir = Path(asf_dir), Path(images_dir), Path(out_dir)
    if not asf_dir.is_dir():
        raise CtdError("ASF folder not found", path=asf_dir)
    if not images_dir.is_dir():
        raise CtdError("images folder not found", path=images_dir)
    files = sorted(asf_dir.glob("*.asf"))
    if not files:
        raise CtdError("no .asf files in the folder", path=asf_dir)

    report = ImportReport(out_dir=out_dir)
    names: list[str] = []
    subjects: list[str] = []
    points: list[np.ndarray] = []
    sources: list[Path] = []
    for f in files:
        shape = read_asf(f)
        if shape.points_rel.shape[0] != IMM_NUM_POINTS:
            raise CtdError(f"IMM shapes have {IMM_NUM_POINTS} points, this one has {shape.points_rel.shape[0]}",
                           path=f)
        src = images_dir / shape.image_name
        if not src.is_file():
            if skip_missing_images:
                report.skipped.append((f.name, f"image {shape.image_name} not found"))
                continue
            raise CtdError(f"its image {src} was not found (use --skip-missing to skip such files)", path=f)
        img = read_image(src, where=f)
        h, w = img.shape[:2]
        pts, changed = normalize_eye_contours(shape.to_pixels(w, h))
        check_inside(pts, w, h, where=f, image=shape.image_name)
        report.reordered.extend((shape.image_name, eye) for eye in changed)
        names.append(shape.image_name)
        subjects.append(subject_of(f.stem))
        points.append(pts)
        sources.append(src)
    if not names:
        raise CtdError("no ASF file has its image in the images folder", path=asf_dir)
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise CtdError(f"several ASF files name the same image {sorted(dupes)[0]}", path=asf_dir)

    return write_imported_folder(out_dir, names, subjects, points, sources, copy, force, report)


__all__ = ["AsfShape", "ImportReport", "import_imm", "normalize_eye_contours", "read_asf", "subject_of"]
