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
(``workers`` threads sharing one network) or on a Dask cluster (``scheduler``); the sources are
in `lazy_images`, the writers that take the tiles as they come in `tiled_writers`. Nothing
here imports Qt or napari.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from .errors import InputError
from .images import Normalisation
from .lazy_images import Box, LazyImage, open_lazy, subsample_normalisation

DEFAULT_TILE = 1024
# pixels of network context kept around each tile on top of the filter bank's reach
NETWORK_CONTEXT = 64
_GAUSS_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default


def default_halo(bundle) -> int:
    """Pixels read around each tile: the largest filter's reach (4 sigma + 1, scipy's Gaussian
    truncation) plus `NETWORK_CONTEXT`, rounded up to the network stride."""
    from .forest_input import FOREST_SIGMA_MAX

    sigmas = list(bundle.input_spec.filter_bank.sigmas)
    if bundle.input_spec.forest is not None:
        sigmas.append(FOREST_SIGMA_MAX)
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
        self.forest = None
        if spec.forest is not None:
            from .forest_input import ClickForest

            self.forest = ClickForest(spec.forest).fit(*bundle.forest_data, oob=False)
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
        """The network input of ``box``; standardise False: the filter bank's raw responses only."""
        normed = self.normalisation.apply(self.image.read(box))
        x = self.bundle.input_spec.filter_bank.apply(normed)
        if standardise:
            x -= np.asarray(self.feature_mean, np.float32)[:, None, None]
            x /= np.asarray(self.feature_std, np.float32)[:, None, None]
            if self.forest is not None:
                from .forest_input import forest_features

                x = np.concatenate([x, self.forest.channels(forest_features(normed), x.shape[-2:])])
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
    from .dask_client import dask_client

    plan = replace(plan, threads=plan.threads or 1)
    run_id = uuid.uuid4().hex[:8]
    with dask_client(scheduler) as client:
        n_workers = max(1, len(client.scheduler_info().get("workers", {})))
        yield from _in_order(
            lambda b: client.submit(
                predict_tile_task, plan, b, pure=False, key=f"tile-{b[0]}-{b[2]}-{run_id}"
            ),
            boxes,
            2 * n_workers,
            cancel,
        )


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
