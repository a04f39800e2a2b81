"""Texture pixels -> UV -> 3D through the grid index, and 3D PFL on analytic meshes (exact to 1e-9).

Landmarks sit on mesh vertices (cylinder, sphere) or anywhere on a plane (where the UV -> 3D map
is affine, so barycentric interpolation is exact), so the expected distances are exact for the
triangulated surface, not just close to the smooth one.
"""

from __future__ import annotations

import numpy as np
import pytest

from ctd_runtime.errors import CtdError
from ctd_runtime.obj_mesh import read_obj
from ctd_runtime.pfl import FlagCode
from ctd_runtime.pfl3d import pfl_3d
from ctd_runtime.schema import LandmarkSchema
from ctd_runtime.uv_lookup import UvIndex, texture_px_to_uv, uv_to_texture_px

from tests.runtime import _meshes as M

SIZE = (800, 600)
PAIR = LandmarkSchema("pair", ("endocanthion", "exocanthion"), (0, 1), pfl_pair=(0, 1))
EXACT = 1e-9


def test_texture_px_to_uv_formula():
    uv = texture_px_to_uv(np.array([[-0.5, -0.5], [0.0, 0.0], [3.5, 1.5], [1.5, 0.5]]), (4, 2))
    # top-left image corner is UV (0, 1); the centre of the top-left pixel is (0.5/4, 1 - 0.5/2)
    np.testing.assert_allclose(uv, [[0, 1], [0.125, 0.75], [1, 0], [0.5, 0.5]], atol=0)
    px = np.random.default_rng(0).uniform(-0.5, 700, (50, 2))
    np.testing.assert_allclose(uv_to_texture_px(texture_px_to_uv(px, SIZE), SIZE), px, atol=1e-10)


def test_top_of_the_texture_maps_to_the_top_of_the_mesh(tmp_path):
    """Fails if v were not flipped: a pixel near the image top must land where v is near 1."""
    surface = M.plane()
    mesh = read_obj(M.write_capture(tmp_path, M.grid(surface, 8, 6)))
    px = np.array([[100.0, 10.0], [600.0, 550.0]])
    hits = UvIndex(mesh).locate_px(px, SIZE)
    u = (px[:, 0] + 0.5) / SIZE[0]
    v_flipped, v_unflipped = 1 - (px[:, 1] + 0.5) / SIZE[1], (px[:, 1] + 0.5) / SIZE[1]
    np.testing.assert_allclose(hits.points_3d, surface(u, v_flipped), atol=EXACT)
    assert np.all(np.linalg.norm(hits.points_3d - surface(u, v_unflipped), axis=1) > 10)


def test_plane_pfl_is_exact_anywhere(tmp_path):
    surface = M.plane(lx=60.0, ly=40.0)
    mesh = read_obj(M.write_capture(tmp_path, M.grid(surface, 7, 5)))
    index = UvIndex(mesh)
    rng = np.random.default_rng(1)
    for _ in range(20):
        lm = rng.uniform([0, 0], [SIZE[0] - 1, SIZE[1] - 1], (2, 2))
        uv = texture_px_to_uv(lm, SIZE)
        expected = np.linalg.norm(surface(uv[0, 0], uv[0, 1]) - surface(uv[1, 0], uv[1, 1]))
        result = pfl_3d(mesh, SIZE, lm, PAIR, index=index)
        assert abs(result.pfl_3d_mm - expected) < EXACT
        assert result.flags == [] and result.outside_uv == ()


@pytest.mark.parametrize("quads", [True, False])
def test_cylinder_chord_on_vertices(tmp_path, quads):
    r, height, sector, n = 12.0, 30.0, np.pi, 40
    g = M.grid(M.cylinder(r, height, sector), n, 10, quads=quads)
    mesh = read_obj(M.write_capture(tmp_path, g))
    same_row = np.stack([M.vertex_px(g, 5, 3, SIZE), M.vertex_px(g, 17, 3, SIZE)])
    chord = 2 * r * np.sin((12 / n) * sector / 2)
    assert abs(pfl_3d(mesh, SIZE, same_row, PAIR).pfl_3d_mm - chord) < EXACT
    rows_apart = np.stack([M.vertex_px(g, 5, 3, SIZE), M.vertex_px(g, 17, 8, SIZE)])
    expected = np.hypot(chord, height * 5 / 10)
    assert abs(pfl_3d(mesh, SIZE, rows_apart, PAIR).pfl_3d_mm - expected) < EXACT


def test_cylinder_between_vertices_follows_the_flat_facet(tmp_path):
    """Off the vertices the mesh is its planar facets: the point is the interpolation of the
    facet's corners, inside the circle (the chord error the brief warns about)."""
    r, sector, n = 12.0, np.pi, 40
    g = M.grid(M.cylinder(r, 30.0, sector), n, 10)
    mesh = read_obj(M.write_capture(tmp_path, g))
    t = 0.3
    a, b = M.vertex_px(g, 9, 4, SIZE), M.vertex_px(g, 10, 4, SIZE)
    mid = a + t * (b - a)
    lm = np.stack([M.vertex_px(g, 2, 4, SIZE), mid])
    facet_point = (1 - t) * g.vertices[g.vertex(9, 4)] + t * g.vertices[g.vertex(10, 4)]
    expected = np.linalg.norm(g.vertices[g.vertex(2, 4)] - facet_point)
    result = pfl_3d(mesh, SIZE, lm, PAIR)
    assert abs(result.pfl_3d_mm - expected) < EXACT
    assert np.hypot(*result.landmarks_3d[1][:2]) < r - 1e-3  # on the facet, not on the circle


def test_sphere_chord_with_negative_indices_and_triangles(tmp_path):
    radius, lon, lat, nu, nv = 50.0, (-np.pi / 2, np.pi / 2), (-0.8, 1.2), 36, 24  # asymmetric in v
    g = M.grid(M.sphere(radius, lon, lat), nu, nv, quads=False)
    mesh = read_obj(M.write_capture(tmp_path, g, negative=True, form="v/vt/vn"))
    (i1, j1), (i2, j2) = (4, 5), (30, 19)
    lam = [lon[0] + (lon[1] - lon[0]) * i / nu for i in (i1, i2)]
    phi = [lat[0] + (lat[1] - lat[0]) * j / nv for j in (j1, j2)]
    cos_g = np.sin(phi[0]) * np.sin(phi[1]) + np.cos(phi[0]) * np.cos(phi[1]) * np.cos(lam[1] - lam[0])
    chord = 2 * radius * np.sin(np.arccos(cos_g) / 2)
    lm = np.stack([M.vertex_px(g, i1, j1, SIZE), M.vertex_px(g, i2, j2, SIZE)])
    assert abs(pfl_3d(mesh, SIZE, lm, PAIR).pfl_3d_mm - chord) < EXACT


def test_landmark_outside_every_uv_triangle_is_flagged_not_raised(tmp_path):
    g = M.grid(M.cylinder(12.0, 30.0, np.pi), 20, 10, uv_box=(0.0, 0.0, 0.5, 1.0))
    mesh = read_obj(M.write_capture(tmp_path, g))
    inside = M.vertex_px(g, 3, 3, SIZE)
    for outside in ([0.75 * SIZE[0], 300.0], [-5.0, 300.0], [np.nan, np.nan]):
        result = pfl_3d(mesh, SIZE, np.stack([inside, outside]), PAIR)
        assert np.isnan(result.pfl_3d_mm)
        assert result.outside_uv == (1,)
        assert [f.code for f in result.flags] == [FlagCode.OUTSIDE_UV]
        assert result.flags[0].landmarks == (1,)
        assert np.all(np.isfinite(result.landmarks_3d[0])) and np.all(np.isnan(result.landmarks_3d[1]))


def test_grid_index_agrees_with_a_scan_of_every_triangle(tmp_path):
    """An irregular UV layout (jittered interior vertices, several cell sizes) and points inside,
    on vertices and edges, outside the chart and outside [0, 1]."""
    rng = np.random.default_rng(2)
    g = M.grid(M.sphere(40.0, (-1.2, 1.2), (-0.9, 0.9)), 30, 20, quads=False, uv_box=(0.05, 0.1, 0.9, 0.95))
    uvs = g.uvs.copy()
    interior = (uvs[:, 0] > 0.051) & (uvs[:, 0] < 0.899) & (uvs[:, 1] > 0.101) & (uvs[:, 1] < 0.949)
    uvs[interior] += rng.uniform(-0.3, 0.3, (interior.sum(), 2)) * np.array([0.85 / 30, 0.85 / 20])
    g = M.Grid(g.vertices, uvs, g.faces, g.nu, g.nv)
    mesh = read_obj(M.write_capture(tmp_path, g))
    index = UvIndex(mesh)
    edge_mid = (uvs[g.faces[7][0]] + uvs[g.faces[7][1]]) / 2
    points = np.vstack([rng.uniform(-0.1, 1.1, (400, 2)), uvs[::17], edge_mid, [[np.nan, 0.5]]])
    fast, slow = index.locate(points), index.locate_by_scan(points)
    np.testing.assert_array_equal(fast.found, slow.found)
    np.testing.assert_allclose(fast.points_3d, slow.points_3d, atol=1e-12)
    assert fast.found[400:-1].all() and not fast.found[-1]
    assert 100 < fast.found.sum() < len(points)
    w = fast.barycentric[fast.found]
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert w.min() >= -1e-9


@pytest.mark.parametrize("cells", [1, 3, 64])
def test_any_grid_resolution_gives_the_same_points(tmp_path, cells):
    mesh = read_obj(M.write_capture(tmp_path, M.grid(M.cylinder(10.0, 20.0, 2.0), 12, 9)))
    points = np.random.default_rng(3).uniform(0, 1, (100, 2))
    reference = UvIndex(mesh).locate_by_scan(points)
    hits = UvIndex(mesh, cells_per_side=cells).locate(points)
    np.testing.assert_allclose(hits.points_3d, reference.points_3d, atol=1e-12)


def test_an_image_that_does_not_match_the_texture_is_refused(tmp_path):
    mesh = read_obj(M.write_capture(tmp_path, M.grid(M.plane(), 4, 4)))
    with pytest.raises(CtdError, match="does not match") as err:
        pfl_3d(mesh, (640, 480), np.zeros((2, 2)), PAIR)
    assert str(mesh.texture_path) in str(err.value)


def test_a_mesh_without_uvs_has_nothing_to_map_onto(tmp_path):
    path = M.write_capture(tmp_path, M.grid(M.plane(), 3, 3), form="v")
    mesh = read_obj(path)
    with pytest.raises(CtdError, match="no textured faces") as err:
        UvIndex(mesh)
    assert str(path) in str(err.value)


def test_faces_without_uvs_are_left_out_of_the_lookup(tmp_path):
    obj = tmp_path / "mixed.obj"
    obj.write_text(
        "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0 0 5\n"
        "vt 0 0\nvt 1 0\nvt 1 1\nvt 0 1\n"
        "f 1/1 2/2 3/3\n"
        "f 1 3 5\n"          # no vt: a 3D triangle only
    )
    mesh = read_obj(obj)
    index = UvIndex(mesh)
    assert index.tri_ids.tolist() == [0]
    hits = index.locate(np.array([[0.75, 0.25], [0.25, 0.75]]))
    np.testing.assert_allclose(hits.points_3d[0], [0.75, 0.25, 0.0], atol=EXACT)
    assert hits.triangles.tolist() == [0, -1]
