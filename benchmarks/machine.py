"""What machine a benchmark ran on, for its JSON: the same code runs ~2x slower on a CPU
without AMX (an AMD EPYC with native bf16) than on an Intel Xeon with AMX, and follows other
oracle paths (docs/training.md, eighth, eighteenth and twenty-seventh sessions)."""

from __future__ import annotations

import os
import platform
import sys


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` line's value in /proc/cpuinfo (None where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info(**extra) -> dict:
    """{"cpus", "cpu", "amx", "avx512_bf16", "platform", "python", **extra} for a result file."""
    flags = set((_cpuinfo("flags") or "").split())
    return {
        "cpus": os.cpu_count(),
        "cpu": _cpuinfo("model name") or platform.processor(),
        "amx": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        **extra,
    }
