"""The annotated-folder format: every bad input gives a CtdError naming the file and the row."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.train._data_synth import make_folder
from ctd_runtime.errors import CtdError
from ctd_train.data.annotations import read_annotations, write_annotations


def _rewrite(root: Path, edit) -> Path:
    """Apply edit(list of rows of cells) to annotations.csv; returns its path."""
    csv_path = root / "annotations.csv"
    rows = [line.split(",") for line in csv_path.read_text().splitlines()]
    edit(rows)
    csv_path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    return csv_path


def _expect(root: Path, csv_path: Path, row: int | None, *fragments: str) -> CtdError:
    with pytest.raises(CtdError) as ei:
        read_annotations(root)
    err = ei.value
    msg = str(err)
    assert err.path == csv_path and msg.startswith(str(csv_path)), msg
    if row is not None:
        assert err.row == row and f"row {row}" in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    return err


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, np.ndarray]:
    return make_folder(tmp_path / "data", n_images=4, n_subjects=2)


def test_reads_valid_folder(folder):
    root, pts = folder
    data = read_annotations(root)
    assert len(data) == 4 and data.num_points == 58
    assert data.subjects == ["00", "01", "00", "01"]
    assert data.image_names == ["00-0.png", "01-1.png", "00-2.png", "01-3.png"]
    assert data.image_paths[0] == root / "images" / "00-0.png"
    np.testing.assert_allclose(data.points, pts, atol=1e-6)
    assert data.points.dtype == np.float64 and data.points.shape == (4, 58, 2)
    assert data.image_sizes.tolist() == [[200, 160]] * 4
    img = data.load_image(1)
    assert img.shape == (160, 200, 3) and img.dtype == np.uint8
    sub = data.subset([3, 1])
    assert sub.subjects == ["01", "01"] and sub.image_names == ["01-3.png", "01-1.png"]
    # without image validation nothing is decoded
    assert read_annotations(root, validate_images=False).image_sizes is None


def test_write_annotations_round_trip(tmp_path):
    pts = np.array([[[0.25, 1.5], [3.125, 4.0]]])
    path = write_annotations(tmp_path, ["a.png"], ["s1"], pts)
    assert path.read_text().splitlines() == [
        "image,subject,x0,y0,x1,y1",
        "a.png,s1,0.2500,1.5000,3.1250,4.0000",
    ]
    assert not list(tmp_path.glob(".*tmp"))
    with pytest.raises(ValueError):
        write_annotations(tmp_path, ["a.png"], ["s1"], pts * np.nan)


def test_missing_folder_and_files(tmp_path, folder):
    root, _ = folder
    with pytest.raises(CtdError, match="data folder not found") as ei:
        read_annotations(tmp_path / "nope")
    assert ei.value.path == tmp_path / "nope"
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CtdError, match="not a folder"):
        read_annotations(tmp_path / "file.txt")
    (root / "annotations.csv").rename(root / "other.csv")
    with pytest.raises(CtdError, match="annotations.csv not found") as ei:
        read_annotations(root)
    assert ei.value.path == root / "annotations.csv"
    (root / "other.csv").rename(root / "annotations.csv")
    (root / "images").rename(root / "imgs")
    with pytest.raises(CtdError, match="no images/ folder") as ei:
        read_annotations(root)
    assert ei.value.path == root / "images"


def test_empty_and_header_only(folder):
    root, _ = folder
    csv_path = root / "annotations.csv"
    csv_path.write_text("")
    _expect(root, csv_path, None, "empty")
    csv_path.write_text("image,subject,x0,y0\n")
    _expect(root, csv_path, None, "no annotated images")


@pytest.mark.parametrize(
    "header_edit, fragments",
    [
        (lambda h: h.__setitem__(0, "img"), ("lacks column(s) image",)),
        (lambda h: h.__setitem__(1, "person"), ("lacks column(s) subject",)),
        (lambda h: h.__setitem__(3, "y_0"), ("unexpected column 'y_0'",)),
        (lambda h: h.__setitem__(5, "x99"), ("column x1 has no matching y1",)),  # y1 renamed
        (lambda h: h.__setitem__(4, "y1"), ("appears twice",)),  # ..., y1, y1
    ],
)
def test_bad_headers(folder, header_edit, fragments):
    root, _ = folder
    csv_path = _rewrite(root, lambda rows: header_edit(rows[0]))
    _expect(root, csv_path, 1, *fragments)


def test_missing_point_columns(folder):
    root, _ = folder

    def drop_point_1(rows):
        for r in rows:
            del r[4:6]  # x1, y1

    csv_path = _rewrite(root, drop_point_1)
    _expect(root, csv_path, 1, "columns x1,y1 are missing")


def test_unpaired_x_column(folder):
    root, _ = folder

    def drop_last_y(rows):
        for r in rows:
            del r[-1]  # y57

    csv_path = _rewrite(root, drop_last_y)
    _expect(root, csv_path, 1, "column x57 has no matching y57")


@pytest.mark.parametrize(
    "row, col, value, fragments",
    [
        (3, 5, "abc", ("column 'y1'", "'abc' is not a number")),
        (2, 2, "nan", ("column 'x0'", "must be finite")),
        (4, 9, "inf", ("column 'y3'", "must be finite")),
        (5, 117, "-Infinity", ("column 'y57'", "must be finite")),
        (2, 6, "", ("column 'x2'", "is not a number")),
    ],
)
def test_bad_values(folder, row, col, value, fragments):
    root, _ = folder
    csv_path = _rewrite(root, lambda rows: rows[row - 1].__setitem__(col, value))
    _expect(root, csv_path, row, *fragments)


def test_row_shape_subject_and_duplicates(folder):
    root, _ = folder
    csv_path = _rewrite(root, lambda rows: rows[2].pop())
    _expect(root, csv_path, 3, "117 values but the header has 118 columns")
    root2, _ = make_folder(root.parent / "d2", n_images=4)
    csv2 = _rewrite(root2, lambda rows: rows[3].__setitem__(1, " "))
    _expect(root2, csv2, 4, "empty subject")
    root3, _ = make_folder(root.parent / "d3", n_images=4)
    csv3 = _rewrite(root3, lambda rows: rows[4].__setitem__(0, rows[2][0]))
    _expect(root3, csv3, 5, "listed twice (first in row 3)")
    root4, _ = make_folder(root.parent / "d4", n_images=4)
    csv4 = _rewrite(root4, lambda rows: rows[1].__setitem__(0, ""))
    _expect(root4, csv4, 2, "empty image name")


def test_blank_lines_are_skipped_and_rows_are_file_lines(folder):
    root, _ = folder
    csv_path = root / "annotations.csv"
    lines = csv_path.read_text().splitlines()
    lines.insert(2, "")
    lines[4] = lines[4].replace(lines[4].split(",")[2], "oops", 1)
    csv_path.write_text("\n".join(lines) + "\n")
    _expect(root, csv_path, 5, "column 'x0'", "'oops'")


def test_missing_and_corrupt_images(folder):
    root, _ = folder
    csv_path = root / "annotations.csv"
    (root / "images" / "01-1.png").unlink()
    _expect(root, csv_path, 3, "01-1.png: image file not found")
    cv2.imwrite(str(root / "images" / "01-1.png"), np.zeros((160, 200, 3), np.uint8))
    (root / "images" / "00-2.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    _expect(root, csv_path, 4, "truncated PNG", "00-2.png")
    # without validation the folder reads; loading the image then fails, naming it
    data = read_annotations(root, validate_images=False)
    with pytest.raises(CtdError, match="truncated PNG") as ei:
        data.load_image(2)
    assert ei.value.path == root / "images" / "00-2.png"


@pytest.mark.parametrize(
    "point, xy, ok",
    [
        (7, (-0.5, 10.0), True),
        (7, (199.5, 159.5), True),
        (7, (-0.51, 10.0), False),
        (30, (199.6, 10.0), False),
        (57, (10.0, -0.6), False),
        (0, (10.0, 159.51), False),
    ],
)
def test_landmark_outside_image(tmp_path, point, xy, ok):
    rng = np.random.default_rng(1)
    from tests.train._data_synth import face58

    pts = np.stack([face58(200, 160, rng) for _ in range(3)])
    pts[1, point] = xy
    root, _ = make_folder(tmp_path / "d", n_images=3, points=pts)
    if ok:
        data = read_annotations(root)
        np.testing.assert_allclose(data.points[1, point], xy)
    else:
        _expect(root, root / "annotations.csv", 3, f"point {point} (columns x{point},y{point})",
                "outside image 01-1.png (200x160")


def test_real_imm_folder(imm_dir):
    data = read_annotations(imm_dir)
    assert len(data) == 180
    assert data.num_points == 58
    assert len(set(data.subjects)) == 30
    assert all(data.subjects.count(s) == 6 for s in set(data.subjects))
    assert (data.image_sizes == [640, 480]).all()
    # the README's conventions: path-1 eye (13-20) on the image right of the path-2 eye (21-28)
    assert (data.points[:, 13:21, 0].mean(1) > data.points[:, 21:29, 0].mean(1)).all()
