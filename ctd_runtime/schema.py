"""Landmark schemas: which points a model predicts, which pair measures PFL, which pairs flip.

A schema maps a source annotation's point indices (e.g. IMM's 58 points) to the K landmarks a
model predicts. It serialises to JSON because it travels inside checkpoints and ONNX metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctd_runtime.errors import CtdError


@dataclass(frozen=True)
class LandmarkSchema:
    """K named landmarks picked from a source annotation.

    `pfl_pair` is (endocanthion, exocanthion) as indices into this schema's K landmarks.
    `flip_pairs` lists (i, j) landmark indices that a horizontal flip swaps. A one-eye schema has
    none, but its source annotation may hold the other eye: `flip_sources` then names, for each of
    the K landmarks, the source point that becomes it in the mirrored image (the left eye's points
    mirrored are a right eye), so flip augmentation doubles its eye examples. A schema with
    neither refuses flip augmentation.
    """

    name: str
    landmark_names: tuple[str, ...]
    source_indices: tuple[int, ...]
    pfl_pair: tuple[int, int]
    flip_pairs: tuple[tuple[int, int], ...] = ()
    num_source_points: int | None = None
    description: str = ""
    flip_sources: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        k = len(self.landmark_names)
        if k == 0:
            raise CtdError(f"schema {self.name!r} has no landmarks")
        if len(self.source_indices) != k:
            raise CtdError(
                f"schema {self.name!r}: {k} landmark names but {len(self.source_indices)} source indices"
            )
        if len(set(self.landmark_names)) != k:
            raise CtdError(f"schema {self.name!r}: landmark names are not unique")
        if any(i < 0 for i in self.source_indices):
            raise CtdError(f"schema {self.name!r}: negative source index")
        if self.num_source_points is not None:
            bad = [i for i in self.source_indices if i >= self.num_source_points]
            if bad:
                raise CtdError(
                    f"schema {self.name!r}: source index {bad[0]} is beyond the annotation's "
                    f"{self.num_source_points} points"
                )
        for i in self.pfl_pair:
            if not 0 <= i < k:
                raise CtdError(f"schema {self.name!r}: PFL index {i} outside 0..{k - 1}")
        if self.pfl_pair[0] == self.pfl_pair[1]:
            raise CtdError(f"schema {self.name!r}: PFL pair uses the same landmark twice")
        seen: set[int] = set()
        for a, b in self.flip_pairs:
            if not (0 <= a < k and 0 <= b < k) or a == b:
                raise CtdError(f"schema {self.name!r}: bad flip pair ({a}, {b})")
            if a in seen or b in seen:
                raise CtdError(f"schema {self.name!r}: landmark in more than one flip pair")
            seen.update((a, b))
        self._check_flip_sources()

    def _check_flip_sources(self) -> None:
        if not self.flip_sources:
            return
        if self.flip_pairs:
            raise CtdError(f"schema {self.name!r}: give flip_pairs or flip_sources, not both")
        if len(self.flip_sources) != self.num_landmarks:
            raise CtdError(f"schema {self.name!r}: {len(self.flip_sources)} flip sources for "
                           f"{self.num_landmarks} landmarks")
        limit = self.num_source_points
        if any(i < 0 or (limit is not None and i >= limit) for i in self.flip_sources):
            raise CtdError(f"schema {self.name!r}: flip source outside the annotation's points")
        if len(set(self.flip_sources)) != self.num_landmarks:
            raise CtdError(f"schema {self.name!r}: a source point is used twice in flip_sources")

    LANDMARK_FIELDS = ("landmark_names", "source_indices", "pfl_pair", "num_source_points")

    def landmark_differences(self, other: "LandmarkSchema") -> list[str]:
        """The fields in which `other` names other landmarks than this schema (names, source
        points, PFL pair); its description and flip rules may differ (another ctd version's)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [k for k in self.LANDMARK_FIELDS if mine.get(k) != theirs.get(k)]

    @property
    def num_landmarks(self) -> int:
        return len(self.landmark_names)

    @property
    def can_flip(self) -> bool:
        """True when a horizontal flip has well-defined labels (flip pairs or flip sources)."""
        return len(self.flip_pairs) > 0 or len(self.flip_sources) > 0

    def flipped_points(self, source_points: np.ndarray) -> np.ndarray:
        """This schema's K points of the mirrored image, in the unmirrored image's pixels [K, 2]:
        the same points swapped by `flip_pairs`, or the `flip_sources` points."""
        if self.flip_sources:
            pts = np.asarray(source_points)
            self.check_source(pts.shape[-2])
            return pts[..., list(self.flip_sources), :]
        return self.select(source_points)[..., self.flip_permutation(), :]

    def flip_permutation(self) -> np.ndarray:
        """Index array p with flipped[i] = original[p[i]] after a horizontal flip."""
        if not self.flip_pairs:
            raise CtdError(
                f"schema {self.name!r} has no left/right flip pairs (one-eye schema): "
                "horizontal flip would mislabel landmarks; disable flip augmentation"
            )
        perm = np.arange(self.num_landmarks)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def check_source(self, num_points: int, where: str | Path | None = None) -> None:
        """CtdError when an annotation of `num_points` points is not this schema's source: the
        count must equal `num_source_points` when the schema declares it (a 68-point iBUG folder
        read as IMM's 58 would train other anatomy under the same names), and every source index
        must exist."""
        if self.num_source_points is not None and num_points != self.num_source_points:
            hint = " (an iBUG/300-W folder: --schema ibug68)" if num_points == 68 else ""
            raise CtdError(
                f"the annotation has {'only ' if num_points < self.num_source_points else ''}{num_points} "
                f"points, but schema {self.name!r} is for annotations of {self.num_source_points} points "
                f"(num_source_points){hint}",
                path=where,
            )
        bad = [i for i in self.source_indices if i >= num_points]
        if bad:
            raise CtdError(
                f"schema {self.name!r} needs source point {bad[0]} but the annotation has only {num_points} points",
                path=where,
            )

    def select(self, source_points: np.ndarray, where: str | Path | None = None) -> np.ndarray:
        """Pick this schema's K points from source points [..., P, 2] (checked: `check_source`)."""
        pts = np.asarray(source_points)
        self.check_source(pts.shape[-2], where)
        return pts[..., list(self.source_indices), :]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "landmark_names": list(self.landmark_names),
            "source_indices": list(self.source_indices),
            "pfl_pair": list(self.pfl_pair),
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "num_source_points": self.num_source_points,
            "description": self.description,
            "flip_sources": list(self.flip_sources),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str | Path | None = None) -> "LandmarkSchema":
        try:
            return cls(
                name=str(d["name"]),
                landmark_names=tuple(str(n) for n in d["landmark_names"]),
                source_indices=tuple(int(i) for i in d["source_indices"]),
                pfl_pair=(int(d["pfl_pair"][0]), int(d["pfl_pair"][1])),
                flip_pairs=tuple((int(a), int(b)) for a, b in d.get("flip_pairs", [])),
                num_source_points=(
                    None if d.get("num_source_points") is None else int(d["num_source_points"])
                ),
                description=str(d.get("description", "")),
                flip_sources=tuple(int(i) for i in d.get("flip_sources", [])),
            )
        except CtdError as e:
            raise CtdError(str(e), path=where) from None
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise CtdError(f"not a valid landmark schema ({type(e).__name__}: {e})", path=where) from None

    @classmethod
    def from_json(cls, text: str, where: str | Path | None = None) -> "LandmarkSchema":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise CtdError(f"schema is not valid JSON: {e}", path=where) from None
        return cls.from_dict(d, where=where)

    @classmethod
    def load(cls, path: str | Path) -> "LandmarkSchema":
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise CtdError(f"cannot read schema file: {e.strerror}", path=path) from None
        return cls.from_json(text, where=path)


def _imm58() -> LandmarkSchema:
    names = (
        [f"jaw_{i}" for i in range(13)]
        + ["l_exocanthion", "l_upper_lid_1", "l_upper_lid_2", "l_upper_lid_3", "l_endocanthion",
           "l_lower_lid_1", "l_lower_lid_2", "l_lower_lid_3"]
        + ["r_exocanthion", "r_upper_lid_1", "r_upper_lid_2", "r_upper_lid_3", "r_endocanthion",
           "r_lower_lid_1", "r_lower_lid_2", "r_lower_lid_3"]
        + [f"l_brow_{i}" for i in range(5)]
        + [f"r_brow_{i}" for i in range(5)]
        + ["r_cheilion", "upper_lip_r", "upper_lip_mid", "upper_lip_l", "l_cheilion",
           "lower_lip_l", "lower_lip_mid", "lower_lip_r"]
        + ["r_nasal_bridge", "r_nose_side_1", "r_nose_side_2", "r_ala", "r_nostril_base",
           "subnasale", "l_nostril_base", "l_ala", "l_nose_side_2", "l_nose_side_1", "l_nasal_bridge"]
    )
    flips = (
        [(i, 12 - i) for i in range(6)]           # jaw outline
        + [(13 + i, 21 + i) for i in range(8)]    # eyes (both contours start at the lateral corner)
        + [(29 + i, 34 + i) for i in range(5)]    # brows (both start medial)
        + [(39, 43), (40, 42), (44, 46)]          # mouth corners and lips
        + [(47 + i, 57 - i) for i in range(5)]    # nose sides
    )
    return LandmarkSchema(
        name="imm58",
        landmark_names=tuple(names),
        source_indices=tuple(range(58)),
        pfl_pair=(25, 21),
        flip_pairs=tuple(flips),
        num_source_points=58,
        description="All 58 IMM Face Database points; PFL on the subject's right eye (25-21).",
    )


# the subject's right eye in IMM's 58 points: the PFL eye of imm14 and the refinement stage's imm-eye;
# IMM's left-eye contour (13-20) starts at its lateral corner too, so 13 + i mirrors 21 + i
IMM_RIGHT_EYE = [
    (21, "r_exocanthion"), (22, "r_upper_lid_1"), (23, "r_upper_lid_2"), (24, "r_upper_lid_3"),
    (25, "r_endocanthion"), (26, "r_lower_lid_1"), (27, "r_lower_lid_2"), (28, "r_lower_lid_3"),
]


_IMM_MIRROR = {**{21 + i: 13 + i for i in range(8)}, 50: 54, 52: 52, 54: 50, 39: 43, 43: 39, 45: 45}


def _imm14() -> LandmarkSchema:
    picks = IMM_RIGHT_EYE + [
        (50, "r_ala"), (52, "subnasale"), (54, "l_ala"),
        (39, "r_cheilion"), (43, "l_cheilion"), (45, "lower_lip_mid"),
    ]
    return LandmarkSchema(
        name="imm14",
        landmark_names=tuple(n for _, n in picks),
        source_indices=tuple(i for i, _ in picks),
        pfl_pair=(4, 0),
        flip_pairs=(),
        num_source_points=58,
        description="One eye + nose + mouth from IMM (like the one-eye clinical schema); flip augmentation "
                    "takes the mirrored left eye as the eye (flip_sources).",
        flip_sources=tuple(_IMM_MIRROR[i] for i, _ in picks),
    )


def _imm_eye() -> LandmarkSchema:
    picks = IMM_RIGHT_EYE
    return LandmarkSchema(
        name="imm-eye",
        landmark_names=tuple(n for _, n in picks),
        source_indices=tuple(i for i, _ in picks),
        pfl_pair=(4, 0),
        flip_pairs=(),
        num_source_points=58,
        description="The subject's right eye from IMM (8 points): the refinement stage's schema, trained on "
                    "crops aligned on the fissure (ctd train --crop pfl); flip takes the mirrored left eye.",
        flip_sources=tuple(_IMM_MIRROR[i] for i, _ in picks),
    )


def _ibug68() -> LandmarkSchema:
    """iBUG / 300-W's 68 points (0-based, as `ctd data import-pts` writes them); image left is
    the subject's right."""
    names = (
        [f"jaw_{i}" for i in range(17)]                                   # 0-16, subject's right first
        + [f"r_brow_{i}" for i in (4, 3, 2, 1, 0)] + [f"l_brow_{i}" for i in range(5)]  # 17-26, counted medial-out
        + [f"nose_bridge_{i}" for i in range(4)]                          # 27-30
        + ["r_nose_base", "r_nostril", "subnasale", "l_nostril", "l_nose_base"]  # 31-35
        + ["r_exocanthion", "r_upper_lid_1", "r_upper_lid_2", "r_endocanthion",
           "r_lower_lid_2", "r_lower_lid_1"]                              # 36-41, lids counted from the lateral side
        + ["l_endocanthion", "l_upper_lid_2", "l_upper_lid_1", "l_exocanthion",
           "l_lower_lid_1", "l_lower_lid_2"]                              # 42-47
        + ["r_cheilion"] + [f"upper_lip_{i}" for i in range(1, 6)] + ["l_cheilion"]
        + [f"lower_lip_{i}" for i in range(1, 6)]                         # 48-59 (outer contour)
        + ["r_inner_lip_corner"] + [f"upper_inner_lip_{i}" for i in range(1, 4)]
        + ["l_inner_lip_corner"] + [f"lower_inner_lip_{i}" for i in range(1, 4)]  # 60-67
    )
    flips = (
        [(i, 16 - i) for i in range(8)]                                   # jaw
        + [(17 + i, 26 - i) for i in range(5)]                            # brows
        + [(31, 35), (32, 34)]                                            # nose base
        + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]    # eyes
        + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]              # outer lips
        + [(60, 64), (61, 63), (65, 67)]                                  # inner lips
    )
    return LandmarkSchema(
        name="ibug68",
        landmark_names=tuple(names),
        source_indices=tuple(range(68)),
        pfl_pair=(39, 36),
        flip_pairs=tuple(flips),
        num_source_points=68,
        description="The 68 iBUG/300-W points (ctd data import-pts); PFL on the subject's right eye (39-36).",
    )


_BUILTIN = {"imm14": _imm14, "imm58": _imm58, "imm-eye": _imm_eye, "ibug68": _ibug68}


def builtin_schema_names() -> list[str]:
    return sorted(_BUILTIN)


def builtin_schemas_for(num_points: int) -> list[str]:
    """Names of the built-in schemas whose source annotation has `num_points` points (imm14, the
    default, first)."""
    return [n for n, make in _BUILTIN.items() if make().num_source_points == num_points]


def get_schema(name_or_path: str | Path) -> LandmarkSchema:
    """A built-in schema by name, or a user schema from a JSON file."""
    key = str(name_or_path)
    if key in _BUILTIN:
        return _BUILTIN[key]()
    path = Path(key)
    if path.suffix == ".json" or path.exists():
        return LandmarkSchema.load(path)
    raise CtdError(
        f"unknown schema {key!r}: built-in schemas are {', '.join(builtin_schema_names())}, "
        "or give the path of a schema JSON file"
    )
