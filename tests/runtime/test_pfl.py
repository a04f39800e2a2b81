"""2D PFL in px and mm, the pixel-spacing sidecar, and the quality flags of a measurement."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from ctd_runtime.errors import CtdError
from ctd_runtime.geometry import crop_affine
from ctd_runtime.pfl import (
    DEFAULT_PFL_RANGE_MM,
    FlagCode,
    QualityOptions,
    flag_codes,
    measure_pfl,
    pfl_mm,
    pfl_px,
    quality_flags,
    read_spacing_sidecar,
    resolve_spacing,
    sidecar_path,
    validate_spacing,
)
from ctd_runtime.schema import LandmarkSchema, get_schema

IMM14 = get_schema("imm14")          # pfl_pair (4, 0): r_endocanthion, r_exocanthion


def _eye(endo=(130.0, 100.0), exo=(100.0, 140.0)) -> np.ndarray:
    """14 landmarks around (115, 120) with the PFL pair at the given points (PFL 50 px by default)."""
    pts = np.tile(np.array([[115.0, 120.0]]), (IMM14.num_landmarks, 1))
    pts += np.linspace(-10, 10, IMM14.num_landmarks)[:, None]
    pts[4], pts[0] = endo, exo
    return pts


def test_pfl_px_single_and_batched():
    one = _eye()
    assert float(pfl_px(one, IMM14)) == pytest.approx(50.0, abs=1e-12)
    batch = np.stack([one, _eye(exo=(130.0, 70.0))])
    np.testing.assert_allclose(pfl_px(batch, IMM14), [50.0, 30.0], atol=1e-12)
    with pytest.raises(ValueError, match="do not match schema"):
        pfl_px(one[:5], IMM14)


def test_pfl_mm_with_one_or_per_image_spacings():
    batch = np.stack([_eye(), _eye(exo=(130.0, 70.0))])
    np.testing.assert_allclose(pfl_mm(batch, IMM14, 0.5), [25.0, 15.0])
    np.testing.assert_allclose(pfl_mm(batch, IMM14, np.array([0.5, 0.2])), [25.0, 6.0])
    for bad in (0.0, -0.1, math.nan, math.inf):
        with pytest.raises(CtdError, match="finite number > 0"):
            pfl_mm(batch, IMM14, bad)


@pytest.mark.parametrize("bad", [0, 0.0, -0.25, math.nan, math.inf, "0.25", True, None, [0.25]])
def test_validate_spacing_refuses_non_positive_and_non_numbers(bad):
    with pytest.raises(CtdError) as err:
        validate_spacing(bad, where="cap.png.json")
    assert str(err.value).startswith("cap.png.json: ")


def test_sidecar_sits_next_to_the_image_under_its_full_name(tmp_path):
    assert sidecar_path(tmp_path / "cap.png") == tmp_path / "cap.png.json"
    (tmp_path / "cap.png.json").write_text(json.dumps({"pixel_spacing_mm": 0.25, "subject": "S01"}))
    assert read_spacing_sidecar(tmp_path / "cap.png.json") == 0.25
    assert resolve_spacing(tmp_path / "cap.png") == 0.25
    assert resolve_spacing(tmp_path / "cap.png", option_mm=0.25) == 0.25


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"pixel_spacing_mm": 0}', "finite number > 0"),
        ('{"pixel_spacing_mm": -0.3}', "finite number > 0"),
        ('{"pixel_spacing_mm": NaN}', "finite number > 0"),
        ('{"pixel_spacing_mm": "0.25"}', "must be a number"),
        ('{"pixel_spacing_mm": true}', "must be a number"),
        ('{"spacing": 0.25}', "no 'pixel_spacing_mm' key"),
        ("[0.25]", "must be a JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_sidecar_names_its_file(tmp_path, text, message):
    side = tmp_path / "cap.png.json"
    side.write_text(text)
    with pytest.raises(CtdError, match=message) as err:
        resolve_spacing(tmp_path / "cap.png")
    assert str(err.value).startswith(f"{side}: ")


def test_spacing_from_the_option_and_conflicts(tmp_path):
    assert resolve_spacing(tmp_path / "cap.png") is None
    assert resolve_spacing(tmp_path / "cap.png", option_mm=0.1) == 0.1
    with pytest.raises(CtdError, match="--spacing"):
        resolve_spacing(tmp_path / "cap.png", option_mm=0.0)
    (tmp_path / "cap.png.json").write_text('{"pixel_spacing_mm": 0.25}')
    with pytest.raises(CtdError, match="disagrees") as err:
        resolve_spacing(tmp_path / "cap.png", option_mm=0.1)
    assert str(tmp_path / "cap.png.json") in str(err.value)


# ---------------------------------------------------------------------------- flags


def _clean(**context):
    base = dict(
        scores=np.full(IMM14.num_landmarks, 0.9),
        box=(80.0, 60.0, 80.0, 100.0),
        first_pass=_eye() + 2.0,
        pfl_3d_mm=26.0,
    )
    base.update(context)
    return measure_pfl(_eye(), IMM14, spacing_mm=0.5, **base)   # 50 px -> 25 mm


def test_a_clean_measurement_has_no_flags():
    m = _clean()
    assert m.pfl_px == pytest.approx(50.0) and m.pfl_mm == pytest.approx(25.0)
    assert quality_flags(m, IMM14) == []


def test_low_score_flags_the_landmarks_concerned():
    scores = np.full(IMM14.num_landmarks, 0.9)
    scores[[2, 7]] = [0.1, np.nan]
    flags = quality_flags(_clean(scores=scores), IMM14)
    assert [f.code for f in flags] == [FlagCode.LOW_SCORE]
    assert flags[0].landmarks == (2, 7)
    assert quality_flags(_clean(scores=scores), IMM14, QualityOptions(min_score=0.05))[0].landmarks == (7,)


def test_landmark_outside_the_box_or_the_crop():
    flags = quality_flags(_clean(box=(105.0, 60.0, 80.0, 100.0)), IMM14)   # exocanthion at x=100
    assert [f.code for f in flags] == [FlagCode.OUTSIDE_BOX] and 0 in flags[0].landmarks
    inside_crop = crop_affine((115.0, 120.0), 120.0)
    assert quality_flags(_clean(crop_affine=inside_crop), IMM14) == []
    tight = crop_affine((125.0, 110.0), 30.0)
    flags = quality_flags(_clean(crop_affine=tight), IMM14)
    assert [f.code for f in flags] == [FlagCode.OUTSIDE_BOX] and 0 in flags[0].landmarks


def test_second_pass_far_from_the_first():
    assert quality_flags(_clean(first_pass=_eye() + 8.0), IMM14) == []          # 11.3 px < 12.5
    flags = quality_flags(_clean(first_pass=_eye() + 10.0), IMM14)              # 14.1 px > 12.5
    assert [f.code for f in flags] == [FlagCode.PASS_DISAGREEMENT]
    nan_pass = np.full((IMM14.num_landmarks, 2), np.nan)
    assert flag_codes(quality_flags(_clean(first_pass=nan_pass), IMM14)) == ["pass_disagreement"]


def test_pfl_outside_the_default_mm_range():
    lo, hi = DEFAULT_PFL_RANGE_MM
    assert lo <= 18 and hi >= 35
    short = measure_pfl(_eye(), IMM14, spacing_mm=0.2)                         # 10 mm
    flags = quality_flags(short, IMM14)
    assert [f.code for f in flags] == [FlagCode.PFL_IMPLAUSIBLE]
    assert "pfl_mm" in flags[0].message and flags[0].landmarks == IMM14.pfl_pair
    long_3d = quality_flags(_clean(pfl_3d_mm=55.0), IMM14)
    assert [f.code for f in long_3d] == [FlagCode.PFL_IMPLAUSIBLE] and "pfl_3d_mm" in long_3d[0].message
    assert flag_codes(quality_flags(_clean(pfl_3d_mm=math.nan), IMM14)) == ["pfl_implausible"]


def test_pfl_range_from_the_schema_then_the_option():
    @dataclass(frozen=True)
    class RangedSchema(LandmarkSchema):
        pfl_range_mm: tuple[float, float] | None = None

    ranged = RangedSchema(**{**IMM14.__dict__, "pfl_range_mm": (26.0, 30.0)})
    m = _clean()                                                                   # 25 mm and 26 mm
    assert quality_flags(m, IMM14) == []
    assert "pfl_mm" in quality_flags(m, ranged)[0].message
    assert quality_flags(m, ranged, QualityOptions(pfl_range_mm=(20.0, 30.0))) == []


def test_pfl_px_is_checked_only_with_a_range():
    m = measure_pfl(_eye(), IMM14)
    assert m.pfl_mm is None and quality_flags(m, IMM14) == []
    flags = quality_flags(m, IMM14, QualityOptions(pfl_range_px=(60.0, 200.0)))
    assert [f.code for f in flags] == [FlagCode.PFL_IMPLAUSIBLE] and "pfl_px" in flags[0].message


def test_flags_accumulate_and_serialise():
    scores = np.zeros(IMM14.num_landmarks)
    m = _clean(scores=scores, box=(0.0, 0.0, 10.0, 10.0), pfl_3d_mm=80.0, outside_uv=(3,))
    flags = quality_flags(m, IMM14)
    assert flag_codes(flags) == ["low_score", "outside_box", "pfl_implausible", "outside_uv"]
    assert json.loads(json.dumps([f.to_dict() for f in flags]))[3] == {
        "code": "outside_uv", "message": flags[3].message, "landmarks": [3]}
