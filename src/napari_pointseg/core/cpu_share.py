"""Sharing the CPU cores between several training processes on one machine.

Two trainings that each use every core slow each other far more than 2x (OpenMP threads spin
while waiting and fight for the same cores). Each process that trains registers itself in a
small folder of pid files; its torch thread count is ``cores // running trainings`` (at least
1), looked at again every few seconds while it trains, so a second training started later
makes the first one step down and a finished one gives its cores back.

The folder is ``$POINTSEG_RUN_DIR`` or ``<tempdir>/napari-pointseg-<uid>``. An explicit thread
count (``--threads``, ``POINTSEG_THREADS``) always wins.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

_REGISTERED: Path | None = None


def run_dir() -> Path:
    """The folder holding one ``<pid>.trainer`` file per training process."""
    env = os.environ.get("POINTSEG_RUN_DIR")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(env) if env else Path(tempfile.gettempdir()) / f"napari-pointseg-{uid}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def register() -> None:
    """Mark this process as a training process (idempotent; unregistered at exit)."""
    global _REGISTERED
    if _REGISTERED is not None:
        return
    try:
        d = run_dir()
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{os.getpid()}.trainer"
        path.write_text(str(time.time()))
    except OSError:
        return  # no writable temp folder: fall back to not sharing
    _REGISTERED = path
    import atexit

    atexit.register(unregister)


def unregister() -> None:
    """Remove this process's mark (at exit, or when it stops training for good)."""
    global _REGISTERED
    if _REGISTERED is not None:
        try:
            _REGISTERED.unlink()
        except OSError:
            pass
        _REGISTERED = None


def running_trainings() -> int:
    """How many live processes (this one included, if registered) are training now.

    Files of dead processes (killed without clean-up) are removed on the way.
    """
    n = 0
    try:
        files = list(run_dir().glob("*.trainer"))
    except OSError:
        return 1
    for f in files:
        try:
            pid = int(f.stem)
        except ValueError:
            continue
        if _alive(pid):
            n += 1
        else:
            try:
                f.unlink()
            except OSError:
                pass
    return max(n, 1)


def fair_threads(cores: int | None = None) -> int:
    """Threads this process should use: ``cores // running trainings``, at least 1."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, int(cores) // running_trainings())
