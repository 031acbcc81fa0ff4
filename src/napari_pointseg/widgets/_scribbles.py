"""The brush strokes of "Annotate & train": the "<image> scribbles" Labels layer.

`ScribblesController` owns the Labels layer of the chosen image that a user paints on
(value 0 = not painted, other values = class values, as for points). Every napari paint event
(one press-drag-release of the brush, fill or eraser) is one stroke, recorded in a
`core.scribbles.ScribbleHistory` with the pixels in the order the brush touched them and the
rank of the last click made before it. Changes that come without a paint event (undo, redo,
replaced data) are found by comparing the layer with what the history knows when the points
are next read. `merged` hands the trainer clicks and thinned stroke pixels in one acquisition
order. Main thread only; no torch.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..core.errors import InputError
from ..core.scribbles import (
    DEFAULT_MAX_PER_STROKE,
    DEFAULT_SPACING,
    ScribbleHistory,
    ScribblePoints,
    merge_points,
)
from ._layer_names import find_layer, scribbles_layer_name


def atom_pixels(atom, shape) -> np.ndarray:
    """Flat (C-order) indices in a label array of ``shape`` touched by one napari history atom
    (a masked paint atom with ``slice_key`` / ``mask`` / ``old_values``, or the
    ``(indices, old_values, new_values)`` tuple of ``Labels.data_setitem``), raster order."""
    if hasattr(atom, "slice_key"):
        box = np.shape(atom.old_values) if atom.mask is None else atom.mask.shape
        starts = [0 if key.start is None else int(key.start) for key in atom.slice_key]
        if atom.mask is None:
            where = [axis.reshape(-1) for axis in np.indices(box)]
        else:
            where = list(np.nonzero(atom.mask))
        where = [axis + start for axis, start in zip(where, starts)]
    else:
        where = [np.asarray(axis).reshape(-1) for axis in atom[0]]
    if len(where) != len(shape) or len(where[0]) == 0:
        return np.zeros(0, np.int64)
    where = np.stack(where).astype(np.int64)
    inside = np.all((where >= 0) & (where < np.asarray(shape)[:, None]), axis=0)
    return np.ravel_multi_index(tuple(where[:, inside]), shape).astype(np.int64)


class ScribblesController:
    """The scribbles layer of ``view``'s chosen image; ``view`` is the AnnotateWidget (this
    reads its ``viewer``, ``image``, ``image_geometry()``, ``points``, ``classes``, ``results``
    and ``closed`` and reports with ``set_status``). ``spacing`` / ``max_per_stroke`` thin
    each stroke (see `core.scribbles.thin_stroke`)."""

    def __init__(self, view, on_edited):
        self.view = view
        self.on_edited = on_edited
        self.layer = None  # the Labels layer of the chosen image, or None
        self.history: ScribbleHistory | None = None
        self.spacing = DEFAULT_SPACING
        self.max_per_stroke = DEFAULT_MAX_PER_STROKE
        self._pending: list[tuple[list, int]] = []  # (atoms, after) of paint events not read yet
        self._cache = None  # (ScribblePoints, spacing, max_per_stroke) until the next change

    # -- the layer -------------------------------------------------------------------------
    def adopt(self) -> None:
        """Take the chosen image's "<image> scribbles" Labels layer if there is one (its paint
        so far becomes strokes in the order `core.scribbles.strokes_from_labels` gives)."""
        self.release()
        image = self.view.image
        layer = None if image is None else find_layer(self.view.viewer, scribbles_layer_name(image.name))
        if layer is not None:
            self._attach(layer)

    def ensure_layer(self):
        """The scribbles layer of the chosen image, made if missing, selected for painting with
        the current class (the "Paint scribbles" button)."""
        view = self.view
        if view.image is None:
            return None
        name = scribbles_layer_name(view.image.name)
        layer = find_layer(view.viewer, name)
        if layer is None:
            from napari.layers import Labels

            geometry = view.image_geometry()
            shape = geometry.spatial_shape()
            dtype = np.uint8 if max(view.classes.values(), default=1) < 256 else np.int32
            layer = Labels(
                np.zeros(shape, dtype),
                name=name,
                colormap=view.results.label_colormap(),
                **geometry.spatial_transform(),
            )
            layer.brush_size = max(3, int(round(geometry.point_size())))
            view.viewer.add_layer(layer)
        if layer is not self.layer:
            self.release()
            self._attach(layer)
        if self.layer is None:
            return None
        view.viewer.layers.selection.active = layer
        layer.selected_label = view.classes.current_value()
        layer.mode = "paint"
        return layer

    def release(self) -> None:
        """Forget the layer (removed, another image chosen, widget closed)."""
        layer = self.layer
        if layer is not None:
            try:
                layer.events.paint.disconnect(self._on_paint)
                layer.events.set_data.disconnect(self._on_set_data)
                layer.events.selected_label.disconnect(self._on_selected_label)
            except (TypeError, ValueError, RuntimeError):
                pass
        self.layer = None
        self.history = None
        self._pending = []
        self._cache = None

    def _attach(self, layer) -> None:
        try:
            data = self._data(layer)
        except InputError as exc:
            self.view.set_status(f"layer '{layer.name}' is not used for training: {exc}")
            return
        self.layer = layer
        if data.any():
            self.history = ScribbleHistory.from_labels(data, after=-1)
        else:
            self.history = ScribbleHistory(data.shape, data.dtype)
        layer.events.paint.connect(self._on_paint)
        layer.events.set_data.connect(self._on_set_data)
        layer.events.selected_label.connect(self._on_selected_label)
        self.recolour()

    def _data(self, layer) -> np.ndarray:
        """The layer's label array, checked against the image's spatial shape."""
        data = layer.data
        if isinstance(data, (list, tuple)):
            raise InputError("a multiscale Labels layer cannot hold scribbles")
        shape = self.view.image_geometry().spatial_shape()
        if tuple(data.shape) != tuple(shape):
            raise InputError(f"its shape {tuple(data.shape)} differs from the image's {tuple(shape)}")
        return np.asarray(data)

    def recolour(self) -> None:
        """The class colours (after a class was added or recoloured)."""
        if self.layer is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.layer.colormap = self.view.results.label_colormap()

    def on_class_chosen(self, value: int) -> None:
        """The widget's class changed: paint with it."""
        if self.layer is not None and int(self.layer.selected_label) != int(value):
            self.layer.selected_label = int(value)

    # -- layer events ----------------------------------------------------------------------
    def _on_paint(self, event) -> None:
        if self.layer is None or self.view.closed:
            return
        # napari emits the event for a lone edit before it writes the pixels: only remember
        # where the stroke went; the values are read when the points are next read
        self._pending.append((list(getattr(event, "value", None) or ()), self._last_click()))
        self._cache = None
        self.on_edited()

    def _on_set_data(self, event=None) -> None:
        """Undo / redo / new data (napari sends no paint event for them): take the change in
        now. Skipped mid-stroke and while a paint event waits to be read."""
        if self.layer is None or self.history is None or self.view.closed or self._pending:
            return
        if self._stroke_in_progress():
            return
        data = np.asarray(self.layer.data)
        if data.shape == self.history.shape and self.history.update(data, after=self._last_click()):
            self._cache = None
            self.on_edited()

    def _stroke_in_progress(self) -> bool:
        """True between press and release of the brush (napari groups the stroke's edits)."""
        return bool(getattr(self.layer, "_block_history", False))

    def _on_selected_label(self, event=None) -> None:
        if self.layer is None or self.view.closed:
            return
        value = int(self.layer.selected_label)
        if value > 0 and value != self.view.classes.current_value():
            self.view.points.pick_class(value)

    def _last_click(self) -> int:
        from ._points import max_order

        layer = self.view.points.layer
        return -1 if layer is None else max_order(layer)

    # -- reading ---------------------------------------------------------------------------
    def scribble_points(self, check_layer: bool = True) -> ScribblePoints:
        """The thinned stroke pixels as they are now (``after`` on the clicks' raw order
        scale); empty without a layer. check_layer: also compare the whole layer with the
        history (finds undo / redo; one pass over the pixels), else only read new strokes."""
        try:
            shape = self.view.image_geometry().spatial_shape()
        except InputError:
            shape = (0, 0)
        if self.layer is None or self.history is None:
            return ScribblePoints.empty(len(shape))
        data = np.asarray(self.layer.data)
        if data.shape != self.history.shape:
            self.view.set_status(f"'{self.layer.name}' changed shape: scribbles are not used")
            return ScribblePoints.empty(len(shape))
        pending, self._pending = self._pending, []
        for atoms, after in pending:
            pixels = [atom_pixels(atom, data.shape) for atom in atoms]
            self.history.add_stroke(data, np.concatenate(pixels) if pixels else [], after)
        if (
            check_layer
            and not self._stroke_in_progress()
            and self.history.update(data, after=self._last_click())
        ):
            self._cache = None
        key = (self.spacing, self.max_per_stroke)
        if self._cache is None or self._cache[1] != key:
            self._cache = (self.history.points(data, *key), key)
        return self._cache[0]

    def count(self) -> int:
        """How many scribble points train (after thinning)."""
        return len(self.scribble_points(check_layer=False))

    def labels(self) -> np.ndarray:
        """Class value of every scribble point used for training."""
        return self.scribble_points(check_layer=False).labels

    def merged(self, clicks, click_orders: np.ndarray):
        """Clicks (a PointSet ranked 0..n-1) and scribble points in one acquisition order.

        click_orders: the clicks' raw ``order`` values (the points layer's feature), sorted;
        a stroke painted after the click of raw order r joins after that click's rank."""
        points = self.scribble_points()
        if len(points) == 0:
            return clicks
        ranks = np.searchsorted(np.asarray(click_orders, np.float64), points.after, side="right") - 1
        return merge_points(clicks, ScribblePoints(points.coords, points.labels, points.stroke, ranks))
