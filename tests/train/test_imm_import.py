"""IMM ASF import: reproduces the shared annotations.csv, normalises eye contours, CLI end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.train._data_synth import face58, random_image
from ctd_runtime.cli import main
from ctd_runtime.errors import CtdError
from ctd_train.data.annotations import read_annotations
from ctd_train.data.imm_asf import import_imm, normalize_eye_contours, read_asf, subject_of

MIRROR = [(4 - i) % 8 for i in range(8)]


def write_asf(path: Path, pts_px: np.ndarray, width: int, height: int, image_name: str,
              extra_cols: bool = False) -> None:
    """An ASF file like IMM's (paths: jaw 0, eyes 1 and 2, brows 3 and 4, mouth 5, nose 6)."""
    bounds = [(0, 13, 0), (13, 21, 1), (21, 29, 2), (29, 34, 3), (34, 39, 4), (39, 47, 5), (47, 58, 6)]
    lines = ["#" * 20, "# AAM Shape File", "#", "", "#", "# number of model points", "#", str(len(pts_px)), "",
             "# model points", "# format: <path#> <type> <x rel.> <y rel.> <point#> <connects from> <connects to>"]
    rel = pts_px / np.array([width, height], dtype=np.float64)
    for lo, hi, pid in bounds:
        for k in range(lo, hi):
            extra = " \t0.00\t0.00\t0.00" if extra_cols else ""
            lines.append(f"{pid} \t0 \t{rel[k, 0]:.8f} \t{rel[k, 1]:.8f} \t{k} "
                         f"\t{max(k - 1, lo)} \t{min(k + 1, hi - 1)}{extra}")
    lines += ["", "#", "# host image", "#", image_name]
    path.write_text("\n".join(lines))  # IMM files end without a newline


def make_imm(tmp: Path, n: int = 4, width: int = 320, height: int = 240, seed: int = 0):
    """Synthetic ASF + images folders; the subject's right eye of image 1 and the left eye of image 2
    start at the medial corner. Returns (asf_dir, images_dir, expected normalised points [n,58,2])."""
    rng = np.random.default_rng(seed)
    asf_dir, img_dir = tmp / "asf", tmp / "imgs"
    asf_dir.mkdir()
    img_dir.mkdir()
    expected = []
    for i in range(n):
        stem = f"{i + 1:02d}-{(i % 6) + 1}{'mf'[i % 2]}"
        pts = face58(width, height, rng)
        expected.append(pts.copy())
        stored = pts.copy()
        if i == 1:
            stored[21:29] = pts[21:29][MIRROR]
        if i == 2:
            stored[13:21] = pts[13:21][MIRROR]
        cv2.imwrite(str(img_dir / f"{stem}.jpg"), random_image(width, height, rng))
        write_asf(asf_dir / f"{stem}.asf", stored, width, height, f"{stem}.jpg", extra_cols=(i == 3))
    return asf_dir, img_dir, np.stack(expected)


def test_read_asf_and_pixel_convention(tmp_path):
    asf_dir, img_dir, expected = make_imm(tmp_path, n=1)
    shape = read_asf(asf_dir / "01-1m.asf")
    assert shape.image_name == "01-1m.jpg"
    assert shape.points_rel.shape == (58, 2)
    assert shape.path_ids.tolist() == [0] * 13 + [1] * 8 + [2] * 8 + [3] * 5 + [4] * 5 + [5] * 8 + [6] * 11
    np.testing.assert_allclose(shape.to_pixels(320, 240), expected[0], atol=1e-5)  # x = x_rel * width


def test_normalize_eye_contours_mirrors_medial_start():
    pts = face58(320, 240, np.random.default_rng(3))
    bad = pts.copy()
    bad[21:29] = pts[21:29][MIRROR]
    fixed, changed = normalize_eye_contours(bad)
    assert changed == ["right"]
    np.testing.assert_array_equal(fixed, pts)
    # the mirror maps the medial corner (local 4) to 0 and keeps the lids on their sides
    assert fixed[21, 0] < fixed[25, 0]  # subject's right eye is on the image left: lateral is leftmost
    assert (fixed[22:25, 1] < fixed[26:29, 1]).all()  # upper lid above lower lid
    both = pts.copy()
    both[13:21] = pts[13:21][MIRROR]
    both[21:29] = pts[21:29][MIRROR]
    fixed, changed = normalize_eye_contours(both)
    assert changed == ["left", "right"]
    np.testing.assert_array_equal(fixed, pts)
    same, changed = normalize_eye_contours(pts)
    assert changed == [] and np.array_equal(same, pts)


def test_import_synthetic(tmp_path):
    asf_dir, img_dir, expected = make_imm(tmp_path)
    out = tmp_path / "out"
    report = import_imm(asf_dir, img_dir, out)
    assert report.num_images == 4
    assert report.reordered == [("02-2f.jpg", "right"), ("03-3m.jpg", "left")]
    data = read_annotations(out)
    assert data.image_names == ["01-1m.jpg", "02-2f.jpg", "03-3m.jpg", "04-4f.jpg"]
    assert data.subjects == ["01", "02", "03", "04"]
    np.testing.assert_allclose(data.points, expected, atol=1e-3)
    assert (out / "images" / "01-1m.jpg").is_symlink() or report.copied == 4
    # importing again needs force
    with pytest.raises(CtdError, match="--force"):
        import_imm(asf_dir, img_dir, out)
    assert import_imm(asf_dir, img_dir, out, force=True, copy=True).copied == 4
    assert not (out / "images" / "01-1m.jpg").is_symlink()


def test_import_missing_image_and_bad_files(tmp_path):
    asf_dir, img_dir, _ = make_imm(tmp_path, n=3)
    (img_dir / "02-2f.jpg").unlink()
    with pytest.raises(CtdError, match="02-2f.jpg was not found") as ei:
        import_imm(asf_dir, img_dir, tmp_path / "o1")
    assert ei.value.path == asf_dir / "02-2f.asf"
    report = import_imm(asf_dir, img_dir, tmp_path / "o2", skip_missing_images=True)
    assert report.num_images == 2 and report.skipped[0][0] == "02-2f.asf"

    f = asf_dir / "01-1m.asf"
    text = f.read_text()
    lines = text.split("\n")
    n = next(i for i, ln in enumerate(lines) if ln.startswith("1 \t0"))  # first point of path 1
    lines[n] = lines[n].replace("\t13 \t", "\t14 \t")
    f.write_text("\n".join(lines))
    with pytest.raises(CtdError, match="point number 14, expected 13") as ei:
        read_asf(f)
    assert ei.value.path == f and ei.value.row == n + 1
    lines[n] = "1 \t0 \t0.5"
    f.write_text("\n".join(lines))
    with pytest.raises(CtdError, match="3 fields, expected 7") as ei:
        read_asf(f)
    assert ei.value.row == n + 1
    f.write_text(text.replace("\n58\n", "\nfifty-eight\n"))
    with pytest.raises(CtdError, match="expected the number of points") as ei:
        read_asf(f)
    assert ei.value.row == 8
    f.write_text(text.replace("\n58\n", "\n60\n"))
    with pytest.raises(CtdError, match="declares 60 points"):
        read_asf(f)
    f.write_text(text.replace("\n58\n", "\n57\n"))
    with pytest.raises(CtdError, match="exactly one line"):
        read_asf(f)
    with pytest.raises(CtdError, match="ASF folder not found"):
        import_imm(tmp_path / "nope", img_dir, tmp_path / "o3")


def test_subject_of():
    assert subject_of("06-5m") == "06"
    assert subject_of("40-1f") == "40"
    assert subject_of("face") == "face"


def test_cli_import_imm(tmp_path, capsys):
    asf_dir, img_dir, expected = make_imm(tmp_path, n=3)
    out = tmp_path / "cli_out"
    main(["data", "import-imm", str(asf_dir), "--images", str(img_dir), "--out", str(out)])
    text = capsys.readouterr().out
    assert "imported 3 images" in text and "02-2f.jpg, subject's right eye" in text
    np.testing.assert_allclose(read_annotations(out).points, expected, atol=1e-3)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit) as ei:
        main(["data", "import-imm", str(asf_dir), "--images", str(img_dir), "--out", str(tmp_path / "afile")])
    assert ei.value.code == 2
    assert "not a folder" in capsys.readouterr().err


def test_reproduces_shared_annotations(imm_dir, tmp_path):
    """Importing source_asf/ gives the shared annotations.csv within 1e-3 px (it is rounded to
    1e-3), with x = x_rel * width, y = y_rel * height, and the same eye re-orderings."""
    asf_files = sorted((imm_dir / "source_asf").glob("*.asf"))
    have = {p.stem for p in (imm_dir / "images").glob("*.jpg")}
    assert {p.stem for p in asf_files} >= have  # every image present has its ASF file
    report = import_imm(imm_dir / "source_asf", imm_dir / "images", tmp_path / "imm", skip_missing_images=True)
    assert report.num_images == len(have) == 180
    ours = read_annotations(tmp_path / "imm")
    ref = read_annotations(imm_dir)
    assert ours.image_names == ref.image_names
    assert ours.subjects == ref.subjects
    err = np.abs(ours.points - ref.points)
    assert err.max() <= 1e-3, f"max deviation {err.max():.6f} px"
    with open(imm_dir / "metadata.csv", newline="") as fh:
        meta = list(csv.DictReader(fh))
    flagged = sorted(
        [(m["image"], "left") for m in meta if m["left_eye_contour_reordered"] == "1"]
        + [(m["image"], "right") for m in meta if m["right_eye_contour_reordered"] == "1"]
    )
    assert sorted(report.reordered) == flagged
    assert len(flagged) >= 1
