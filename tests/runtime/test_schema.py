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
    # one eye: no flip pairs, but a mirrored image's right eye is the left eye (13..20), and the
    # nose and mouth corners swap
    assert s.can_flip and not s.flip_pairs
    with pytest.raises(CtdError, match="flip"):
        s.flip_permutation()
    assert s.flip_sources == (13, 14, 15, 16, 17, 18, 19, 20, 54, 52, 50, 43, 39, 45)
    imm58 = get_schema("imm58")
    perm = imm58.flip_permutation()
    assert all(perm[src] == mirror for src, mirror in zip(s.source_indices, s.flip_sources))
    pts = np.arange(58 * 2, dtype=float).reshape(58, 2)
    np.testing.assert_array_equal(s.flipped_points(pts), pts[list(s.flip_sources)])
    assert LandmarkSchema.from_json(s.to_json()) == s


def test_flip_sources_are_checked():
    base = dict(name="x", landmark_names=("a", "b"), source_indices=(0, 1), pfl_pair=(0, 1), num_source_points=4)
    assert LandmarkSchema(**base, flip_sources=(2, 3)).can_flip
    assert not LandmarkSchema(**base).can_flip
    for bad, match in [((2,), "1 flip sources for 2"), ((2, 4), "outside"), ((2, 2), "used twice")]:
        with pytest.raises(CtdError, match=match):
            LandmarkSchema(**base, flip_sources=bad)
    with pytest.raises(CtdError, match="not both"):
        LandmarkSchema(**base, flip_pairs=((0, 1),), flip_sources=(2, 3))


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


@pytest.mark.parametrize("name, points, hint", [
    ("imm14", 57, False), ("imm14", 68, True), ("imm58", 59, False), ("imm-eye", 68, True), ("ibug68", 58, False),
])
def test_the_whole_source_annotation_is_checked(name, points, hint):
    """Every index a schema uses may exist and still be the wrong anatomy: the count must match."""
    s = get_schema(name)
    with pytest.raises(CtdError, match=f"has (only )?{points} points, but schema '{name}' is for annotations "
                                       f"of {s.num_source_points} points") as e:
        s.select(np.zeros((2, points, 2)), where="annotations.csv")
    assert str(e.value).startswith("annotations.csv: ")
    assert ("--schema ibug68" in str(e.value)) == hint


def test_a_user_schema_without_a_count_checks_indices_only():
    s = LandmarkSchema("eye", ("exo", "endo"), (3, 7), (1, 0))
    assert s.select(np.zeros((60, 2))).shape == (2, 2)
    with pytest.raises(CtdError, match="needs source point 7"):
        s.select(np.zeros((5, 2)))


def test_ibug68_anatomy():
    """0-based iBUG: the subject's right eye is 36 (exocanthion) .. 39 (endocanthion); the left
    eye mirrors it (42 endocanthion .. 45 exocanthion); flip is an involution that swaps the eyes."""
    s = get_schema("ibug68")
    assert s.num_landmarks == 68 and s.num_source_points == 68 and s.source_indices == tuple(range(68))
    endo, exo = s.pfl_pair
    assert (endo, exo) == (39, 36)
    assert s.landmark_names[exo] == "r_exocanthion" and s.landmark_names[endo] == "r_endocanthion"
    assert s.landmark_names[42] == "l_endocanthion" and s.landmark_names[45] == "l_exocanthion"
    perm = s.flip_permutation()
    np.testing.assert_array_equal(perm[perm], np.arange(68))
    assert perm[36] == 45 and perm[39] == 42 and perm[48] == 54 and perm[0] == 16 and perm[17] == 26
    assert [i for i in range(68) if perm[i] == i] == [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]  # the midline
    for i in range(68):  # a flip swaps r_ and l_ names and keeps the rest
        a, b = s.landmark_names[i], s.landmark_names[perm[i]]
        mirrored = {"r_": "l_", "l_": "r_"}.get(a[:2], a[:2]) + a[2:]
        assert b == mirrored or not a.startswith(("r_", "l_")), (a, b)
    assert LandmarkSchema.from_json(s.to_json()) == s


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
    assert builtin_schema_names() == ["ibug68", "imm-eye", "imm14", "imm58"]


def test_eye_schema_is_the_right_eye_of_imm14():
    """The refinement stage's schema names the same source points as imm14's eye, so its
    predictions replace imm14's eye landmarks one for one."""
    eye, face = get_schema("imm-eye"), get_schema("imm14")
    assert eye.num_landmarks == 8 and eye.can_flip and eye.flip_sources == face.flip_sources[:8]
    assert [eye.source_indices[i] for i in eye.pfl_pair] == [face.source_indices[i] for i in face.pfl_pair]
    assert set(eye.source_indices) <= set(face.source_indices)
