"""iBUG .pts reader (1-based -> 0-based pixels) and importer."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ctd_runtime.cli import main
from ctd_runtime.errors import CtdError
from ctd_train.data.annotations import read_annotations
from ctd_train.data.ibug_pts import import_pts, read_pts, read_pts_with_lines, write_pts

GOOD = "version: 1\nn_points:  3\n{\n1 1\n10.5 20.25\n100 50\n}\n"


def test_read_pts_subtracts_one(tmp_path):
    f = tmp_path / "a.pts"
    f.write_text(GOOD)
    pts, lines = read_pts_with_lines(f)
    np.testing.assert_array_equal(pts, [[0, 0], [9.5, 19.25], [99, 49]])
    assert lines == [4, 5, 6]
    write_pts(tmp_path / "b.pts", pts)
    np.testing.assert_allclose(read_pts(tmp_path / "b.pts"), pts)
    assert (tmp_path / "b.pts").read_text().splitlines()[3] == "1.000 1.000"
    # CRLF files and blank lines are fine
    f.write_text(GOOD.replace("\n", "\r\n").replace("{\r\n", "{\r\n\r\n"))
    np.testing.assert_array_equal(read_pts(f), pts)


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("", None, "empty .pts file"),
        ("version: 1\nn_points: 3\n1 1\n", 3, "expected 'key: value' or '{'"),
        ("version: 1\nn_points: three\n{\n}\n", 2, "n_points is not an integer"),
        ("version: 2\nn_points: 3\n{\n}\n", 1, "unsupported .pts version"),
        ("version: 1\n{\n1 1\n}\n", 2, "no n_points"),
        ("version: 1\nn_points: 2\n{\n1 1\n2 x\n}\n", 5, "coordinate is not a number"),
        ("version: 1\nn_points: 2\n{\n1 1\n2 2 3\n}\n", 5, "expected 'x y'"),
        ("version: 1\nn_points: 2\n{\n1 1\n2 nan\n}\n", 5, "non-finite"),
        ("version: 1\nn_points: 3\n{\n1 1\n2 2\n}\n", 6, "n_points says 3 but the file has 2"),
        ("version: 1\nn_points: 2\n{\n1 1\n2 2\n", 5, "no '}'"),
        ("version: 1\nn_points: 2\n{\n1 1\n2 2\n}\nmore\n", 7, "unexpected text after '}'"),
        ("version: 1\nn_points: 2\n", 2, "no '{'"),
    ],
)
def test_malformed_pts(tmp_path, text, line, fragment):
    f = tmp_path / "bad.pts"
    f.write_text(text)
    with pytest.raises(CtdError) as ei:
        read_pts(f)
    msg = str(ei.value)
    assert ei.value.path == f and msg.startswith(str(f)), msg
    assert fragment in msg
    if line is not None:
        assert ei.value.row == line and f"row {line}" in msg, msg


def _make_ibug(root: Path, n_points: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """folder/a.jpg, folder/sub/b.png, folder/sub/c.jpg with .pts files; returns 0-based points."""
    rng = np.random.default_rng(seed)
    out = {}
    for rel, size in (("a.jpg", (120, 90)), ("sub/b.png", (80, 100)), ("sub/c.JPG", (64, 64))):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        w, h = size
        cv2.imwrite(str(p.with_suffix(".jpg") if p.suffix == ".JPG" else p),
                    rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        if p.suffix == ".JPG":
            p.with_suffix(".jpg").rename(p)
        pts = np.stack([rng.uniform(0, w - 1, n_points), rng.uniform(0, h - 1, n_points)], axis=1)
        write_pts(p.with_suffix(".pts"), pts)
        out[Path(rel).as_posix()] = np.round(pts + 1, 3) - 1
    return out


def test_import_pts(tmp_path):
    expected = _make_ibug(tmp_path / "ibug")
    report = import_pts(tmp_path / "ibug", tmp_path / "out")
    assert report.num_images == 3
    data = read_annotations(tmp_path / "out")
    assert data.image_names == ["a.jpg", "sub/b.png", "sub/c.JPG"]
    assert data.subjects == ["a", "sub/b", "sub/c"]
    for name, pts in zip(data.image_names, data.points):
        np.testing.assert_allclose(pts, expected[name], atol=1e-6)
    assert data.image_sizes.tolist() == [[120, 90], [80, 100], [64, 64]]


def test_import_pts_errors(tmp_path):
    root = tmp_path / "ibug"
    _make_ibug(root)
    # a point outside its image: error naming the .pts file and the point's line, or skipped
    f = root / "sub" / "b.pts"
    lines = f.read_text().splitlines()
    lines[5] = "81.000 5.000"  # 0-based x = 80 > 79.5 in an 80 px wide image
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(CtdError, match="point 2 .* lies outside its image b.png") as ei:
        import_pts(root, tmp_path / "o1")
    assert ei.value.path == f and ei.value.row == 6
    report = import_pts(root, tmp_path / "o2", skip_invalid=True)
    assert report.num_images == 2 and report.skipped[0][0] == "sub/b.pts"
    # a .pts file without its image
    (root / "a.jpg").unlink()
    with pytest.raises(CtdError, match="no image with the same name") as ei:
        import_pts(root, tmp_path / "o3")
    assert ei.value.path == root / "a.pts"
    # point counts must agree
    write_pts(root / "sub" / "c.pts", np.zeros((4, 2)))
    with pytest.raises(CtdError, match="4 points, but"):
        import_pts(root, tmp_path / "o4", skip_invalid=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CtdError, match="no .pts files") as ei:
        import_pts(tmp_path / "empty", tmp_path / "o5")
    assert ei.value.path == tmp_path / "empty"


def test_cli_import_pts(tmp_path, capsys):
    _make_ibug(tmp_path / "ibug")
    main(["data", "import-pts", str(tmp_path / "ibug"), "--out", str(tmp_path / "out"), "--copy"])
    assert "imported 3 images" in capsys.readouterr().out
    assert not (tmp_path / "out" / "images" / "a.jpg").is_symlink()
    assert len(read_annotations(tmp_path / "out")) == 3
    with pytest.raises(SystemExit) as ei:
        main(["data", "import-pts", str(tmp_path / "nope"), "--out", str(tmp_path / "o2")])
    assert ei.value.code == 2
    assert "folder not found" in capsys.readouterr().err


@pytest.mark.parametrize("n_points, says", [
    (68, "68 points per image: train with --schema ibug68"),
    (5, "no built-in schema has 5 points; write a schema JSON with num_source_points 5"),
])
def test_cli_import_pts_says_which_schema(tmp_path, capsys, n_points, says):
    _make_ibug(tmp_path / "ibug", n_points=n_points)
    main(["data", "import-pts", str(tmp_path / "ibug"), "--out", str(tmp_path / "out")])
    assert says in " ".join(capsys.readouterr().out.split())
