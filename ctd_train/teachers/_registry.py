"""Registry of teacher names -> loader functions (timm-style: a decorator per family)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ctd_runtime.errors import CtdError
from ctd_train.teachers._base import Teacher

TeacherLoader = Callable[[Path | None], Teacher]


@dataclass(frozen=True)
class TeacherEntry:
    name: str
    loader: TeacherLoader
    weights_source: str        # where the weights come from, for `ctd teacher list`
    has_classifier: bool
    licence: str


_REGISTRY: dict[str, TeacherEntry] = {}


def register_teacher(name: str, *, weights_source: str, has_classifier: bool, licence: str):
    """Decorator: register `loader(weights_path_or_None) -> Teacher` under `name`."""

    def deco(fn: TeacherLoader) -> TeacherLoader:
        _REGISTRY[name] = TeacherEntry(name, fn, weights_source, has_classifier, licence)
        return fn

    return deco


def _ensure_loaded() -> None:
    # importing the family modules runs their @register_teacher decorators
    from ctd_train.teachers import dlib_resnet, hse_mobilenet, vggface2_resnet  # noqa: F401


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


def teachers_with_classifier() -> list[str]:
    return [e.name for e in list_teachers() if e.has_classifier]
