import json

import numpy as np
import pytest

from ctd_runtime.errors import CtdError
from ctd_runtime.schema import LandmarkSchema, builtin_schema_names, get_schema


def test_imm14_matches_the_data_readme():
    s = get_schema("imm14")
    assert s.num_landmarks == 14
    assert s.source_indices == (21, 22, 23, 24, 25, 26, 27, 28, 50, 52, 54, 39, 43, 45)
    endo, exo = s.pfl_pair
    assert s.source_indices[endo] == 25 and s.source_indices[exo] == 21
    assert not s.can_flip
    with pytest.raises(CtdError, match="flip"):
        s.flip_permutation()


def test_imm58_flip_pairs_are_an_involution_keeping_pfl_eye_semantics():
    s = get_schema("imm58")
    perm = s.flip_permutation()
    np.testing.assert_array_equal(perm[perm], np.arange(58))
    assert perm[13] == 21 and perm[17] == 25 and perm[39] == 43 and perm[6] == 6 and perm[52] == 52
    assert [i for i in range(58) if perm[i] == i] == [6, 41, 45, 52]  # chin, lip mids, subnasale


def test_select_and_index_beyond_annotation():
    s = get_schema("imm14")
    pts = np.arange(58 * 2, dtype=float).reshape(58, 2)
    np.testing.assert_array_equal(s.select(pts)[0], pts[21])
    with pytest.raises(CtdError, match="only 40 points") as e:
        s.select(pts[:40], where="a.csv")
    assert "a.csv" in str(e.value)


def test_json_round_trip_and_user_file(tmp_path):
    s = get_schema("imm58")
    assert LandmarkSchema.from_json(s.to_json()) == s
    path = tmp_path / "eye.json"
    path.write_text(json.dumps({"name": "eye", "landmark_names": ["exo", "endo"],
                                "source_indices": [3, 7], "pfl_pair": [1, 0]}))
    user = get_schema(path)
    assert user.name == "eye" and user.num_landmarks == 2 and not user.can_flip


def test_bad_schemas_name_the_problem(tmp_path):
    with pytest.raises(CtdError, match="unknown schema 'imm99'.*imm14"):
        get_schema("imm99")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CtdError, match="bad.json"):
        get_schema(bad)
    bad.write_text(json.dumps({"name": "x", "landmark_names": ["a"], "source_indices": [70],
                               "pfl_pair": [0, 0], "num_source_points": 58}))
    with pytest.raises(CtdError, match="beyond"):
        get_schema(bad)
    with pytest.raises(CtdError, match="PFL"):
        LandmarkSchema("x", ("a", "b"), (0, 1), (0, 5))
    with pytest.raises(CtdError, match="flip"):
        LandmarkSchema("x", ("a", "b", "c"), (0, 1, 2), (0, 1), flip_pairs=((0, 1), (1, 2)))
    assert builtin_schema_names() == ["imm-eye", "imm14", "imm58"]


def test_eye_schema_is_the_right_eye_of_imm14():
    """The refinement stage's schema names the same source points as imm14's eye, so its
    predictions replace imm14's eye landmarks one for one."""
    eye, face = get_schema("imm-eye"), get_schema("imm14")
    assert eye.num_landmarks == 8 and not eye.can_flip
    assert [eye.source_indices[i] for i in eye.pfl_pair] == [face.source_indices[i] for i in face.pfl_pair]
    assert set(eye.source_indices) <= set(face.source_indices)
