"""Dataclass configs from JSON dicts, with the unknown-key check every saved config needs: a typo
in a config file is an error naming the key, never a silently ignored option."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Mapping, TypeVar

from ctd_runtime.errors import CtdError

T = TypeVar("T")


def checked_kwargs(cls: type, d: Mapping[str, Any], what: str, where: str | Path | None = None) -> dict[str, Any]:
    """`d` as keyword arguments of the dataclass `cls`; CtdError listing unknown keys (and the known
    ones) when `d` has any, or when `d` is not a mapping."""
    if not isinstance(d, Mapping):
        raise CtdError(f"{what}: expected a JSON object, not {type(d).__name__}", path=where)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        label = "unknown key" if len(unknown) == 1 else "unknown keys"
        raise CtdError(f"{what}: {label} {', '.join(map(repr, unknown))}; known keys are "
                       f"{', '.join(sorted(known))}", path=where)
    return dict(d)
