"""The training crop rule in the metadata (ctd.crop, optional) and its rebuild from landmarks."""

from __future__ import annotations

import numpy as np
import pytest

import ctd_runtime
from ctd_runtime import geometry
from ctd_runtime.crop_rule import (
    DEFAULT_CROP, CropSpec, FaceFromSchema, check_box, crop_from_box, crop_from_landmarks, whole_image_crop,
)
from ctd_runtime.errors import CtdError
from ctd_runtime.model_meta import KEYS, ModelMetadata
from ctd_runtime.normalization import Normalization
from ctd_runtime.schema import LandmarkSchema, get_schema


def _meta(crop: CropSpec | None) -> ModelMetadata:
    return ModelMetadata(
        ctd_version=ctd_runtime.__version__, schema=get_schema("imm14"), input_size=256,
        normalization=Normalization("RGB", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)), decode="dark", precision="fp32",
        graph="fused", stride=4, sigma=1.5, run_id="r", outputs=("landmarks", "scores"), crop=crop,
    )


def test_ctd_crop_round_trips_and_is_optional():
    spec = CropSpec("schema", 0.3, 2.0)
    back = ModelMetadata.from_map(_meta(spec).to_map())
    assert back.crop == spec and back.crop_spec == spec
    old = _meta(None).to_map()
    assert set(old) == set(KEYS)  # files written before ctd.crop
    parsed = ModelMetadata.from_map(old)
    assert parsed.crop is None and parsed.crop_spec == DEFAULT_CROP == CropSpec("face", 0.25, 2.5)


@pytest.mark.parametrize("text", ['{"rule": "eyes"}', '[1]', '{"margin": 1}', "not json", '{"rule": "face", "margin": -1}'])
def test_bad_ctd_crop_names_the_file(text):
    bad = _meta(None).to_map() | {"ctd.crop": text}
    with pytest.raises(CtdError) as e:
        ModelMetadata.from_map(bad, where="m.onnx")
    assert "m.onnx" in str(e.value) and "ctd.crop" in str(e.value)


def test_crop_spec_from_a_run_config():
    assert CropSpec.from_config({}) == DEFAULT_CROP  # runs from before the crop option
    assert CropSpec.from_config({"crop": "pfl", "margin": 0.1, "crop_scale": 3.0}) == CropSpec("pfl", 0.1, 3.0)


def test_schema_rule_rebuilds_the_training_square_exactly():
    pts = np.array([[10.0, 20.0], [50.0, 30.0], [30.0, 90.0]])
    schema = LandmarkSchema("t", ("a", "b", "c"), (0, 1, 2), (0, 1))
    crop = crop_from_landmarks(CropSpec("schema", 0.25), pts, schema)
    center, side = geometry.square_box(pts, 0.25)
    assert crop.center == pytest.approx(tuple(center)) and crop.side == pytest.approx(side) and crop.rotation_deg == 0


def test_pfl_rule_is_the_fissure_crop_left_to_right():
    schema = LandmarkSchema("t", ("en", "ex", "c"), (0, 1, 2), (0, 1))
    pts = np.array([[60.0, 40.0], [20.0, 40.0], [0.0, 0.0]])  # endocanthion right of exocanthion
    crop = crop_from_landmarks(CropSpec("pfl", crop_scale=2.5), pts, schema)
    assert crop.center == pytest.approx((40.0, 40.0)) and crop.side == pytest.approx(100.0)
    assert crop.rotation_deg == pytest.approx(0.0)  # a -> b runs along +x whichever corner is which


def test_face_rule_uses_the_fit_then_the_margin():
    schema = get_schema("imm14")
    rng = np.random.default_rng(0)
    pts = rng.uniform(100, 200, (14, 2))
    fit = FaceFromSchema(offset=(0.1, -0.2), scale=2.0)
    crop = crop_from_landmarks(CropSpec("face", 0.25), pts, schema, face_fit=fit)
    c0, s0 = geometry.square_box(pts, 0.0)
    assert crop.center == pytest.approx((c0[0] + 0.1 * s0, c0[1] - 0.2 * s0))
    assert crop.side == pytest.approx(s0 * 2.0 * 1.25)


def test_face_fit_recovers_a_known_relation():
    rng = np.random.default_rng(1)
    schema_pts = rng.uniform(0, 100, (20, 5, 2))
    # all points: the schema's plus two that make the bounding square known
    c, s = zip(*[geometry.square_box(p, 0.0) for p in schema_pts])
    extra = np.stack([np.stack([np.array(ci) + np.array([0.1, 0.3]) * si - 0.9 * si,
                                np.array(ci) + np.array([0.1, 0.3]) * si + 0.9 * si]) for ci, si in zip(c, s)])
    fit = FaceFromSchema.fit(schema_pts, np.concatenate([schema_pts, extra], axis=1))
    assert fit.offset == pytest.approx((0.1, 0.3)) and fit.scale == pytest.approx(1.8)


def test_given_box_and_whole_image():
    crop = crop_from_box(CropSpec("face", 0.25), (10, 20, 100, 60))
    assert crop.center == (60.0, 50.0) and crop.side == pytest.approx(125.0)
    whole = whole_image_crop(640, 480)
    assert whole.center == (319.5, 239.5) and whole.side == 640
    a = whole.affine(256)
    assert geometry.apply_affine(a, np.array([[127.5, 127.5]]))[0] == pytest.approx([319.5, 239.5])


@pytest.mark.parametrize("box", [(1, 2, 0, 4), (1, 2, 3), ("a", 1, 1, 1), (0, 0, float("nan"), 1), (0, 0, -1, 2)])
def test_bad_box_is_refused(box):
    with pytest.raises(CtdError):
        check_box(box)
