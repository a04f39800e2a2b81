"""Memory of a contender: how much the process grew while it was opened and warmed up.

With psutil installed: the change of the resident set size (current RSS after minus before).
Without it: the change of the process's peak RSS (`resource.getrusage(...).ru_maxrss`), a
high-water mark, so a contender that stays below an earlier one's peak shows 0. The method used
is written beside every number.
"""

from __future__ import annotations

import resource
import sys


def memory_method() -> str:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return "peak RSS growth (resource.ru_maxrss high-water mark; psutil not installed)"
    return "RSS growth (psutil, current resident set)"


def resident_mib() -> float:
    """Current RSS (psutil) or peak RSS so far (resource), MiB."""
    try:
        import psutil
    except ImportError:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 1024.0 if sys.platform != "darwin" else rss / 2**20  # KiB on Linux, bytes on macOS
    return psutil.Process().memory_info().rss / 2**20
