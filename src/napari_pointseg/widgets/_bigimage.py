""" "Predict image" on a big image layer: tile by tile in the background, tiles shown as they finish.

A layer is big when it is multiscale, lazy (dask, zarr: anything that is not a numpy array)
or has more than `core.tiled_predict.TILED_ABOVE_PIXELS` pixels per plane, and is 2D. Its
level-0 array is never loaded whole: a generator worker runs `core.tiled_predict` (tile +
halo, percentiles from a strided subsample) and yields ``(box, labels)`` per tile; the main
thread writes each tile into the "<image> prediction" layer and refreshes it at most every
`REFRESH_S` seconds. The worker is one of the job workers (quit on close, counted as busy).
"""

from __future__ import annotations

import time

import numpy as np

from ..core.errors import InputError

REFRESH_S = 0.25


def level0(layer):
    """The full-resolution array of an image layer (level 0 of a multiscale one), not loaded."""
    data = layer.data
    if getattr(layer, "multiscale", False) or isinstance(data, (list, tuple)):
        data = data[0]
    return data


def is_big_layer(layer, geometry) -> bool:
    """True when "Predict image" should take the tiled path for ``layer`` (see module doc)."""
    from ..core.lazy_images import TILED_ABOVE_PIXELS

    try:
        spatial = geometry.spatial_shape()
    except InputError:
        return False
    if len(spatial) != 2:
        return False
    lazy = getattr(layer, "multiscale", False) or not isinstance(level0(layer), np.ndarray)
    return lazy or spatial[0] * spatial[1] > TILED_ABOVE_PIXELS


def tiles_worker(bundle, model, array, channel_axis, rgb, device, tile):
    """Generator run in a worker thread: yields ``("start", n_tiles)``, then ``(box, labels)``
    per tile (labels int64 (h, w)), row-major."""
    from ..core import tiled_predict as tp
    from ._safe_import import import_torch

    import_torch()
    from ..core.lazy_images import LazyImage

    image = LazyImage(array, channel_axis, rgb)
    predictor, boxes, _ = tp.prepare_tiled(bundle, image, tile=tile, device=device, model=model)
    yield "start", len(boxes)
    for box in boxes:
        yield box, predictor.predict(box)


class BigImagePrediction:
    """Runs and shows the tiled prediction of ``results.view``'s chosen (big) image."""

    def __init__(self, results, tile: int | None = None):
        from ..core.tiled_predict import DEFAULT_TILE

        self.results = results
        self.view = results.view
        self.tile = tile or DEFAULT_TILE
        self.n_tiles = 0
        self.done = 0
        self._last_refresh = 0.0
        self.worker = None
        self.activity = None  # its napari progress bar (activity dock, with Cancel)

    def _network(self):
        """(bundle, model or None) of the chosen network; InputError while training runs."""
        view = self.view
        choice = view.jobs.model()
        if choice == "bundle":
            return view.jobs.bundle, None
        if view.is_training:
            raise InputError("stop training before predicting a large image tile by tile")
        from ..core.bundle import Bundle, forest_data_of

        tr = choice
        forest = tr.image.forest
        bundle = Bundle(
            spec=tr.spec,
            classes=[int(c) for c in tr.classes],
            input_spec=tr.image.spec,
            normalisation=tr.image.normalisation,
            state_dict={},
            forest_data=None if forest is None else forest_data_of(forest, tr.image.n_channels),
        )
        return bundle, tr.inference_model()

    def start(self) -> None:
        """Start the worker (the prediction layer is made empty, then filled tile by tile)."""
        from napari.qt.threading import create_worker

        from ._threads import start_worker

        view = self.view
        try:
            bundle, model = self._network()
        except InputError as e:
            view.fail(str(e))
            return
        layer = view.image
        geometry = view.image_geometry()
        highest = max(int(c) for c in bundle.classes)
        results = self.results
        dtype = np.uint8 if highest < 256 else np.uint16 if highest < 65536 else np.int32
        pred = results.ensure_prediction_layer(dtype)
        pred.data[...] = 0
        pred.refresh()
        self.layer = pred
        image = layer
        worker = create_worker(
            tiles_worker,
            bundle,
            model,
            level0(layer),
            geometry.channel_axis(),
            bool(layer.rgb),
            view.device(),
            self.tile,
            _start_thread=False,
        )
        worker.yielded.connect(lambda item: self._on_tile(item, image))
        worker.errored.connect(lambda exc: self._on_error(exc))
        worker.finished.connect(lambda w=worker: self._on_finished(w, image))
        self.worker = worker
        from ._progress import Activity

        self.activity = Activity(f"predicting {layer.name} tile by tile", on_cancel=worker.quit)
        view.jobs.workers.add(worker)
        view.refresh()
        view.set_status("predicting the large image tile by tile…")
        start_worker(worker)

    def _on_tile(self, item, image) -> None:
        view = self.view
        if view.closed:
            return
        if view.image is not image or self.layer not in view.viewer.layers:
            self.worker.quit()  # another image chosen, or the layer removed: stop
            return
        first, second = item
        if first == "start":
            self.n_tiles = int(second)
            self.activity.stage(f"predicting {image.name} tile by tile", self.n_tiles)
            return
        y0, y1, x0, x1 = first
        self.layer.data[y0:y1, x0:x1] = second
        self.done += 1
        self.activity.advance(1)
        now = time.monotonic()
        if now - self._last_refresh >= REFRESH_S or self.done == self.n_tiles:
            self._last_refresh = now
            self.layer.refresh()
            view.set_status(f"predicting the large image: tile {self.done} / {self.n_tiles}")

    def _on_error(self, exc) -> None:
        if not self.view.closed:
            from . import _messages

            self.view.fail(f"prediction failed: {_messages.error_text(exc)}")

    def _on_finished(self, worker, image) -> None:
        view = self.view
        view.jobs.workers.discard(worker)
        cancelled = self.activity is not None and self.activity.cancelled
        if self.activity is not None:
            self.activity.close()
        if view.closed:
            return
        if self.n_tiles and self.done == self.n_tiles and view.image is image:
            self.layer.refresh()
            self.results.n_predictions += 1
            view.report(f"prediction of the large image done ({self.n_tiles} tiles)")
        elif cancelled:
            view.report(f"prediction of the large image cancelled after {self.done} / {self.n_tiles} tiles")
        view.refresh()
