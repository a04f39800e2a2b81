"""LandmarkCropDataset: crop/landmark/affine consistency, heatmaps, flip, reproducibility."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ctd_runtime import geometry
from ctd_runtime.codec import HeatmapCodec
from ctd_runtime.errors import CtdError
from ctd_runtime.normalization import Normalization
from ctd_runtime.schema import LandmarkSchema, get_schema
from ctd_train.data.annotations import read_annotations, write_annotations
from ctd_train.data.augment import AugmentConfig, AugmentParams, photometric
from ctd_train.data.dataset import LandmarkCropDataset
from tests.train._data_synth import face58, make_folder

NORM = Normalization("RGB", (127.5, 127.5, 127.5), (1 / 127.5, 1 / 127.5, 1 / 127.5))
STRONG = AugmentConfig(scale=0.2, rotation_deg=15.0, brightness=0.2, contrast=0.2)
PAIR = LandmarkSchema(
    name="pair",
    landmark_names=("left_dot", "right_dot"),
    source_indices=(0, 1),
    pfl_pair=(0, 1),
    flip_pairs=((0, 1),),
)
RED, GREEN = (0, 0, 255), (0, 255, 0)


@pytest.fixture(scope="module")
def imm_like(tmp_path_factory) -> Path:
    root, _ = make_folder(tmp_path_factory.mktemp("ds") / "data", n_images=4, n_subjects=2)
    return root


@pytest.fixture(scope="module")
def dots(tmp_path_factory) -> Path:
    """Two coloured dots (red = point 0 on the left, green = point 1 on the right) on grey."""
    root = tmp_path_factory.mktemp("dots")
    (root / "images").mkdir()
    names, pts = [], []
    for i, (a, b) in enumerate([((60.0, 70.0), (140.0, 90.0)), ((50.0, 100.0), (150.0, 60.0))]):
        img = np.full((160, 200, 3), 90, np.uint8)
        cv2.circle(img, (int(a[0]), int(a[1])), 6, RED, -1)
        cv2.circle(img, (int(b[0]), int(b[1])), 6, GREEN, -1)
        cv2.imwrite(str(root / "images" / f"{i}.png"), img)
        names.append(f"{i}.png")
        pts.append([a, b])
    write_annotations(root, names, ["s0", "s1"], np.array(pts))
    return root


def _colour_at(crop: np.ndarray, xy) -> np.ndarray:
    x, y = int(round(float(xy[0]))), int(round(float(xy[1])))
    return crop[y, x].astype(int)


@pytest.mark.parametrize("augment", [None, STRONG])
def test_item_shapes_and_affine_round_trip(imm_like, augment):
    data = read_annotations(imm_like)
    schema = get_schema("imm14")
    ds = LandmarkCropDataset(data, [0, 2, 3], schema, NORM, HeatmapCodec(), augment, seed=1)
    assert len(ds) == 3
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 256, 256) and item["image"].dtype == torch.float32
        assert item["heatmaps"].shape == (14, 64, 64) and item["heatmaps"].dtype == torch.float32
        assert item["target_weight"].shape == (14,)
        assert item["landmarks"].shape == (14, 2) and item["landmarks_image"].shape == (14, 2)
        assert item["affine"].shape == (2, 3) and item["affine"].dtype == torch.float32
        assert int(item["index"]) == ds.indices[i]
        back = geometry.apply_affine(item["affine"].numpy(), item["landmarks"].numpy())
        np.testing.assert_allclose(back, item["landmarks_image"].numpy(), atol=1e-3)
        np.testing.assert_allclose(item["landmarks_image"].numpy(),
                                   schema.select(data.points[ds.indices[i]]), atol=1e-4)
        # the crop box is around ALL 58 points: they all fit in the un-augmented crop
        if augment is None:
            all_crop = geometry.apply_affine(geometry.invert_affine(item["affine"].numpy()),
                                             data.points[ds.indices[i]])
            assert all_crop.min() > 0 and all_crop.max() < 255
            assert (item["target_weight"] == 1).all()
        # the normalised image is normalization.apply of the uint8 crop
        s = ds.sample(i)
        np.testing.assert_allclose(item["image"].numpy(), NORM.apply(s["crop"])[0])


def test_heatmap_peaks_at_landmarks(imm_like):
    data = read_annotations(imm_like)
    codec = HeatmapCodec()
    ds = LandmarkCropDataset(data, None, get_schema("imm58"), NORM, codec, None)
    item = ds[1]
    coords, scores = codec.decode(item["heatmaps"].numpy()[None], method="dark")
    np.testing.assert_allclose(coords[0], item["landmarks"].numpy(), atol=0.1)
    assert (scores > 0.9).all()
    argmax, _ = codec.decode(item["heatmaps"].numpy()[None], method="argmax")
    assert np.abs(argmax[0] - item["landmarks"].numpy()).max() <= codec.stride / 2 + 1e-6


def test_crop_shows_the_landmarks(dots):
    """Colours of the crop at the landmarks: the warp and the landmark mapping agree."""
    data = read_annotations(dots)
    aug = AugmentConfig(scale=0.2, rotation_deg=15.0, brightness=0.0, contrast=0.0)
    ds = LandmarkCropDataset(data, None, PAIR, NORM, HeatmapCodec(), aug, margin=1.0, seed=0)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s = ds.sample(i)
            assert not s["params"].flip
            assert (_colour_at(s["crop"], s["landmarks"][0]) == RED).all()
            assert (_colour_at(s["crop"], s["landmarks"][1]) == GREEN).all()


def test_flip_permutes_landmarks_and_mirrors_the_crop(dots):
    data = read_annotations(dots)
    aug = AugmentConfig(scale=0.0, rotation_deg=0.0, flip=True, flip_prob=1.0, brightness=0.0, contrast=0.0)
    plain = LandmarkCropDataset(data, None, PAIR, NORM, HeatmapCodec(), None, margin=1.0)
    flipped = LandmarkCropDataset(data, None, PAIR, NORM, HeatmapCodec(), aug, margin=1.0)
    for i in range(len(data)):
        p, f = plain.sample(i), flipped.sample(i)
        assert f["params"].flip
        # the crop is the mirror image of the plain crop
        np.testing.assert_array_equal(f["crop"], p["crop"][:, ::-1])
        # landmark 0 ("left") is now the mirror of source point 1, and still on the left
        np.testing.assert_allclose(f["landmarks_image"], data.points[i][[1, 0]])
        assert f["landmarks"][0, 0] < f["landmarks"][1, 0]
        np.testing.assert_allclose(f["landmarks"][0], [255 - p["landmarks"][1, 0], p["landmarks"][1, 1]], atol=1e-6)
        assert (_colour_at(f["crop"], f["landmarks"][0]) == GREEN).all()
        assert (_colour_at(f["crop"], f["landmarks"][1]) == RED).all()
        back = geometry.apply_affine(f["affine"], f["landmarks"])
        np.testing.assert_allclose(back, f["landmarks_image"], atol=1e-6)
        # heatmap channel 0 peaks where the (relabelled) landmark 0 is
        item = flipped[i]
        c, _ = HeatmapCodec().decode(item["heatmaps"].numpy(), method="dark")
        np.testing.assert_allclose(c, f["landmarks"], atol=0.1)


def test_flip_refused_for_a_schema_without_flip_labels(dots):
    data = read_annotations(dots)
    one_sided = LandmarkSchema(name="one", landmark_names=("a", "b"), source_indices=(0, 1), pfl_pair=(0, 1))
    with pytest.raises(CtdError, match="'one' has neither flip pairs nor flip sources"):
        LandmarkCropDataset(data, None, one_sided, NORM, HeatmapCodec(), AugmentConfig(flip=True))


@pytest.mark.parametrize("crop", ["face", "schema", "pfl"])
def test_one_eye_flip_labels_the_mirrored_other_eye(imm_like, crop):
    """imm14 flipped: its eye is the source's left eye, mirrored; the crop is found from those
    points, so they lie inside it as the right eye's do in an unflipped crop."""
    data = read_annotations(imm_like)
    schema = get_schema("imm14")
    aug = AugmentConfig(scale=0.0, rotation_deg=0.0, flip=True, flip_prob=1.0, brightness=0.0, contrast=0.0)
    flipped = LandmarkCropDataset(data, None, schema, NORM, HeatmapCodec(), aug, crop=crop)
    for i in range(len(data)):
        f = flipped.sample(i)
        assert f["params"].flip
        np.testing.assert_allclose(f["landmarks_image"], data.points[i][list(schema.flip_sources)])
        back = geometry.apply_affine(f["affine"], f["landmarks"])
        np.testing.assert_allclose(back, f["landmarks_image"], atol=1e-6)
        endo, exo = schema.pfl_pair
        # mirrored, the left eye's exocanthion (image right) lies left of its endocanthion, as a right eye's
        assert f["landmarks"][exo, 0] < f["landmarks"][endo, 0]
        assert (f["target_weight"][:8] > 0).all()  # the eye (a fissure crop holds no mouth)


def test_schema_needing_more_points(dots):
    data = read_annotations(dots)
    with pytest.raises(CtdError, match=f"has only {data.num_points} points, but schema 'imm14' is for "
                                       "annotations of 58") as ei:
        LandmarkCropDataset(data, None, get_schema("imm14"), NORM)
    assert ei.value.path == dots / "annotations.csv"
    with pytest.raises(CtdError, match="outside"):
        LandmarkCropDataset(data, [5], PAIR, NORM)


def test_reproducible_per_seed_and_epoch(imm_like):
    data = read_annotations(imm_like)
    schema = get_schema("imm58")
    aug = AugmentConfig(flip=True)

    def items(ds):
        return [ds[i] for i in range(len(ds))]

    a = LandmarkCropDataset(data, None, schema, NORM, HeatmapCodec(), aug, seed=11)
    b = LandmarkCropDataset(data, None, schema, NORM, HeatmapCodec(), aug, seed=11)
    first = items(a)
    for x, y in zip(first, items(b)):
        for k in x:
            assert torch.equal(x[k], y[k]), k
    # the same again, in another order and from a subset (the draw depends on the image index)
    c = LandmarkCropDataset(data, [3, 1], schema, NORM, HeatmapCodec(), aug, seed=11)
    assert torch.equal(c[0]["affine"], first[3]["affine"]) and torch.equal(c[1]["image"], first[1]["image"])
    a.set_epoch(1)
    second = items(a)
    assert all(not torch.equal(x["affine"], y["affine"]) for x, y in zip(first, second))
    a.set_epoch(0)
    assert torch.equal(a[2]["image"], first[2]["image"])
    other_seed = LandmarkCropDataset(data, None, schema, NORM, HeatmapCodec(), aug, seed=12)
    assert not torch.equal(other_seed[0]["affine"], first[0]["affine"])
    # DataLoader workers give the same batches as the main process
    loader = torch.utils.data.DataLoader(b, batch_size=2, num_workers=2, shuffle=False)
    batches = list(loader)
    np.testing.assert_array_equal(batches[1]["image"][0].numpy(), first[2]["image"].numpy())
    np.testing.assert_array_equal(batches[0]["affine"].numpy(), np.stack([first[0]["affine"], first[1]["affine"]]))


def test_augment_config_and_photometric():
    cfg = AugmentConfig(scale=0.1, rotation_deg=5, flip=True, brightness=0.1, contrast=0.3)
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict() == {"scale": 0.1, "rotation_deg": 5, "flip": True, "flip_prob": 0.5,
                             "brightness": 0.1, "contrast": 0.3, "shift": 0.0, "scale_max": 0.0}
    with pytest.raises(CtdError, match="augmentation config: unknown key .scael."):
        AugmentConfig.from_dict({"scael": 0.1})
    with pytest.raises(CtdError, match="scale"):
        AugmentConfig(scale=1.5)
    img = np.array([[[100, 150, 200]]], np.uint8)
    same = photometric(img, AugmentParams())
    assert same is img
    out = photometric(img, AugmentParams(brightness=10.0, contrast=2.0))
    np.testing.assert_array_equal(out, [[[60, 160, 255]]])  # (x - 150) * 2 + 150 + 10, clipped
    # drawn ranges
    ds_params = []
    rng = np.random.default_rng(0)
    from ctd_train.data.augment import sample_params

    for _ in range(500):
        ds_params.append(sample_params(AugmentConfig(), rng))
    scales = [p.scale for p in ds_params]
    rots = [p.rotation_deg for p in ds_params]
    assert 0.8 <= min(scales) < 0.82 and 1.18 < max(scales) <= 1.2
    assert -15 <= min(rots) < -14 and 14 < max(rots) <= 15
    assert not any(p.flip for p in ds_params)


def test_random_faces_stay_consistent_under_strong_augmentation(tmp_path):
    """Many draws: the affine round trip holds and weights mark the landmarks inside the crop."""
    rng = np.random.default_rng(4)
    pts = np.stack([face58(200, 160, rng) for _ in range(2)])
    root, _ = make_folder(tmp_path / "d", n_images=2, points=pts)
    data = read_annotations(root)
    ds = LandmarkCropDataset(data, None, get_schema("imm58"), NORM, HeatmapCodec(),
                             AugmentConfig(scale=0.5, rotation_deg=45, flip=True), margin=0.0)
    for epoch in range(10):
        ds.set_epoch(epoch)
        for i in range(2):
            s = ds.sample(i)
            lm, w = s["landmarks"], s["target_weight"]
            well_inside = ((lm >= 0) & (lm <= 255)).all(axis=1)
            far_outside = ((lm < -1) | (lm > 256.5)).any(axis=1)
            assert (w[well_inside] == 1).all() and (w[far_outside] == 0).all()
            np.testing.assert_allclose(geometry.apply_affine(s["affine"], s["landmarks"]), s["landmarks_image"],
                                       atol=1e-6)


def test_pfl_crop_shows_the_fissure_level_and_at_a_fixed_size(dots):
    """The refinement crop puts the PFL pair on the crop's midline, PFL = size / crop_scale apart
    (the dots' colours prove the pixels follow), whatever the pair's angle in the image."""
    data = read_annotations(dots)
    ds = LandmarkCropDataset(data, None, PAIR, NORM, HeatmapCodec(input_size=64), None, crop="pfl", crop_scale=2.0)
    for i in range(len(ds)):
        s = ds.sample(i)
        a, b = s["landmarks"]
        assert a[1] == pytest.approx(31.5, abs=1e-6) and b[1] == pytest.approx(31.5, abs=1e-6)
        assert abs(b[0] - a[0]) == pytest.approx(32.0, rel=1e-6)
        assert (_colour_at(s["crop"], a) == RED).all() and (_colour_at(s["crop"], b) == GREEN).all()


def test_box_points_replace_the_annotation_and_shift_moves_the_crop(dots):
    data = read_annotations(dots)
    given = {0: np.array([[70.0, 70.0], [150.0, 70.0]]), 1: np.array([[50.0, 100.0], [150.0, 60.0]])}
    ds = LandmarkCropDataset(data, None, PAIR, NORM, HeatmapCodec(input_size=64), None, crop="pfl",
                             crop_scale=2.0, box_points=given)
    s = ds.sample(0)
    # the crop is built on the given points: the true dots are 10 px (= 4 crop px) off the midline
    center = geometry.apply_affine(s["affine"], np.array([[31.5, 31.5]]))[0]
    assert center == pytest.approx([110.0, 70.0], abs=1e-6)
    shifted = LandmarkCropDataset(data, None, PAIR, NORM, HeatmapCodec(input_size=64),
                                  AugmentConfig(scale=0, rotation_deg=0, brightness=0, contrast=0, shift=0.2),
                                  crop="pfl", crop_scale=2.0)
    offsets = [geometry.apply_affine(shifted.sample(0)["affine"], np.array([[31.5, 31.5]]))[0] - [100.0, 80.0]
               for _ in range(1)]
    side = 2.0 * np.hypot(80.0, 20.0)
    assert np.all(np.abs(offsets[0]) <= 0.2 * side + 1e-9) and np.any(np.abs(offsets[0]) > 1e-3)
    with pytest.raises(CtdError, match="crop rule"):
        LandmarkCropDataset(data, None, PAIR, NORM, crop="eye")


def test_schema_crop_is_built_from_the_schema_points_only(imm_like):
    """The station's second pass can only use the model's own landmarks: the schema rule's box
    depends on the schema's points, not on the other annotated points."""
    data = read_annotations(imm_like)
    schema = get_schema("imm14")
    ds = LandmarkCropDataset(data, [0], schema, NORM, HeatmapCodec(input_size=64), None, margin=0.5, crop="schema")
    s = ds.sample(0)
    center, side = geometry.square_box(schema.select(data.points[0]), 0.5)
    np.testing.assert_allclose(geometry.apply_affine(s["affine"], np.array([[31.5, 31.5]]))[0], center, atol=1e-9)
    assert geometry.affine_scale(s["affine"]) == pytest.approx(side / 64)


def test_scale_max_zooms_out_log_uniformly():
    from ctd_train.data.augment import sample_params

    cfg = AugmentConfig(scale=0.2, scale_max=3.0)
    draws = np.array([sample_params(cfg, np.random.default_rng(i)).scale for i in range(4000)])
    assert draws.min() >= 0.8 and draws.max() <= 3.0 and draws.max() > 2.8
    # log-uniform: the median is the geometric mean of the ends
    assert np.median(draws) == pytest.approx(np.sqrt(0.8 * 3.0), rel=0.05)
    with pytest.raises(CtdError, match="scale_max"):
        AugmentConfig(scale=0.2, scale_max=0.5)
