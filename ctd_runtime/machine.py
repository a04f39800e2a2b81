"""What machine a number was measured on: every benchmark and result table names it."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs that compute in bfloat16


def cpu_flags() -> set[str]:
    """The CPU's feature flags (the `flags` line of /proc/cpuinfo on x86 Linux; empty elsewhere, so
    on ARM and other platforms bfloat16 stays off unless asked for: it was not measured there)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_support(flags: set[str] | None = None) -> str | None:
    """The flag by which this CPU computes in bfloat16 natively, or None. Without one (an AVX2-only
    CPU), torch emulates bfloat16 and autocast makes training slower, not faster
    (benchmarks/train_settings.py)."""
    flags = cpu_flags() if flags is None else flags
    return next((f for f in BF16_CPU_FLAGS if f in flags), None)


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def describe_machine(**extra: Any) -> dict[str, Any]:
    """CPU, cores, Python, platform and onnxruntime version, plus whatever the caller adds."""
    import onnxruntime

    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "cpu_bf16": cpu_bf16_support() or "none",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "onnxruntime": onnxruntime.__version__,
        **extra,
    }
