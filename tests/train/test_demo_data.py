"""The procedural demo data set (ctd_train.synthetic): deterministic, readable by the runtime and
the training dataset, eye corners drawn where annotated, true PFL in 2D and 3D, cached atomically."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ctd_runtime.annotations import read_annotations
from ctd_runtime.obj_mesh import read_obj
from ctd_runtime.pfl import pfl_mm, resolve_spacing
from ctd_runtime.pfl3d import pfl_3d
from ctd_runtime.repeatability import pairs_of_values, retest
from ctd_runtime.schema import get_schema
from ctd_train.synthetic import face3d, folder, generate, true_pfl_3d
from ctd_train.synthetic.render import Look, render_face

IMM14 = get_schema("imm14")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("demo") / "d", n_subjects=4, images_per_subject=6, seed=7, n_captures=2)


def _meta(root: Path) -> list[dict]:
    return list(csv.DictReader((root / "metadata.csv").read_text().splitlines()))


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files_and_another_seed_other_images(tmp_path: Path) -> None:
    args = dict(n_subjects=2, images_per_subject=2, size=(320, 240), n_captures=1)
    a = _files(generate(tmp_path / "a", seed=3, **args))
    b = _files(generate(tmp_path / "b", seed=3, **args))
    c = _files(generate(tmp_path / "c", seed=4, **args))
    assert a == b
    assert "captures/000-1.obj" in a and "images/001-5.jpg.json" in a
    assert a["images/000-1.jpg"] != c["images/000-1.jpg"]
    assert a["annotations.csv"] != c["annotations.csv"]


def test_folder_reads_with_the_runtime_reader_and_both_imm_schemas(data: Path) -> None:
    images = read_annotations(data, validate_images=True)  # decodes every image, points inside it
    assert len(images) == 24 and images.num_points == 58
    assert images.image_sizes.tolist() == [[640, 480]] * 24
    assert sorted(set(images.subjects)) == ["000", "001", "002", "003"]
    for name in ("imm14", "imm58"):
        assert get_schema(name).select(images.points).shape[1] == get_schema(name).num_landmarks
    margin = folder.MARGIN_PX - 0.01
    assert images.points.min() >= margin
    assert (images.points[..., 0] <= 639 - margin).all() and (images.points[..., 1] <= 479 - margin).all()


def test_anatomy_sides_follow_imm(data: Path) -> None:
    """Subject's right eye (21-28) on the image left of the nose, lateral corners outside, upper
    lids above lower lids, brows above eyes, mouth below nose (IMM README's checks)."""
    pts = read_annotations(data, validate_images=False).points
    assert (pts[:, 21:29, 0].mean(1) < pts[:, 52, 0]).all() and (pts[:, 13:21, 0].mean(1) > pts[:, 52, 0]).all()
    assert (pts[:, 21, 0] < pts[:, 25, 0]).all() and (pts[:, 13, 0] > pts[:, 17, 0]).all()
    assert (pts[:, [22, 23, 24], 1] < pts[:, [28, 27, 26], 1]).all()
    assert (pts[:, 34:39, 1].max(1) < pts[:, 21:29, 1].min(1)).all()
    assert (pts[:, 45, 1] > pts[:, 52, 1]).all() and (pts[:, 6, 1] > pts[:, 45, 1]).all()


def test_training_dataset_serves_imm14_crops(data: Path) -> None:
    from ctd_runtime.codec import HeatmapCodec
    from ctd_runtime.normalization import Normalization
    from ctd_train.data.dataset import LandmarkCropDataset

    images = read_annotations(data, validate_images=False)
    norm = Normalization("RGB", (127.5, 127.5, 127.5), (1 / 127.5, 1 / 127.5, 1 / 127.5))
    ds = LandmarkCropDataset(images, None, IMM14, norm, HeatmapCodec(), None)
    item = ds[0]
    assert tuple(item["heatmaps"].shape[:1]) == (14,)
    assert float(item["target_weight"].min()) == 1.0  # every landmark inside its face crop
    assert np.allclose(item["landmarks_image"].numpy(), IMM14.select(images.points[0]), atol=1e-3)


def _tip_offset(mask: np.ndarray, corner: np.ndarray, other: np.ndarray) -> float:
    """Where the drawn opening's tip is along the fissure axis relative to `corner` (px, > 0 =
    inside the eye): the opening's width across the axis grows from its tip (linearly, bending
    with the lids), so a parabola fitted to the width 1.5-5 px from the annotated corner meets
    zero at the drawn tip. Below 1.5 px the pixel footprint and bilinear sampling (together
    +-1.5 px along the axis) would round the tip off; beyond it they leave the width unchanged."""
    axis = (other - corner) / np.linalg.norm(other - corner)
    normal = np.array([-axis[1], axis[0]])
    d, s = np.arange(1.5, 5.01, 0.25), np.arange(-8.0, 8.0, 0.05)
    xy = corner + d[:, None, None] * axis + s[None, :, None] * normal
    v = cv2.remap(mask, xy[..., 0].astype(np.float32), xy[..., 1].astype(np.float32), cv2.INTER_LINEAR)
    roots = np.roots(np.polyfit(d, v.sum(axis=1) * 0.05, 2))
    roots = roots[np.isreal(roots)].real
    return float(roots[np.argmin(np.abs(roots))])


def test_drawn_eye_corners_are_at_the_annotated_pixel() -> None:
    """All four corners in frontal and turned views: the drawn tip is within 0.25 px of the
    annotation (an outward-biased rasteriser such as OpenCV's LINE_AA fill put it 1-2 px off)."""
    rng = np.random.default_rng(11)
    offsets = []
    for k in range(4):
        ident = face3d.sample_identity(rng)
        shot = folder.plan_shots(ident, 6, (640, 480), rng)[k]
        drawn = render_face(ident, shot.pose, Look((0.0, 0.0), 1.0, False, 1, 0.0, 0.0), (640, 480), rng)
        for first, mask in drawn.eye_masks.items():
            lateral, medial = drawn.points[first], drawn.points[first + 4]
            offsets += [_tip_offset(mask, lateral, medial), _tip_offset(mask, medial, lateral)]
    assert np.abs(offsets).max() < 0.15, offsets


def test_written_images_show_sclera_inside_and_skin_outside_each_corner(data: Path) -> None:
    """On the noisy, lit, JPEG'd images: 4 px inside the corner along the fissure is whiter (a
    higher smallest channel: sclera) than 3 px outside it (skin), for every corner of every
    image, frontal and turned."""
    images = read_annotations(data, validate_images=False)
    checked = 0
    for i, name in enumerate(images.image_names):
        img = cv2.GaussianBlur(images.load_image(i), (3, 3), 0).astype(np.float64)
        p = images.points[i]
        for corner, other in ((21, 25), (25, 21), (13, 17), (17, 13)):
            axis = (p[other] - p[corner]) / np.linalg.norm(p[other] - p[corner])
            inside = img[tuple(np.round(p[corner] + 4 * axis).astype(int)[::-1])]
            outside = img[tuple(np.round(p[corner] - 3 * axis).astype(int)[::-1])]
            assert inside.min() > outside.min() + 25, (name, corner, inside, outside)
            checked += 1
    assert checked == 4 * len(images) == 96


def test_pfl_varies_between_identities_and_repeats_in_the_same_pose_pair(data: Path) -> None:
    images = read_annotations(data, validate_images=False)
    meta = {r["image"]: r for r in _meta(data)}
    types = [meta[n]["image_type"] for n in images.image_names]
    spacing = np.array([float(meta[n]["pixel_spacing_mm"]) for n in images.image_names])
    pts14 = IMM14.select(images.points)
    mm = pfl_mm(pts14, IMM14, spacing)
    frontal1 = np.array([t == "1" for t in types])
    assert mm[frontal1].max() - mm[frontal1].min() > 1.0  # identities differ by more than 1 mm
    pairs = pairs_of_values(images.subjects, types, "1", "5")
    assert len(pairs) == 4
    truth = retest(pts14, IMM14.pfl_pair, pairs)
    assert truth.mean_px < 2e-3  # same pose: only the 4-decimal CSV rounding differs
    for a, b in pairs:
        assert meta[images.image_names[a]]["lighting"] != meta[images.image_names[b]]["lighting"]
        assert not np.allclose(images.points[a], images.points[b])  # moved a little in the frame
    frontal_mm = {images.subjects[i]: mm[i] for i in np.flatnonzero(frontal1)}
    for i, t in enumerate(types):
        chord = float(meta[images.image_names[i]]["pfl_3d_mm"])
        assert mm[i] < chord  # a projection is never longer than the 3D chord
        if t == "3":  # turned ~25 degrees to the subject's right: the right fissure turns away, shorter
            assert mm[i] < frontal_mm[images.subjects[i]] - 2.0


def test_pixel_spacing_sidecars_resolve_and_give_the_true_pfl_in_mm(data: Path) -> None:
    images = read_annotations(data, validate_images=False)
    meta = {r["image"]: r for r in _meta(data)}
    for i, name in enumerate(images.image_names):
        spacing = resolve_spacing(images.image_paths[i])
        assert spacing == pytest.approx(1.0 / float(meta[name]["px_per_mm"]), rel=1e-6)
        measured = float(pfl_mm(IMM14.select(images.points[i]), IMM14, spacing))
        assert measured == pytest.approx(float(meta[name]["pfl_mm"]), abs=1e-3)


def test_obj_captures_give_the_true_3d_pfl(data: Path) -> None:
    """pfl_3d on the annotated texture pixels equals the surface chord between the true corners
    within 0.05 mm: weak perspective makes texture -> UV -> 3D affine per triangle, so the only
    error is the 1.5 mm mesh's flat triangles against the smooth surface (|d2z| < 0.1/mm near the
    eyes: <= 1.5^2 / 8 * 0.1 * 2 ~ 0.06 mm per corner, in practice ~0.01)."""
    captures = json.loads((data / "captures.json").read_text())
    assert [c["subject"] for c in captures] == ["000", "001"]
    images = read_annotations(data, validate_images=False)
    for cap in captures:
        mesh = read_obj(data / cap["obj"])
        assert mesh.texture_path == data / cap["texture"] and mesh.texture_size == (640, 480)
        assert (data / cap["texture"]).read_bytes() == (data / "images" / cap["image"]).read_bytes()
        lm = IMM14.select(images.points[images.image_names.index(cap["image"])])
        got = pfl_3d(mesh, None, lm, IMM14)
        assert got.outside_uv == ()
        assert got.pfl_3d_mm == pytest.approx(cap["pfl_3d_mm"], abs=0.05)
        endo, exo = got.landmarks_3d[list(IMM14.pfl_pair)]
        assert np.linalg.norm(endo - cap["endocanthion_mm"]) < 0.1
        assert np.linalg.norm(exo - cap["exocanthion_mm"]) < 0.1
    pfls = [c["pfl_3d_mm"] for c in captures]
    assert abs(pfls[0] - pfls[1]) > 0.01 and all(20.0 < p < 40.0 for p in pfls)


def test_station_finds_the_captures_folder_as_mesh_captures(data: Path) -> None:
    from ctd_runtime.captures import find_captures

    found = find_captures([data / "captures"])
    assert [(c.kind, c.path.name) for c in found] == [("mesh", "000-1.obj"), ("mesh", "001-1.obj")]


def test_true_3d_pfl_is_longer_than_its_frontal_projection() -> None:
    ident = face3d.sample_identity(np.random.default_rng(5))
    chord, corners = true_pfl_3d(ident)
    assert chord > np.linalg.norm(corners[0, :2] - corners[1, :2]) + 1.0  # the lateral corner lies deeper


SMALL = dict(seed=1, n_subjects=1, images_per_subject=2, n_captures=0, size=(320, 240))


def test_cache_generates_once_and_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = folder.demo_data(cache_dir=tmp_path, **SMALL)
    assert first.parent == tmp_path and first.name.startswith(f"{folder.VERSION}-1-")
    assert read_annotations(first).num_points == 58
    before = _files(first)

    def fail(*a: object, **k: object) -> None:
        raise AssertionError("regenerated a cached data set")

    monkeypatch.setattr(folder, "generate", fail)
    assert folder.demo_data(cache_dir=tmp_path, **SMALL) == first
    assert _files(first) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]


def test_failed_generation_leaves_no_folder_and_a_killed_ones_temp_is_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = folder.generate

    def half(out_dir: Path, *a: object, **k: object) -> None:
        (Path(out_dir) / "images").mkdir(parents=True)
        (Path(out_dir) / "images" / "000-1.jpg").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(folder, "generate", half)
    with pytest.raises(KeyboardInterrupt):
        folder.demo_data(cache_dir=tmp_path, **SMALL)
    assert list(tmp_path.iterdir()) == []
    # a SIGKILLed generation: its temporary (named with its dead pid) stays until the next call
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    name = f"{folder.VERSION}-1-1x2-c0-320x240"
    stale = tmp_path / f".{name}.{int(dead.stdout)}-deadbeef.tmp"
    (stale / "data" / "images").mkdir(parents=True)
    monkeypatch.setattr(folder, "generate", real)
    out = folder.demo_data(cache_dir=tmp_path, **SMALL)
    assert out == tmp_path / name and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


_SLOW_GENERATION = """
import sys, time
from ctd_train.synthetic import folder
draw = folder.render_face
def slow(*args):
    time.sleep(60)
    return draw(*args)
folder.render_face = slow
folder.demo_data(cache_dir=sys.argv[1], seed=1, n_subjects=1, images_per_subject=2, n_captures=0, size=(320, 240))
"""


def test_sigkilled_generation_leaves_no_data_folder_and_the_next_call_completes(tmp_path: Path) -> None:
    import time

    proc = subprocess.Popen([sys.executable, "-c", _SLOW_GENERATION, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".*.tmp/data/images")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(tmp_path.glob(".*.tmp/data/images")), "the generation never started"
    finally:
        proc.kill()
        proc.wait()
    name = f"{folder.VERSION}-1-1x2-c0-320x240"
    assert not (tmp_path / name).exists() and len(list(tmp_path.glob(".*.tmp"))) == 1
    out = folder.demo_data(cache_dir=tmp_path, **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert len(read_annotations(out)) == 2


def test_default_cache_dir_honours_ctd_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CTD_CACHE_DIR", str(tmp_path))
    assert folder.default_cache_dir() == tmp_path / "demo-data"
    monkeypatch.delenv("CTD_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert folder.default_cache_dir() == tmp_path / "x" / "ctd" / "demo-data"
    assert os.fspath(folder.default_cache_dir()).endswith("ctd/demo-data")


def test_bad_arguments_are_ctd_errors(tmp_path: Path) -> None:
    from ctd_runtime.errors import CtdError

    with pytest.raises(CtdError, match="1..6"):
        generate(tmp_path / "a", n_subjects=1, images_per_subject=7)
    generate(tmp_path / "c", n_subjects=1, images_per_subject=1, size=(320, 240), n_captures=0)
    with pytest.raises(CtdError, match="already holds a data set"):
        generate(tmp_path / "c", n_subjects=1, images_per_subject=1, size=(320, 240), n_captures=0)
