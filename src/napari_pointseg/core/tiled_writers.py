"""Writers of a label image that arrives tile by tile: a tiled BigTIFF or an OME-Zarr.

Both write each tile as it comes (memory: one tile) under a temp name and put the finished
file in place at the end, so an interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np

from .lazy_images import Box


def label_dtype_for(classes) -> np.dtype:
    """The smallest integer dtype holding every class value (the output dtype, known before
    the first tile: `session.label_dtype` of the class values)."""
    from .session import label_dtype

    return label_dtype(np.asarray(classes, dtype=np.int64))


def write_tiled_tiff(path, shape: tuple[int, int], dtype, tile: int, tiles) -> Path:
    """Write ``tiles`` (an iterable of ``(box, labels)`` in row-major `tile_boxes` order) as a
    zlib-compressed tiled BigTIFF of ``shape`` (H, W) and ``dtype``, one tile at a time, to a
    temp file renamed over ``path`` at the end. Edge tiles are padded to ``tile`` x ``tile``."""
    import tifffile

    from .files import atomic_write

    dtype = np.dtype(dtype)

    def blocks():
        for (y0, y1, x0, x1), labels in tiles:
            block = np.zeros((tile, tile), dtype)
            block[: y1 - y0, : x1 - x0] = labels
            yield block

    path = Path(path)
    with atomic_write(path) as tmp:
        tifffile.imwrite(
            tmp,
            blocks(),
            shape=tuple(shape),
            dtype=dtype,
            tile=(tile, tile),
            bigtiff=True,
            compression="zlib",
        )
    return path


class OmeZarrLabels:
    """An OME-Zarr (NGFF 0.4, one resolution level, axes y, x) label image written tile by tile.

    Written under a temp folder next to ``path`` and moved there by `close` (an existing
    ``path`` is replaced only then). Chunks are ``tile`` x ``tile``, so tiles written from
    several places never share a chunk. ``attrs``: extra metadata (e.g. the normalisation).
    """

    def __init__(self, path, shape: tuple[int, int], dtype, tile: int, attrs: dict | None = None):
        import zarr

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        root = zarr.open_group(str(self.tmp), mode="w", zarr_format=2)
        root.attrs["multiscales"] = [
            {
                "version": "0.4",
                "name": self.path.name,
                "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
                "datasets": [
                    {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]}
                ],
            }
        ]
        root.attrs["napari_pointseg"] = attrs or {}
        self.array = root.create_array(
            "0", shape=tuple(shape), chunks=(tile, tile), dtype=np.dtype(dtype), fill_value=0
        )

    def write(self, box: Box, labels: np.ndarray) -> None:
        """Store ``labels`` (h, w) at ``box``."""
        y0, y1, x0, x1 = box
        self.array[y0:y1, x0:x1] = labels.astype(self.array.dtype, copy=False)

    def close(self) -> Path:
        """Move the finished store to ``path``; returns it."""
        if self.path.exists():
            shutil.rmtree(self.path) if self.path.is_dir() else self.path.unlink()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Remove the temp store (a failed or cancelled run)."""
        shutil.rmtree(self.tmp, ignore_errors=True)
