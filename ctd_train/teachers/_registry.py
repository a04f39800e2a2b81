"""One `TeacherEntry` per teacher: everything ctd knows about it (how to load it, where its weights
are found, its architecture without weights, the golden outputs of its original implementation).

A teacher module declares its entry at the bottom (`TEACHER = register_teacher(TeacherEntry(...))`);
the registry imports every public module of this package once, so a new teacher is one new file.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ctd_runtime.errors import CtdError
from ctd_train.teachers._base import Teacher

if TYPE_CHECKING:  # pragma: no cover
    from ctd_train.teachers.golden import GoldenOutput

TeacherLoader = Callable[[Path | None], Teacher]   # weights (None: find them) -> loaded teacher
WeightFinder = Callable[[Path | None], Path]       # weights (None: look for them) -> the file; CtdError if absent


@dataclass(frozen=True)
class TeacherEntry:
    name: str
    description: str           # one line: the network and what it was trained for
    licence: str
    weights_source: str        # where the weights come from, for `ctd teacher list`
    has_classifier: bool
    loader: TeacherLoader
    find_weights: WeightFinder
    skeleton: Callable[[], Teacher]               # the architecture and input spec, random weights
    golden: tuple["GoldenOutput", ...] = ()       # how each golden.npz key is derived, with its tolerance

    def weights_found(self) -> tuple[bool, str]:
        """(found, where) for the weights on this machine now, without loading them."""
        try:
            path = self.find_weights(None)
        except CtdError:
            return False, "not found"
        if not Path(path).exists():
            return False, f"not found: {path}"
        return True, str(path)


_REGISTRY: dict[str, TeacherEntry] = {}


def register_teacher(entry: TeacherEntry) -> TeacherEntry:
    """Add `entry` to the registry (a teacher module calls this once, at import) and return it."""
    known = _REGISTRY.get(entry.name)
    if known is not None and known.loader.__module__ != entry.loader.__module__:
        raise ValueError(f"teacher {entry.name!r} is registered twice: {known.loader.__module__} and "
                         f"{entry.loader.__module__}")
    _REGISTRY[entry.name] = entry
    return entry


def _ensure_loaded() -> None:
    # importing each public module of the package runs its register_teacher call
    from ctd_train import teachers

    for info in pkgutil.iter_modules(teachers.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{teachers.__name__}.{info.name}")


def list_teachers() -> list[TeacherEntry]:
    _ensure_loaded()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def teacher_entry(name: str) -> TeacherEntry:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise CtdError(f"unknown teacher {name!r}: known teachers are {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_teacher(name: str, weights: str | Path | None = None) -> Teacher:
    """Load teacher `name` from `weights` (a path) or from where it is found automatically."""
    entry = teacher_entry(name)
    return entry.loader(None if weights is None else Path(weights))


def teacher_skeleton(name: str) -> Teacher:
    """The teacher `name` with its architecture and input spec but random weights (eval mode): a
    checkpoint rebuilds its student from it, so its weights file is never needed again."""
    teacher = teacher_entry(name).skeleton()
    teacher.network.eval()
    return teacher


def teachers_with_classifier() -> list[str]:
    return [e.name for e in list_teachers() if e.has_classifier]
