"""Subject-wise splits and limited-label subsets."""

from __future__ import annotations

import numpy as np
import pytest

from ctd_runtime.errors import CtdError
from ctd_train.data.splits import limit_images, limit_subjects, split_subjects

# 30 subjects x 6 images, rows in a scrambled order
SUBJECTS = [f"{s:02d}" for s in np.random.default_rng(5).permutation(np.repeat(np.arange(1, 31), 6))]


def _subjects_of(idx):
    return {SUBJECTS[i] for i in idx}


def test_split_is_subject_disjoint_and_complete():
    sp = split_subjects(SUBJECTS, (0.6, 0.2, 0.2), seed=0)
    assert list(sp) == ["train", "val", "test"]
    assert [len(_subjects_of(v)) for v in sp.values()] == [18, 6, 6]
    assert [len(v) for v in sp.values()] == [108, 36, 36]
    tr, va, te = (_subjects_of(v) for v in sp.values())
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert sorted(i for v in sp.values() for i in v) == list(range(180))
    assert all(v == sorted(v) for v in sp.values())


def test_split_is_deterministic_and_order_independent():
    a = split_subjects(SUBJECTS, seed=3)
    assert a == split_subjects(SUBJECTS, seed=3)
    assert a != split_subjects(SUBJECTS, seed=4)
    # the same subject sets whatever the row order
    perm = np.random.default_rng(0).permutation(len(SUBJECTS))
    shuffled = [SUBJECTS[i] for i in perm]
    b = split_subjects(shuffled, seed=3)
    for name in a:
        assert _subjects_of(a[name]) == {shuffled[i] for i in b[name]}


def test_split_counts_and_errors():
    sp = split_subjects(SUBJECTS, counts=(10, 5, 5), seed=1)
    assert [len(_subjects_of(v)) for v in sp.values()] == [10, 5, 5]
    assert split_subjects(SUBJECTS, (10, 5, 5), seed=1) == sp  # integers summing > 1 are counts
    with pytest.raises(CtdError, match="need 40 subjects but there are only 30"):
        split_subjects(SUBJECTS, counts=(30, 5, 5))
    with pytest.raises(CtdError, match="sum to 1"):
        split_subjects(SUBJECTS, (0.6, 0.2, 0.3))
    with pytest.raises(CtdError, match="too few"):
        split_subjects(["a", "a", "b"], (0.6, 0.2, 0.2))
    with pytest.raises(CtdError, match="2 split fractions for 3 splits"):
        split_subjects(SUBJECTS, (0.5, 0.5))
    two = split_subjects(SUBJECTS, (0.8, 0.2), names=("train", "val"))
    assert [len(_subjects_of(v)) for v in two.values()] == [24, 6]
    assert split_subjects(["a", "b", "c", "d", "e"], (0.6, 0.2, 0.2), seed=0)["test"]  # 3/1/1


def test_limit_subjects():
    train = split_subjects(SUBJECTS, seed=0)["train"]
    prev: set[int] = set()
    for n in (1, 3, 6, 18):
        keep = limit_subjects(train, SUBJECTS, n, seed=7)
        assert len(_subjects_of(keep)) == n and len(keep) == 6 * n
        assert set(keep) <= set(train) and prev <= set(keep)  # nested as n grows
        prev = set(keep)
    assert limit_subjects(train, SUBJECTS, 3, seed=7) == limit_subjects(train, SUBJECTS, 3, seed=7)
    with pytest.raises(CtdError, match="only 18"):
        limit_subjects(train, SUBJECTS, 19)
    with pytest.raises(CtdError, match="at least 1"):
        limit_subjects(train, SUBJECTS, 0)


def test_limit_images_whole_subjects_first():
    train = split_subjects(SUBJECTS, seed=0)["train"]
    prev: set[int] = set()
    for n in (1, 5, 6, 10, 12, 50, 108):
        keep = limit_images(train, SUBJECTS, n, seed=2)
        assert len(keep) == n and set(keep) <= set(train) and prev <= set(keep)
        counts = sorted(sum(SUBJECTS[i] == s for i in keep) for s in _subjects_of(keep))
        assert counts[:-1] == [6] * (len(counts) - 1) or counts == [n % 6 or 6] + [6] * (len(counts) - 1)
        assert sum(c < 6 for c in counts) <= 1  # at most one partly used subject
        assert len(counts) == -(-n // 6)
        prev = set(keep)
    assert limit_images(train, SUBJECTS, 10, seed=2) == limit_images(train, SUBJECTS, 10, seed=2)
    assert limit_images(train, SUBJECTS, 10, seed=2) != limit_images(train, SUBJECTS, 10, seed=3)
    with pytest.raises(CtdError, match="only 108"):
        limit_images(train, SUBJECTS, 109)
