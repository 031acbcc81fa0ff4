"""The clicks of "Annotate & train": the "<image> points" layer and the classes of its points.

`PointsController` owns the Points layer of the chosen image: it makes or adopts it (``label``
and ``order`` features, class colours), keeps the click order when points are added, binds the
keys 1-9 to classes, relabels / removes / appends points and reads them back as a PointSet in
the image's spatial axes. Every edit calls ``on_edited()`` (the widget debounces it and hands
the points to the trainer). Main thread only.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..core.points import PointSet
from ._layer_names import find_layer, points_layer_name


def max_order(layer) -> int:
    """The highest click rank in a Points layer (-1 when it has none)."""
    if len(layer.data) == 0 or "order" not in layer.features:
        return -1
    return int(np.nanmax(layer.features["order"].to_numpy().astype(float)))


class PointsController:
    """The points layer of ``view``'s chosen image; ``view`` is the AnnotateWidget (this reads
    its ``viewer``, ``classes``, ``image``, ``image_geometry()`` and ``closed`` and reports with
    ``set_status``)."""

    def __init__(self, view, on_edited):
        self.view = view
        self.on_edited = on_edited
        self.layer = None  # the Points layer of the chosen image, or None
        self._connected = None  # the layer whose events reach this controller

    # -- the layer -------------------------------------------------------------------------
    def colour_cycle(self, extra_labels=()) -> dict:
        """{class value: RGBA} for the classes and ``extra_labels`` (widget colours first)."""
        from .io import class_colour_cycle

        classes = self.view.classes
        values = set(classes.values()) | {int(value) for value in extra_labels}
        return class_colour_cycle(sorted(values), classes.colours())

    def ensure_layer(self):
        """The points layer of the chosen image: made, or adopted if one of its name exists."""
        image = self.view.image
        if image is None:
            return None
        name = points_layer_name(image.name)
        if self.layer is not None and self.layer in self.view.viewer.layers and self.layer.name == name:
            return self.layer
        layer = find_layer(self.view.viewer, name)
        if layer is None:
            empty = np.zeros(0, np.int64)
            layer = self._new_layer(np.zeros((0, image.ndim)), empty, empty, name)
            self.view.viewer.layers.selection.active = layer
            layer.mode = "add"
        else:
            self._adopt(layer)
        self.layer = layer
        self._connect(layer)
        return layer

    def release(self) -> None:
        """Forget the layer (removed, or no image chosen)."""
        self._disconnect()
        self.layer = None

    def _new_layer(self, coords, labels, order, name):
        from napari.layers import Points

        image = self.view.image
        transform = {"scale": image.scale, "translate": image.translate}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layer = Points(
                coords,
                ndim=image.ndim,
                name=name,
                features={"label": np.asarray(labels, np.int64), "order": np.asarray(order, np.int64)},
                face_color="label",
                face_color_cycle=self.colour_cycle(labels),
                border_color="white",
                border_width=0.12,
                size=self.view.image_geometry().point_size(),
                **transform,
            )
        layer.feature_defaults = {"label": self.view.classes.current_value(), "order": 0}
        self.view.viewer.add_layer(layer)
        return layer

    def _adopt(self, layer) -> None:
        """An existing Points layer: make sure it has label / order features and class colours."""
        features = layer.features
        count = len(layer.data)
        classes = self.view.classes
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if "label" not in features or "order" not in features:
                new = {column: features[column].to_numpy() for column in features.columns}
                if "label" not in features:
                    new["label"] = np.full(count, classes.current_value(), np.int64)
                if "order" not in features:
                    new["order"] = np.arange(count, dtype=np.int64)
                layer.features = new
            labels = layer.features["label"].to_numpy()
            classes.ensure(labels[np.isfinite(labels.astype(float))].astype(np.int64))
            layer.face_color_cycle = self.colour_cycle(labels)
            layer.face_color = "label"
            self.reset_defaults(layer)

    def reset_defaults(self, layer=None, label: int | None = None) -> None:
        """The next click gets class ``label`` (default: the current class) and the next rank."""
        layer = self.layer if layer is None else layer
        if layer is None:
            return
        label = self.view.classes.current_value() if label is None else int(label)
        layer.feature_defaults = {"label": label, "order": max_order(layer) + 1}

    # -- layer events ----------------------------------------------------------------------
    def _connect(self, layer) -> None:
        if self._connected is layer:
            return
        self._disconnect()
        layer.events.data.connect(self._on_data)
        layer.events.features.connect(self._on_features)
        for value in range(1, 10):
            layer.bind_key(str(value), self._key_handler(value), overwrite=True)
        self._connected = layer

    def _disconnect(self) -> None:
        layer = self._connected
        if layer is None:
            return
        try:
            layer.events.data.disconnect(self._on_data)
            layer.events.features.disconnect(self._on_features)
        except (TypeError, ValueError, RuntimeError):
            pass
        self._connected = None

    def _key_handler(self, value: int):
        def handler(layer):
            self.pick_class(value, relabel_selected=layer.mode == "select")

        handler.__doc__ = f"point-seg: class {value} for the next click"
        return handler

    def _on_data(self, event) -> None:
        layer = self.layer
        if layer is None or self.view.closed:
            return
        action = str(getattr(event, "action", ""))
        if action.endswith("ADDED") or action == "added":
            self._rank_new_points(layer, getattr(event, "data_indices", ()) or ())
            self.reset_defaults(layer)
        if action.endswith("ING") or action in ("adding", "removing", "changing"):
            return
        self.on_edited()

    @staticmethod
    def _rank_new_points(layer, indices) -> None:
        """Points just added (maybe several at once) rank after all the others, in order."""
        count = len(layer.data)
        added = sorted({int(i) % count for i in indices} if count else ())
        if not added:
            return
        order = layer.features["order"].to_numpy().astype(float)
        others = np.delete(order, added) if len(added) < len(order) else np.zeros(0)
        start = int(np.nanmax(others)) + 1 if len(others) else 0
        column = layer.features.columns.get_loc("order")
        for rank, i in enumerate(i for i in added if 0 <= i < len(order)):
            layer.features.iat[i, column] = start + rank

    def _on_features(self, event=None) -> None:
        if self.layer is not None and not self.view.closed:
            self.on_edited()

    # -- classes ---------------------------------------------------------------------------
    def labels(self) -> np.ndarray:
        """Class value of every point (finite ones only), then of every scribble point."""
        scribbles = getattr(self.view, "scribbles", None)
        painted = np.zeros(0, np.int64) if scribbles is None else scribbles.labels()
        if self.layer is None or "label" not in self.layer.features:
            return painted
        labels = self.layer.features["label"].to_numpy().astype(float)
        return np.concatenate([labels[np.isfinite(labels)].astype(np.int64), painted])

    def count(self) -> int:
        """How many points there are."""
        return len(self.layer.data) if self.layer is not None else 0

    def pick_class(self, value: int, relabel_selected: bool = False) -> None:
        """Class ``value`` for the next click; with relabel_selected also for the selection."""
        classes = self.view.classes
        if classes.info(value) is None:
            classes.add_class(value=value)
            self.view.set_status(f"added class {value}; it reaches a running training after Reset")
        classes.set_current(value)
        if relabel_selected:
            self.relabel_selected(value)

    def recolour(self) -> None:
        """Apply the class colours (after a class was added or recoloured)."""
        if self.layer is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.layer.face_color_cycle = self.colour_cycle(self.labels())
            self.layer.refresh_colors(update_color_mapping=False)

    def relabel_selected(self, value: int) -> int:
        """Give the selected points class ``value``; returns how many changed."""
        layer = self.layer
        if layer is None or not layer.selected_data:
            self.view.set_status("select points first (select mode: key S), then pick a class")
            return 0
        if self.view.classes.info(value) is None:
            self.view.classes.add_class(value=value, select=False)
        selected = sorted(layer.selected_data)
        column = layer.features.columns.get_loc("label")
        for i in selected:
            layer.features.iat[i, column] = int(value)
        self.recolour()
        layer.events.features()
        return len(selected)

    # -- editing ---------------------------------------------------------------------------
    def remove_last(self) -> None:
        """Delete the most recently clicked point."""
        layer = self.layer
        if layer is None or len(layer.data) == 0:
            return
        order = layer.features["order"].to_numpy().astype(float)
        last = int(np.nanargmax(order)) if np.isfinite(order).any() else len(order) - 1
        layer.selected_data = {last}
        layer.remove_selected()
        self.reset_defaults(layer)

    def add(self, coords, labels) -> None:
        """Append points (layer coordinates) with class ``labels``, after the existing ones;
        a label value not in the class table yet gets a class (as loaded points do)."""
        self.view.classes.ensure(labels)
        layer = self.ensure_layer()
        coords = np.asarray(coords, np.float64).reshape(len(labels), -1)
        start = max_order(layer) + 1
        for rank, (point, label) in enumerate(zip(coords, labels)):
            layer.feature_defaults = {"label": int(label), "order": start + rank}
            layer.add(point[None])
        self.reset_defaults(layer)
        layer.selected_data = set()

    def replace(self, points: PointSet) -> None:
        """Replace every point by ``points`` (spatial coordinates), ranked 0..n-1."""
        self.view.classes.ensure(points.labels)
        coords = self.view.image_geometry().to_layer_coords(points.coords)
        layer = self.ensure_layer()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layer.face_color_cycle = self.colour_cycle(points.labels)
            layer.selected_data = set()
            layer.data = coords
            layer.features = {"label": points.labels.copy(), "order": np.arange(len(points))}
            layer.face_color = "label"
            layer.refresh_colors(update_color_mapping=False)
        layer.feature_defaults = {"label": self.view.classes.current_value(), "order": len(points)}

    def current(self, with_scribbles: bool = True) -> PointSet:
        """The points as a PointSet in the image's spatial axes (may be empty), ranked
        0..n-1; with_scribbles: the thinned strokes of the scribbles layer join them in
        acquisition order (`_scribbles.ScribblesController.merged`)."""
        geometry = self.view.image_geometry()
        spatial = geometry.spatial_shape()
        layer = self.layer
        if layer is None or len(layer.data) == 0:
            clicks, orders = PointSet(np.zeros((0, len(spatial))), np.zeros(0, np.int64)), np.zeros(0)
        else:
            data = geometry.to_spatial_coords(np.asarray(layer.data, dtype=np.float64))
            clicks = PointSet.from_napari(data, layer.features, spatial_ndim=len(spatial))
            orders = np.sort(self._orders(layer)[self._labelled(layer)])
        scribbles = getattr(self.view, "scribbles", None)
        if not with_scribbles or scribbles is None:
            return clicks
        return scribbles.merged(clicks, orders)

    @staticmethod
    def _orders(layer) -> np.ndarray:
        """The raw click ranks (the ``order`` feature; missing ones last, as `from_napari`)."""
        count = len(layer.data)
        if "order" not in layer.features:
            return np.arange(count, dtype=float)
        order = layer.features["order"].to_numpy().astype(float)
        return np.where(np.isfinite(order), order, np.arange(count) + 1e9)

    @staticmethod
    def _labelled(layer) -> np.ndarray:
        """Which points have a class (the others are not trained on)."""
        if "label" not in layer.features:
            return np.zeros(len(layer.data), bool)
        return np.isfinite(layer.features["label"].to_numpy().astype(float))
