"""OBJ + MTL reading: polygons, index forms, negative indices, texture paths, and every bad input
refused with the file (and line) named."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from ctd_runtime.errors import CtdError
from ctd_runtime.obj_mesh import read_obj

from tests.runtime import _meshes as M

QUAD = "v 0 0 0\nv 2 0 0\nv 2 1 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"


def _texture(path: Path, size: tuple[int, int] = (64, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((size[1], size[0], 3), np.uint8))
    return path


def _obj(tmp_path: Path, text: str, name: str = "m.obj") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_polygons_are_fan_triangulated(tmp_path):
    text = "v 0 0 0\nv 1 0 0\nv 2 1 0\nv 1 2 0\nv 0 1 0\nvt 0 0\nvt .5 0\nvt 1 .5\nvt .5 1\nvt 0 .5\n"
    mesh = read_obj(_obj(tmp_path, text + "f 1/1 2/2 3/3 4/4 5/5\nf 1/1 2/2 3/3\n"))
    assert mesh.tri_vertices.tolist() == [[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 1, 2]]
    assert mesh.tri_uvs.tolist() == mesh.tri_vertices.tolist()
    assert mesh.vertices.shape == (5, 3) and mesh.uvs.shape == (5, 2)
    assert mesh.tri_lines.tolist() == [11, 11, 11, 12]
    # one relative corner sends the file down the corner-by-corner path: the same triangles
    slow = read_obj(_obj(tmp_path, text + "f 1/1 2/2 3/3 4/4 5/5\nf -5/-5 2/2 3/3\n", name="slow.obj"))
    np.testing.assert_array_equal(slow.tri_vertices, mesh.tri_vertices)
    np.testing.assert_array_equal(slow.tri_uvs, mesh.tri_uvs)


def test_tabs_crlf_comments_and_other_statements_are_tolerated(tmp_path):
    text = ("# 3dMD export\r\no patch\r\nv\t0 0 0 # origin\r\nv  1 0 0\r\nv 0 1 0\r\n"
            "vt 0 0\r\nvt 1 0\r\nvt 0 1\r\ng face\r\ns 1\r\nf\t1/1  2/2 3/3   \r\nl 1 2\r\n")
    mesh = read_obj(_obj(tmp_path, text))
    assert mesh.tri_vertices.tolist() == [[0, 1, 2]] and mesh.tri_uvs.tolist() == [[0, 1, 2]]
    np.testing.assert_array_equal(mesh.vertices[1], [1, 0, 0])


def test_negative_indices_read_like_positive_ones(tmp_path):
    g = M.grid(M.cylinder(5.0, 10.0, 2.0), 6, 4)
    pos = read_obj(M.write_capture(tmp_path / "pos", g))
    neg = read_obj(M.write_capture(tmp_path / "neg", g, negative=True))
    np.testing.assert_array_equal(pos.tri_vertices, neg.tri_vertices)
    np.testing.assert_array_equal(pos.tri_uvs, neg.tri_uvs)
    assert pos.tri_vertices.min() == 0 and pos.tri_vertices.max() == len(g.vertices) - 1


def test_relative_indices_count_from_the_elements_read_so_far(tmp_path):
    text = "v 0 0 0\nv 1 0 0\nv 1 1 0\nvt 0 0\nvt 1 0\nvt 1 1\nf -3/-3 -2/-2 -1/-1\nv 0 1 0\nvt 0 1\nf 1/1 -2/-2 -1/-1\n"
    mesh = read_obj(_obj(tmp_path, text))
    assert mesh.tri_vertices.tolist() == [[0, 1, 2], [0, 2, 3]]
    assert mesh.tri_uvs.tolist() == [[0, 1, 2], [0, 2, 3]]


def test_corner_forms_and_faces_without_uvs(tmp_path):
    text = QUAD + "vn 0 0 1\nf 1/1/1 2/2/1 3/3/1\nf 1//1 3//1 4//1\nf 1 2 4\n"
    mesh = read_obj(_obj(tmp_path, text))
    assert mesh.tri_uvs.tolist() == [[0, 1, 2], [-1, -1, -1], [-1, -1, -1]]
    assert mesh.textured.tolist() == [True, False, False]
    assert mesh.texture_path is None and mesh.texture_size is None


def test_vertex_colours_and_uv_w_are_ignored(tmp_path):
    mesh = read_obj(_obj(tmp_path, "v 0 0 0 0.5 0.5 0.5\nv 1 0 0 1 1 1\nv 0 1 0 0 0 0\nvt 0 0 0\nvt 1 0 0\nvt 0 1 0\nf 1/1 2/2 3/3\n"))
    np.testing.assert_array_equal(mesh.vertices, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(mesh.uvs, [[0, 0], [1, 0], [0, 1]])


def test_texture_is_found_relative_to_the_mtl_and_its_size_read(tmp_path):
    tex = _texture(tmp_path / "textures" / "face.png", (96, 48))
    (tmp_path / "materials").mkdir()
    (tmp_path / "materials" / "cap.mtl").write_text(
        "# 3dMD\nnewmtl unused\nKd 1 1 1\nnewmtl skin\nmap_Kd -s 1 1 1 -clamp on ../textures/face.png\n"
    )
    mesh = read_obj(_obj(tmp_path, "mtllib materials/cap.mtl\n" + QUAD + "usemtl skin\nf 1/1 2/2 3/3 4/4\n"))
    assert mesh.texture_path == tex
    assert mesh.texture_size == (96, 48)
    assert read_obj(mesh.path, read_texture=False).texture_size is None


def test_uvs_within_the_tolerance_are_clipped_into_the_unit_square(tmp_path):
    mesh = read_obj(_obj(tmp_path, "v 0 0 0\nv 1 0 0\nv 0 1 0\nvt -5e-7 0\nvt 1.0000005 0\nvt 0 1\nf 1/1 2/2 3/3\n"))
    np.testing.assert_array_equal(mesh.uvs[:, 0], [0.0, 1.0, 0.0])


# ---------------------------------------------------------------------------- bad input

TRI = "v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nvt 1 0\nvt 0 1\n"
BAD_OBJS = {
    "empty": ("", "empty OBJ file", None),
    "comments only": ("# nothing\n\n", "empty OBJ file", None),
    "no faces": (TRI, "no faces", None),
    "vertex index out of range": (TRI + "f 1/1 2/2 4/3\n", "vertex 4 but the file has only 3", 7),
    "missing vt": (TRI + "f 1/1 2/2 3/9\n", "texture coordinate 9 but the file has only 3", 7),
    "relative index too far back": (TRI + "f -4/-1 -2/-2 -1/-3\n", "relative vertex index -4", 7),
    "index zero": (TRI + "f 0/1 2/2 3/3\n", "index 0", 7),
    "non-numeric vertex": ("v 0 0 0\nv 1 zero 0\n", "non-numeric", 2),
    "non-finite vertex": ("v 0 0 0\nv 1 nan 0\n", "non-finite", 2),
    "short vertex": ("v 0 0\n", "needs 3 numbers", 1),
    "non-numeric uv": ("v 0 0 0\nvt 0.5 x\n", "non-numeric", 2),
    "uv outside the unit square": (TRI + "vt 1.2 0.5\nf 1/1 2/2 3/4\n", "outside [0, 1]", 7),
    "negative uv": ("vt -0.01 0.5\n", "outside [0, 1]", 1),
    "uv without v": ("vt 0.5\n", "needs u and v", 1),
    "non-integer index": (TRI + "f 1/x 2/2 3/3\n", "non-integer texture coordinate index", 7),
    "two-corner face": (TRI + "f 1/1 2/2\n", "at least 3 corners", 7),
    "mixed corners": (TRI + "f 1/1 2 3/3\n", "mixes corners", 7),
    "normal out of range": (TRI + "vn 0 0 1\nf 1//1 2//2 3//1\n", "normal 2 but the file has only 1", 8),
    "missing mtl": ("mtllib nowhere.mtl\n" + TRI + "f 1/1 2/2 3/3\n", "material library 'nowhere.mtl' not found", 1),
}


@pytest.mark.parametrize("case", list(BAD_OBJS))
def test_bad_obj_is_refused_naming_file_and_line(tmp_path, case):
    text, message, line = BAD_OBJS[case]
    path = _obj(tmp_path, text)
    with pytest.raises(CtdError) as err:
        read_obj(path)
    text = str(err.value)
    assert text.startswith(f"{path}: "), text
    assert message in text
    if line is not None:
        assert f"line {line}:" in text


def _with_mtl(tmp_path: Path, mtl: str, usemtl: str = "skin") -> Path:
    (tmp_path / "m.mtl").write_text(mtl)
    return _obj(tmp_path, "mtllib m.mtl\n" + TRI + f"usemtl {usemtl}\nf 1/1 2/2 3/3\n")


def test_missing_texture_names_the_mtl_and_its_line(tmp_path):
    path = _with_mtl(tmp_path, "newmtl skin\nKd 1 1 1\nmap_Kd gone.png\n")
    with pytest.raises(CtdError, match="texture 'gone.png' not found") as err:
        read_obj(path)
    assert str(err.value).startswith(f"{tmp_path / 'm.mtl'}: line 3:")


@pytest.mark.parametrize("content", [b"", b"not a png at all", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00"])
def test_texture_whose_size_cannot_be_read(tmp_path, content):
    (tmp_path / "tex.png").write_bytes(content)
    path = _with_mtl(tmp_path, "newmtl skin\nmap_Kd tex.png\n")
    with pytest.raises(CtdError, match="cannot read the texture image's size") as err:
        read_obj(path)
    assert str(err.value).startswith(f"{tmp_path / 'tex.png'}: ")
    assert read_obj(path, read_texture=False).texture_path == tmp_path / "tex.png"


def test_unknown_material_names_the_usemtl_line(tmp_path):
    path = _with_mtl(tmp_path, "newmtl skin\n", usemtl="hair")
    with pytest.raises(CtdError, match="material 'hair' is in no material library") as err:
        read_obj(path)
    assert str(err.value).startswith(f"{path}: line 8:")


def test_more_than_one_texture_is_refused(tmp_path):
    _texture(tmp_path / "a.png")
    _texture(tmp_path / "b.png")
    (tmp_path / "m.mtl").write_text("newmtl a\nmap_Kd a.png\nnewmtl b\nmap_Kd b.png\n")
    path = _obj(tmp_path, "mtllib m.mtl\n" + TRI + "usemtl a\nf 1/1 2/2 3/3\nusemtl b\nf 1/1 3/3 2/2\n")
    with pytest.raises(CtdError, match="2 textures") as err:
        read_obj(path)
    assert str(path) in str(err.value)


def test_only_the_used_material_picks_the_texture(tmp_path):
    _texture(tmp_path / "a.png", (10, 20))
    _texture(tmp_path / "b.png")
    (tmp_path / "m.mtl").write_text("newmtl a\nmap_Kd a.png\nnewmtl b\nmap_Kd b.png\n")
    mesh = read_obj(_obj(tmp_path, "mtllib m.mtl\n" + TRI + "usemtl a\nf 1/1 2/2 3/3\n"))
    assert mesh.texture_path == tmp_path / "a.png" and mesh.texture_size == (10, 20)


def test_unreadable_obj_names_the_file(tmp_path):
    with pytest.raises(CtdError, match="cannot read the OBJ file") as err:
        read_obj(tmp_path / "absent.obj")
    assert str(tmp_path / "absent.obj") in str(err.value)
