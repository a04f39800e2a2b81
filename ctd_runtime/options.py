"""Checks of numeric command options (finite and in range), made where the options are parsed,
before any heavy import and before anything is read or written: `--margin nan` must not get as
far as writing black crops, `--tolerance inf` as far as passing any graph."""

from __future__ import annotations

import math

from ctd_runtime.errors import CtdError


def check_number(
    name: str,
    value: float | int | None,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> float | int | None:
    """`value` when it is None or a finite number within the bounds given; CtdError naming the
    option (e.g. `--margin`), the allowed range and the value otherwise."""
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (gt is None or value > gt) and (ge is None or value >= ge)
    ok = ok and (le is None or value <= le) and (lt is None or value < lt)
    if not ok:
        raise CtdError(f"{name} must be a finite number{_range(gt, ge, le, lt)}, not {value}")
    return value


def _range(gt: float | None, ge: float | None, le: float | None, lt: float | None) -> str:
    parts = [f"{op} {bound:g}" for op, bound in ((">", gt), (">=", ge), ("<=", le), ("<", lt)) if bound is not None]
    return (" " + " and ".join(parts)) if parts else ""
