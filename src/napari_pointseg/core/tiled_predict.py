"""Memory-bounded prediction of images larger than memory, tile by tile.

The whole-plane path (`bundle.predict_with_bundle`) builds the network input (normalised
channels + filter bank, float32: ~28 channels x 4 bytes per pixel for RGB) for the whole
plane. Here a 2D image is read lazily (a zarr array from a TIFF's ``aszarr`` store or an
OME-Zarr, a dask array, an ``np.memmap`` or plain numpy: anything with numpy slicing) and
predicted in square tiles: each tile is read with a halo (the filter bank's reach plus the
network's context), normalised with percentiles fitted once on a strided subsample (or the
bundle's stored ones), filtered, run through the network, and the halo is cropped off. Peak
memory is that of one tile (times the number of workers), whatever the image size.

`iter_tiled_prediction` yields ``(box, labels)`` per tile, in row-major order, in this process
(``workers`` threads sharing one network) or on a Dask cluster (``scheduler``); `write_tiled_tiff` and
`OmeZarrLabels` write the tiles as they come. Nothing here imports Qt or napari.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError
from .images import Normalisation, fit_normalisation, guess_channel_axis

# images with more pixels than this go through the tiled path by default (`pointseg predict`)
TILED_ABOVE_PIXELS = 4096 * 4096
DEFAULT_TILE = 1024
# pixels of network context kept around each tile on top of the filter bank's reach
NETWORK_CONTEXT = 64
_GAUSS_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default

Box = tuple[int, int, int, int]  # (y0, y1, x0, x1), half-open


# -- lazy sources -------------------------------------------------------------------------------
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
def default_halo(bundle) -> int:
    """Pixels read around each tile: the largest filter's reach (4 sigma + 1, scipy's Gaussian
    truncation) plus `NETWORK_CONTEXT`, rounded up to the network stride."""
    sigmas = bundle.input_spec.filter_bank.sigmas
    reach = int(_GAUSS_TRUNCATE * max(sigmas) + 1.5) if sigmas else 0
    stride = bundle.spec.stride
    return -(-(reach + NETWORK_CONTEXT) // stride) * stride


def tile_size(bundle, tile: int = DEFAULT_TILE) -> int:
    """``tile`` rounded down to a multiple of the network stride and of 16 (TIFF tiles), at
    least one of those multiples. Tile corners then fall on the network's pooling grid."""
    m = math.lcm(16, bundle.spec.stride)
    return max(m, int(tile) // m * m)


def tile_boxes(shape: tuple[int, int], tile: int) -> list[Box]:
    """Row-major boxes (y0, y1, x0, x1) of ``tile`` x ``tile`` covering ``shape`` (H, W); the
    last row / column is narrower. This is also the order of a tiled TIFF's tiles."""
    h, w = shape
    return [(y, min(h, y + tile), x, min(w, x + tile)) for y in range(0, h, tile) for x in range(0, w, tile)]


@dataclass
class TilePlan:
    """Everything a process needs to predict any tile of one image (picklable, small).

    bundle_path / image_path: files the worker opens itself (cached per process).
    normalisation: percentiles used for every tile; feature_mean / feature_std: the input
    standardisation (the bundle's, or fitted on a centre tile when it has none).
    tile / halo: pixels; threads: torch threads per worker (None: this process's setting).
    """

    bundle_path: str
    image_path: str
    channel_axis: object
    rgb: bool | None
    normalisation: Normalisation
    feature_mean: list[float]
    feature_std: list[float]
    tile: int
    halo: int
    device: str = "cpu"
    threads: int | None = None


class TilePredictor:
    """A network, its bundle and a lazy image: ``predict(box)`` -> label values of ``box``.

    bundle: a loaded `bundle.Bundle`; image: a `LazyImage`; normalisation: percentiles;
    feature_mean / feature_std: None = the bundle's (fitted on a centre tile if it has none).
    """

    def __init__(
        self,
        bundle,
        image: LazyImage,
        normalisation: Normalisation,
        halo: int,
        device="auto",
        model=None,
        feature_mean=None,
        feature_std=None,
    ):
        from .models import choose_device, setup_torch

        setup_torch()
        if image.n_channels != bundle.input_spec.n_channels:
            raise InputError(
                f"the model expects {bundle.input_spec.n_channels} channel(s), the image has {image.n_channels}"
            )
        self.bundle = bundle
        self.image = image
        self.normalisation = normalisation
        self.halo = int(halo)
        self.device = choose_device(device) if isinstance(device, str) else device
        self.model = model if model is not None else bundle.build(self.device)
        self.classes = np.asarray(bundle.classes, dtype=np.int64)
        spec = bundle.input_spec
        if feature_mean is None:
            feature_mean, feature_std = spec.feature_mean, spec.feature_std
        if feature_mean is None:
            feature_mean, feature_std = self._fit_standardisation()
        self.feature_mean = [float(v) for v in feature_mean]
        self.feature_std = [float(v) for v in feature_std]

    def _fit_standardisation(self) -> tuple[list[float], list[float]]:
        """Mean / std per network input channel on a centre tile (bundles without them)."""
        h, w = self.image.shape
        s = DEFAULT_TILE
        y0, x0 = max(0, h // 2 - s // 2), max(0, w // 2 - s // 2)
        x = self._features((y0, min(h, y0 + s), x0, min(w, x0 + s)), standardise=False)
        flat = x.reshape(x.shape[0], -1)
        return [float(v) for v in flat.mean(1)], [float(max(v, 1e-4)) for v in flat.std(1)]

    def _features(self, box: Box, standardise: bool = True) -> np.ndarray:
        x = self.bundle.input_spec.filter_bank.apply(self.normalisation.apply(self.image.read(box)))
        if standardise:
            x -= np.asarray(self.feature_mean, np.float32)[:, None, None]
            x /= np.asarray(self.feature_std, np.float32)[:, None, None]
        return x

    def read_box(self, box: Box) -> Box:
        """``box`` grown by the halo on every side, clipped to the image."""
        y0, y1, x0, x1 = box
        h, w = self.image.shape
        return (
            max(0, y0 - self.halo),
            min(h, y1 + self.halo),
            max(0, x0 - self.halo),
            min(w, x1 + self.halo),
        )

    def predict(self, box: Box) -> np.ndarray:
        """int64 label values ``(y1 - y0, x1 - x0)`` of ``box``, computed on box + halo."""
        from .images import padded_shape
        from .predict import predict_proba

        ry0, ry1, rx0, rx1 = self.read_box(box)
        x = self._features((ry0, ry1, rx0, rx1))
        stride = self.bundle.spec.stride
        whole = max(padded_shape(x.shape[-2:], stride))  # one network pass over tile + halo
        proba = predict_proba(self.model, x, self.device, stride=stride, tile=whole)
        y0, y1, x0, x1 = box
        index = np.argmax(proba[:, y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0], 0)
        return self.classes[index]


_PROCESS_CACHE: dict = {}


def predict_tile_task(plan: TilePlan, box: Box) -> tuple[Box, np.ndarray]:
    """``(box, labels)`` for one tile of ``plan`` (run in a Dask worker: the bundle, network
    and lazy image are opened once per process and kept)."""
    from .bundle import load_bundle
    from .models import setup_torch

    key = (plan.bundle_path, plan.image_path, plan.device, str(plan.channel_axis), plan.halo)
    pred = _PROCESS_CACHE.get(key)
    if pred is None:
        _PROCESS_CACHE.clear()
        setup_torch(plan.threads)
        image = LazyImage(open_lazy(plan.image_path), plan.channel_axis, plan.rgb)
        pred = TilePredictor(
            load_bundle(plan.bundle_path),
            image,
            plan.normalisation,
            plan.halo,
            plan.device,
            feature_mean=plan.feature_mean,
            feature_std=plan.feature_std,
        )
        _PROCESS_CACHE[key] = pred
    return box, pred.predict(box)


def iter_tiled_prediction(
    predictor: TilePredictor | None = None,
    boxes: list[Box] | None = None,
    *,
    plan: TilePlan | None = None,
    workers: int = 1,
    scheduler=None,
    cancel=None,
) -> Iterator[tuple[Box, np.ndarray]]:
    """Yield ``(box, labels)`` for every box, in the order of ``boxes`` (row-major).

    predictor: used in this process (made from ``plan`` if None). workers > 1: that many
    threads share the predictor's network (torch and scipy.ndimage release the GIL; one
    process, so one copy of torch and the weights: ~0.9 GB less per extra worker than
    processes), torch's intra-op threads divided between them. scheduler: a
    dask.distributed address or Client; the tiles run there from ``plan`` (required then).
    At most ``2 x workers`` tiles are in flight and results are held until their turn (a TIFF
    writer needs them in order): memory stays bounded. labels: int64 ``(h, w)``.
    cancel: a threading.Event checked between tiles.
    """
    if boxes is None:
        raise ValueError("boxes are required")
    if scheduler is not None:
        if plan is None:
            raise ValueError("a TilePlan is needed to predict on a Dask cluster")
        yield from _iter_dask(plan, boxes, scheduler, cancel)
        return
    if predictor is None:
        if plan is None:
            raise ValueError("a predictor or a plan is required")
        predictor = _predictor_from_plan(plan)
    if workers <= 1:
        for box in boxes:
            if cancel is not None and cancel.is_set():
                return
            yield box, predictor.predict(box)
        return
    from concurrent.futures import ThreadPoolExecutor

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // workers))
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pointseg-tile") as ex:
            try:
                yield from _in_order(
                    lambda b: ex.submit(lambda: (b, predictor.predict(b))), boxes, 2 * workers, cancel
                )
            finally:
                ex.shutdown(wait=True, cancel_futures=True)
    finally:
        torch.set_num_threads(threads)


def _predictor_from_plan(plan: TilePlan) -> TilePredictor:
    from .bundle import load_bundle

    return TilePredictor(
        load_bundle(plan.bundle_path),
        LazyImage(open_lazy(plan.image_path), plan.channel_axis, plan.rgb),
        plan.normalisation,
        plan.halo,
        plan.device,
        feature_mean=plan.feature_mean,
        feature_std=plan.feature_std,
    )


def _in_order(submit, boxes, in_flight: int, cancel=None):
    pending: deque = deque()
    for box in boxes:
        if cancel is not None and cancel.is_set():
            return
        pending.append(submit(box))
        if len(pending) >= in_flight:
            yield pending.popleft().result()
    while pending:
        if cancel is not None and cancel.is_set():
            return
        yield pending.popleft().result()


def _iter_dask(plan: TilePlan, boxes, scheduler, cancel):
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--scheduler needs dask.distributed: pip install 'dask[distributed]'") from None
    own = not isinstance(scheduler, Client)
    try:
        client = Client(scheduler, timeout="20s") if own else scheduler
    except (OSError, TimeoutError, ValueError) as e:
        raise InputError(f"cannot connect to the Dask scheduler {scheduler}: {e}") from None
    plan = replace(plan, threads=plan.threads or 1)
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    run_id = uuid.uuid4().hex[:8]
    try:
        yield from _in_order(
            lambda b: client.submit(
                predict_tile_task, plan, b, pure=False, key=f"tile-{b[0]}-{b[2]}-{run_id}"
            ),
            boxes,
            2 * n_workers,
            cancel,
        )
    finally:
        if own:
            client.close()


# -- writers ----------------------------------------------------------------------------------
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


# -- one call -------------------------------------------------------------------------------------
def prepare_tiled(
    bundle,
    image: LazyImage,
    *,
    tile: int = DEFAULT_TILE,
    halo: int | None = None,
    normalisation: str = "image",
    device="auto",
    model=None,
) -> tuple[TilePredictor, list[Box], int]:
    """The predictor, the tile boxes and the (rounded) tile size for ``image``.

    normalisation: 'image' (percentiles of a strided subsample of this image, as the
    whole-plane path fits them on the whole image) or 'bundle' (the training image's, stored in
    the bundle; the subsample when the bundle has none).
    """
    if normalisation not in ("image", "bundle"):
        raise InputError(f"normalisation must be 'image' or 'bundle', got {normalisation!r}")
    if normalisation == "bundle" and bundle.normalisation is not None:
        norm = bundle.normalisation
    else:
        norm = subsample_normalisation(image)
    tile = tile_size(bundle, tile)
    halo = default_halo(bundle) if halo is None else int(halo)
    predictor = TilePredictor(bundle, image, norm, halo, device, model=model)
    return predictor, tile_boxes(image.shape, tile), tile


def predict_tiled(
    bundle,
    array,
    channel_axis="auto",
    rgb=None,
    tile: int = DEFAULT_TILE,
    halo=None,
    device="auto",
    normalisation: str = "image",
    model=None,
) -> np.ndarray:
    """Label values of a 2D ``array`` (any lazy array; channels per ``channel_axis``) as an
    in-memory int64 ``(H, W)`` array, tile by tile: for tests and images whose labels (not
    network input) fit in memory."""
    image = LazyImage(array, channel_axis, rgb)
    predictor, boxes, _ = prepare_tiled(
        bundle, image, tile=tile, halo=halo, normalisation=normalisation, device=device, model=model
    )
    out = np.zeros(image.shape, np.int64)
    for (y0, y1, x0, x1), labels in iter_tiled_prediction(predictor, boxes):
        out[y0:y1, x0:x1] = labels
    return out


def plane_pixels(shape, channel_axis="auto", rgb: bool | None = None) -> tuple[int, int]:
    """``(spatial axes, pixels per plane)`` of an image of ``shape``: how `pointseg predict`
    decides between the whole-plane and the tiled path (2D planes over `TILED_ABOVE_PIXELS`)."""
    shape = tuple(int(n) for n in shape)
    ax = guess_channel_axis(shape, rgb) if channel_axis == "auto" else channel_axis
    spatial = [n for i, n in enumerate(shape) if ax is None or i != int(ax) % len(shape)]
    return len(spatial), (spatial[-2] * spatial[-1] if len(spatial) >= 2 else 0)
