"""Writing output files so that a reader never sees half of one.

Every output of the package (label TIFFs, JSON, points CSVs, bundles) is written to a temp
file next to its target and renamed over it: a crash, a kill or a cancelled worker leaves the
old file or none, plus at most a ``*.tmp`` file that `remove_temp_files` clears on the next
run. The temp name carries the process id and a random part, so workers of one run writing
the same name never share a temp file.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TEMP_SUFFIX = ".tmp"


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to ``path`` to write to; on a normal exit it replaces ``path``.

    path: the final file (its folder is created). Yields a Path in the same folder (a rename
    across file systems would not be atomic) ending in ``.tmp``. If the body raises, the temp
    file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_temp_files(*folders: str | Path) -> None:
    """Delete the temp files of killed writers below ``folders`` (never complete outputs:
    those were renamed)."""
    for folder in map(Path, folders):
        if folder.is_dir():
            for p in folder.rglob(f"*{TEMP_SUFFIX}"):
                p.unlink(missing_ok=True)


def write_tif_atomic(path: str | Path, array, **tifffile_options) -> Path:
    """Write ``array`` (any shape / dtype tifffile takes) as a TIFF, atomically.

    tifffile_options: passed to ``tifffile.imwrite`` (default ``compression="zlib"``; e.g.
    ``photometric="rgb"``). Returns ``path`` as a Path.
    """
    import tifffile

    path = Path(path)
    with atomic_write(path) as tmp:
        tifffile.imwrite(tmp, array, **{"compression": "zlib", **tifffile_options})
    return path
