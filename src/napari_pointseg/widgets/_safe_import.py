"""Importing torch inside a running napari without crashing it.

napari's OpenGL context (Mesa's llvmpipe in VMs, remote desktops, Xvfb) loads a shared
``libLLVM``. ``triton``, which torch / torchvision import when it is installed, carries its own
statically linked LLVM; loaded afterwards, its symbols bind to Mesa's LLVM and the process
segfaults during ``import triton``. Loading triton with ``RTLD_DEEPBIND`` makes it use its own
symbols. Call `import_torch()` before the first torch import of a widget (any thread).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading

_lock = threading.Lock()
_done = False


def import_torch():
    """Import (and return) torch, loading triton first with RTLD_DEEPBIND where that matters."""
    global _done
    with _lock:
        if not _done:
            _done = True
            deepbind = getattr(os, "RTLD_DEEPBIND", 0)
            if (
                "triton" not in sys.modules
                and deepbind
                and sys.platform.startswith("linux")
                and importlib.util.find_spec("triton") is not None
            ):
                old = sys.getdlopenflags()
                sys.setdlopenflags(old | deepbind)
                try:
                    import triton  # noqa: F401
                except Exception:  # noqa: BLE001 - triton is optional for CPU training
                    pass
                finally:
                    sys.setdlopenflags(old)
    import torch

    return torch
