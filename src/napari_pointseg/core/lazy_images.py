"""Lazy 2D image sources for tiled prediction: read a box at a time, never the whole image.

`open_lazy` opens a TIFF (tifffile's ``aszarr`` store, or `RawArray` for an uncompressed
single strip) or an OME-Zarr folder without reading its pixels; `LazyImage` reads ``(y, x)``
boxes of any array with numpy slicing (zarr, dask, memmap, numpy) as channels-first blocks;
`subsample_normalisation` fits the percentiles on a strided subsample; `plane_pixels` is how
`pointseg predict` decides between the whole-plane and the tiled path.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import InputError
from .images import Normalisation, fit_normalisation, guess_channel_axis

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), half-open
# images with more pixels than this go through the tiled path by default (`pointseg predict`)
TILED_ABOVE_PIXELS = 4096 * 4096


def is_zarr_path(path: str | Path) -> bool:
    """True for a folder that is a zarr / OME-Zarr store (``.zarr`` name or zarr metadata)."""
    p = Path(path)
    if not p.is_dir():
        return False
    return p.suffix.lower() == ".zarr" or any(
        (p / name).exists() for name in ("zarr.json", ".zarray", ".zgroup")
    )


def _first_level(node):
    """The full-resolution array of a zarr node: itself, or an OME-Zarr multiscale's level 0."""
    import zarr

    if isinstance(node, zarr.Array):
        return node
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if multiscales:
        return node[multiscales[0]["datasets"][0]["path"]]
    names = sorted(k for k, _ in node.arrays())
    if not names:
        raise InputError("the zarr store holds no array")
    return node["0"] if "0" in names else node[names[0]]


def open_lazy(path: str | Path):
    """An array-like of the image at ``path`` that reads pixels only when sliced.

    TIFF: a read-only zarr array over tifffile's ``aszarr`` store (series 0, full-resolution
    level; tiled or striped TIFFs are read chunk by chunk). A zarr / OME-Zarr folder: its
    (level 0) array. Anything else (PNG, JPEG...): read whole with `images.read_image` (those
    formats cannot be read in parts). InputError when it cannot be opened.
    """
    p = Path(path)
    try:
        if is_zarr_path(p):
            import zarr

            return _first_level(zarr.open(str(p), mode="r"))
        if p.suffix.lower() in (".tif", ".tiff"):
            import tifffile
            import zarr

            store = tifffile.imread(p, aszarr=True, series=0, level=0)
            arr = _first_level(zarr.open(store, mode="r"))
            if np.prod(arr.chunks) * arr.dtype.itemsize > _MAX_CHUNK_BYTES:
                with tifffile.TiffFile(p) as tif:
                    series = tif.series[0]
                    if series.dataoffset is not None and tuple(series.shape) == tuple(arr.shape):
                        # one huge uncompressed strip: read its rows from the file instead
                        file_dtype = np.dtype(series.dtype).newbyteorder(tif.byteorder)
                        return RawArray(p, series.dataoffset, series.shape, file_dtype)
            return arr
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise InputError(
            f"cannot read image {p}: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
        ) from None
    from .images import read_image

    return read_image(p)


_MAX_CHUNK_BYTES = 64 * 2**20


class RawArray:
    """A C-ordered uncompressed array stored contiguously in a file at ``offset`` (a TIFF
    written as one strip), sliced by reading only the rows of the box (no memory map: the pages
    read do not stay in this process's RSS). Basic slicing with steps of 1."""

    def __init__(self, path, offset: int, shape, dtype):
        self.path, self.offset = str(path), int(offset)
        self.file_dtype = np.dtype(dtype)  # with the file's byte order
        self.shape, self.dtype = tuple(int(n) for n in shape), self.file_dtype.newbyteorder("=")
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        ranges = []
        for k, n in zip(key, self.shape):
            if not isinstance(k, slice) or k.step not in (None, 1):
                raise IndexError("RawArray takes slices with step 1")
            ranges.append(range(*k.indices(n)))
        if self.ndim < 2:
            raise IndexError("RawArray needs at least 2 axes")
        lead, (r_a, r_b) = ranges[:-2], ranges[-2:]
        n_b = self.shape[-1]
        out = np.empty([len(r) for r in ranges], self.dtype)
        strides = np.cumprod((1,) + self.shape[::-1])[::-1][1:]  # elements per step of each axis
        if out.size == 0:
            return out
        with open(self.path, "rb") as f:
            for idx in np.ndindex(*[len(r) for r in lead]):
                start = sum(lead[i][j] * int(strides[i]) for i, j in enumerate(idx)) + r_a.start * n_b
                f.seek(self.offset + start * self.file_dtype.itemsize)
                rows = np.fromfile(f, self.file_dtype, len(r_a) * n_b).reshape(len(r_a), n_b)
                out[idx] = rows[:, r_b.start : r_b.start + len(r_b)]
        return out


class LazyImage:
    """A 2D image, with or without a channel axis, read by ``(y, x)`` boxes.

    array: anything with ``shape``, ``dtype`` and numpy basic slicing (zarr, dask, memmap,
    numpy). channel_axis: 'auto' (`images.guess_channel_axis`), None or an int. ``shape`` is
    ``(H, W)``; ``read(box)`` returns ``(C, h, w)`` in the source dtype.
    """

    def __init__(self, array, channel_axis="auto", rgb: bool | None = None):
        shape = tuple(int(n) for n in array.shape)
        if len(shape) < 2:
            raise InputError(f"image must be at least 2D, got shape {shape}")
        ax = guess_channel_axis(shape, rgb) if channel_axis == "auto" else channel_axis
        if ax is not None:
            ax = int(ax)
            if not -len(shape) <= ax < len(shape):
                raise InputError(f"channel axis {ax} does not exist for shape {shape}")
            ax %= len(shape)
        spatial = [n for i, n in enumerate(shape) if i != ax]
        if len(spatial) != 2:
            raise InputError(
                f"tiled prediction takes 2D images (with or without channels); shape {shape} has "
                f"{len(spatial)} spatial axes"
            )
        if np.dtype(array.dtype).kind not in "biuf":
            raise InputError(f"unsupported image dtype {array.dtype}")
        self.array = array
        self.axis = ax
        self.shape = (spatial[0], spatial[1])
        self.n_channels = 1 if ax is None else shape[ax]
        self.dtype = np.dtype(array.dtype)

    def read(self, box: Box) -> np.ndarray:
        """Pixels of ``box`` (y0, y1, x0, x1) as ``(C, y1 - y0, x1 - x0)``, source dtype."""
        y0, y1, x0, x1 = box
        index: list = [slice(y0, y1), slice(x0, x1)]
        if self.axis is not None:
            index.insert(self.axis, slice(None))
        block = np.asarray(self.array[tuple(index)])
        block = block[None] if self.axis is None else np.moveaxis(block, self.axis, 0)
        if block.dtype.kind == "f" and not np.all(np.isfinite(block)):
            raise InputError("image contains NaN or infinite values")
        return block


def subsample_normalisation(image: LazyImage, max_pixels: int = 2_000_000) -> Normalisation:
    """Percentile normalisation (1st / 99.8th per channel) from a strided subsample.

    Every ``step``-th row and column, ``step`` chosen so that at most ``max_pixels`` pixels are
    used, read in bands of rows so that memory stays bounded. An image of at most
    ``max_pixels`` pixels uses every pixel: the same result as `images.fit_normalisation`.
    """
    h, w = image.shape
    step = max(1, math.ceil(math.sqrt(h * w / max_pixels)))
    rows = max(step, (8_000_000 // max(w, 1)) // step * step)
    parts = [image.read((y0, min(h, y0 + rows), 0, w))[:, ::step, ::step] for y0 in range(0, h, rows)]
    return fit_normalisation(np.concatenate(parts, axis=1))


# -- tiles ----------------------------------------------------------------------------------------


def plane_pixels(shape, channel_axis="auto", rgb: bool | None = None) -> tuple[int, int]:
    """``(spatial axes, pixels per plane)`` of an image of ``shape``: how `pointseg predict`
    decides between the whole-plane and the tiled path (2D planes over `TILED_ABOVE_PIXELS`)."""
    shape = tuple(int(n) for n in shape)
    ax = guess_channel_axis(shape, rgb) if channel_axis == "auto" else channel_axis
    spatial = [n for i, n in enumerate(shape) if ax is None or i != int(ax) % len(shape)]
    return len(spatial), (spatial[-2] * spatial[-1] if len(spatial) >= 2 else 0)
