"""Subject-wise splits and limited-label subsets, deterministic for a seed.

The images of one person are not independent, so every split is made over subjects: a subject's
images all go to the same split. Subjects are sorted before shuffling, so the result depends only
on the set of subjects and the seed, not on the order of the rows.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ctd_runtime.errors import CtdError

SPLIT_NAMES = ("train", "val", "test")


def _subject_images(subjects: Sequence[str], indices: Sequence[int] | None = None) -> dict[str, list[int]]:
    idx = range(len(subjects)) if indices is None else indices
    groups: dict[str, list[int]] = {}
    for i in idx:
        groups.setdefault(str(subjects[int(i)]), []).append(int(i))
    return groups


def _allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Largest-remainder allocation of n items to the given fractions (sum 1)."""
    raw = [f * n for f in fractions]
    counts = [int(np.floor(r)) for r in raw]
    rest = n - sum(counts)
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    return counts


def split_subjects(
    subjects: Sequence[str],
    fractions: Sequence[float] | None = (0.6, 0.2, 0.2),
    seed: int = 0,
    counts: Sequence[int] | None = None,
    names: Sequence[str] = SPLIT_NAMES,
) -> dict[str, list[int]]:
    """Split image indices by subject: {name: sorted image indices}.

    Give either `fractions` of the subjects (summing to 1; every split with a positive fraction
    gets at least one subject) or `counts` of subjects per split (summing to at most the number
    of subjects; the rest are left out). A plain sequence of integers passed as `fractions` is
    taken as counts.
    """
    groups = _subject_images(subjects)
    uniq = sorted(groups)
    n = len(uniq)
    if n == 0:
        raise CtdError("no subjects to split")
    if counts is None and fractions is not None and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in fractions
    ) and sum(fractions) > 1:
        counts, fractions = fractions, None  # type: ignore[assignment]
    if counts is not None:
        c = [int(v) for v in counts]
        if len(c) != len(names):
            raise CtdError(f"{len(c)} split counts for {len(names)} splits ({', '.join(names)})")
        if any(v < 0 for v in c):
            raise CtdError(f"negative split count in {c}")
        if sum(c) > n:
            raise CtdError(f"split counts {c} need {sum(c)} subjects but there are only {n}")
    else:
        if fractions is None:
            raise CtdError("give split fractions or counts")
        f = [float(v) for v in fractions]
        if len(f) != len(names):
            raise CtdError(f"{len(f)} split fractions for {len(names)} splits ({', '.join(names)})")
        if any(v < 0 for v in f) or abs(sum(f) - 1.0) > 1e-6:
            raise CtdError(f"split fractions {f} must be non-negative and sum to 1")
        c = _allocate(n, f)
        empty = [names[i] for i in range(len(f)) if f[i] > 0 and c[i] == 0]
        if empty:
            raise CtdError(f"{n} subjects are too few for split fractions {f}: {', '.join(empty)} would be empty")
    _check_seed(seed)
    order = np.random.default_rng(seed).permutation(n)
    out: dict[str, list[int]] = {}
    start = 0
    for name, k in zip(names, c):
        chosen = [uniq[j] for j in order[start : start + k]]
        out[name] = sorted(i for s in chosen for i in groups[s])
        start += k
    return out


def _check_seed(seed: int) -> None:
    if int(seed) < 0:
        raise CtdError(f"seed must be >= 0, not {seed}")


def _subject_order(groups: dict[str, list[int]], seed: int) -> list[str]:
    _check_seed(seed)
    uniq = sorted(groups)
    return [uniq[j] for j in np.random.default_rng(seed).permutation(len(uniq))]


def limit_subjects(indices: Sequence[int], subjects: Sequence[str], n_subjects: int, seed: int = 0) -> list[int]:
    """Keep all images of `n_subjects` subjects (chosen by the seed) among `indices`.

    For one seed, a smaller `n_subjects` gives a subset of a larger one.
    """
    groups = _subject_images(subjects, indices)
    if n_subjects < 1:
        raise CtdError(f"the number of training subjects must be at least 1, not {n_subjects}")
    if n_subjects > len(groups):
        raise CtdError(f"asked for {n_subjects} training subjects but there are only {len(groups)}")
    keep = _subject_order(groups, seed)[:n_subjects]
    return sorted(i for s in keep for i in groups[s])


def limit_images(indices: Sequence[int], subjects: Sequence[str], n_images: int, seed: int = 0) -> list[int]:
    """Keep exactly `n_images` of `indices`: whole subjects first (in the seed's order), then the
    remainder from the next subject (its images in the seed's order).

    For one seed, a smaller `n_images` gives a subset of a larger one.
    """
    groups = _subject_images(subjects, indices)
    total = sum(len(v) for v in groups.values())
    if n_images < 1:
        raise CtdError(f"the number of training images must be at least 1, not {n_images}")
    if n_images > total:
        raise CtdError(f"asked for {n_images} training images but there are only {total}")
    keep: list[int] = []
    for k, s in enumerate(_subject_order(groups, seed)):
        imgs = sorted(groups[s])
        need = n_images - len(keep)
        if need <= 0:
            break
        if len(imgs) <= need:
            keep.extend(imgs)
        else:
            perm = np.random.default_rng([seed, k]).permutation(len(imgs))
            keep.extend(imgs[j] for j in perm[:need])
    return sorted(keep)
