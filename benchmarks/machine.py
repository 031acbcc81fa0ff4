"""What machine a benchmark ran on, for its JSON: the same code runs ~2x slower on a CPU
without AMX (an AMD EPYC with native bf16) than on an Intel Xeon with AMX, and follows other
oracle paths (docs/training.md, eighth, eighteenth and twenty-seventh sessions)."""

from __future__ import annotations

import os
import platform
import sys


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it ('' where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is missing)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_info(**extra) -> dict:
    """{"cpus", "cpu", "amx", "avx512_bf16", "platform", "python", **extra} for a result file."""
    flags = cpu_flags()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu_model(),
        "amx": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        **extra,
    }
