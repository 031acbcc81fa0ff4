"""What "Annotate & train" shows of the network: prediction, uncertainty and suggestions.

`ResultLayers` owns the "<image> prediction" Labels layer (not editable, class colours), the
"<image> uncertainty" Image layer and the "<image> suggestions" Points layer, copies arrays
computed elsewhere into them (main thread only), and starts the jobs that compute them:
predicting the whole image, predicting the slice the viewer moved to, suggesting points.
"""

from __future__ import annotations

import time

import numpy as np

from ..core.errors import InputError
from ._layer_names import find_layer, prediction_layer_name, suggestions_layer_name, uncertainty_layer_name
from ._worker import Job


def _labels_dtype(highest: int):
    return np.uint8 if highest < 256 else np.uint16 if highest < 65536 else np.int32


class ResultLayers:
    """The output layers of ``view``'s chosen image (``view``: the AnnotateWidget)."""

    def __init__(self, view):
        self.view = view
        self.prediction = None  # "<image> prediction" Labels layer, or None
        self.suggestions = None  # "<image> suggestions" Points layer, or None
        self.uncertainty = None  # "<image> uncertainty" Image layer, or None
        self.n_predictions = 0  # prediction layer updates (tests, benchmark)
        self.big = None  # the last BigImagePrediction (large layers), or None
        self.big_tile = None  # tile size of large-layer predictions (None: 1024 px)

    def adopt(self, image) -> None:
        """Take over the output layers of ``image`` that already exist (None: forget all)."""
        viewer = self.view.viewer
        name = image.name if image is not None else None
        self.prediction = find_layer(viewer, prediction_layer_name(name)) if image is not None else None
        self.suggestions = find_layer(viewer, suggestions_layer_name(name)) if image is not None else None
        self.uncertainty = find_layer(viewer, uncertainty_layer_name(name)) if image is not None else None

    def forget(self, layer) -> None:
        """``layer`` was removed from the viewer: stop pointing at it."""
        if layer is self.prediction:
            self.prediction = None
        if layer is self.suggestions:
            self.suggestions = None
        if layer is self.uncertainty:
            self.uncertainty = None

    def has_suggestions(self) -> bool:
        """True when there are suggestions left to accept."""
        return self.suggestions is not None and len(self.suggestions.data) > 0

    def _keep_points_active(self) -> None:
        points = self.view.points.layer
        if points is not None:
            self.view.viewer.layers.selection.active = points

    # -- prediction --------------------------------------------------------------------------
    def label_colormap(self):
        """The class colours as a napari label colormap (0 transparent)."""
        from napari.utils.colormaps import DirectLabelColormap

        colours = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0)}
        points = self.view.points
        for value, rgba in points.colour_cycle(points.labels()).items():
            colours[value] = rgba
        return DirectLabelColormap(color_dict=colours)

    def recolour(self) -> None:
        """Apply the class colours to the prediction."""
        if self.prediction is not None:
            self.prediction.colormap = self.label_colormap()

    def ensure_prediction_layer(self, dtype=np.uint8):
        """The prediction layer of the chosen image, made (empty) when missing or misshapen."""
        view = self.view
        viewer = view.viewer
        if self.prediction is not None and self.prediction in viewer.layers:
            return self.prediction
        layer = find_layer(viewer, prediction_layer_name(view.image.name))
        geometry = view.image_geometry()
        shape = geometry.spatial_shape()
        if layer is None or tuple(layer.data.shape) != shape:
            if layer is not None:
                viewer.layers.remove(layer)
            from napari.layers import Labels

            layer = Labels(
                np.zeros(shape, dtype),
                name=prediction_layer_name(view.image.name),
                opacity=0.4,
                colormap=self.label_colormap(),
                **geometry.spatial_transform(),
            )
            layer.editable = False
            viewer.add_layer(layer)
            points = view.points.layer
            if points is not None:  # keep the points on top, and the active layer
                viewer.layers.move(viewer.layers.index(layer), viewer.layers.index(points))
                viewer.layers.selection.active = points
        self.prediction = layer
        return layer

    def show_prediction(self, labels: np.ndarray, plane: int | None = None) -> None:
        """Copy a prediction (H, W) of ``plane`` — or the whole (Z, H, W) — into the layer."""
        if self.view.image is None:
            return
        dtype = _labels_dtype(int(labels.max()) if labels.size else 0)
        layer = self.ensure_prediction_layer(dtype)
        if np.dtype(layer.data.dtype).itemsize < np.dtype(dtype).itemsize:
            layer.data = layer.data.astype(dtype)
        data = layer.data
        if data.ndim == 3 and labels.ndim == 2:
            data[int(plane or 0)] = labels
        else:
            data[...] = labels
        layer.refresh()
        self.n_predictions += 1
        self.view.refresh()

    def show_uncertainty(self, uncertainty: np.ndarray, plane: int | None = None) -> None:
        """Copy an uncertainty map (of ``plane``, or the whole image) into its layer."""
        view = self.view
        viewer = view.viewer
        geometry = view.image_geometry()
        shape = geometry.spatial_shape()
        layer = (
            self.uncertainty
            if self.uncertainty is not None and self.uncertainty in viewer.layers
            else find_layer(viewer, uncertainty_layer_name(view.image.name))
        )
        if layer is None or tuple(layer.data.shape) != shape:
            if layer is not None:
                viewer.layers.remove(layer)
            layer = viewer.add_image(
                np.zeros(shape, np.float32),
                name=uncertainty_layer_name(view.image.name),
                colormap="magma",
                opacity=0.5,
                blending="additive",
                contrast_limits=(0, 1),
                **geometry.spatial_transform(),
            )
            self._keep_points_active()
        self.uncertainty = layer
        if layer.data.ndim == 3 and uncertainty.ndim == 2:
            layer.data[int(plane or 0)] = uncertainty
        else:
            layer.data[...] = uncertainty
        layer.refresh()

    def for_current_image(self, on_done):
        """``on_done`` of a job whose result belongs to the image chosen now: dropped if by
        then that image was removed or another one picked (wrong layer, maybe wrong shape)."""
        image = self.view.image

        def guarded(result):
            if self.view.image is image:
                on_done(result)

        return guarded

    def predict_all(self) -> None:
        """Predict the whole image (every slice) with the chosen model, in the background."""
        view = self.view
        if view.jobs.model() is None:
            view.fail("no network yet: train first, or load a model")
            return
        from ._bigimage import BigImagePrediction, is_big_layer

        if is_big_layer(view.image, view.image_geometry()):  # never loaded whole: tile by tile
            self.big = BigImagePrediction(self, self.big_tile)
            self.big.start()
            return
        want_uncertainty = view.uncert_check.isChecked()

        def predict(model):
            if not want_uncertainty:
                return model.predict(None), None
            from ..core.predict import uncertainty

            probas = [model.predict_proba(plane) for plane in range(model.image.n_planes)]
            labels = [model.classes[np.argmax(proba, 0)] for proba in probas]
            margins = [uncertainty(proba, "margin") for proba in probas]
            if model.image.is_3d:
                return np.stack(labels), np.stack(margins)
            return labels[0], margins[0]

        def show(result):
            labels, margins = result
            self.show_prediction(labels)
            if margins is not None:
                self.show_uncertainty(margins)
            view.report("prediction of the whole image done")

        view.set_status("predicting the whole image…")
        view.jobs.run(Job(predict, self.for_current_image(show), label="prediction"))

    def predict_plane(self) -> None:
        """Idle and moved to a slice: predict it (a running training does so itself)."""
        view = self.view
        if view.closed or view.is_training or view.trainer is None or view.busy:
            return
        plane = view.current_plane()
        view.jobs.run(
            Job(
                lambda model: model.predict(plane),
                lambda labels: self.show_prediction(labels, plane),
                label="slice prediction",
            )
        )

    # -- suggestions -------------------------------------------------------------------------
    def suggest(self, count: int | None = None) -> None:
        """Show the ``count`` places where the network is least sure as a 'suggestions' layer."""
        view = self.view
        if view.jobs.model() is None:
            view.fail("no network yet: train first, or load a model")
            return
        from ..core.suggest import suggest_points as sampler

        count = int(count or view.n_suggest.value())
        plane = view.current_plane()
        try:
            points = view.points.current()
        except InputError:
            points = None
        exclude = None
        if points is not None and len(points):
            pixels = points.pixel_coords()
            if points.ndim == 3:
                pixels = pixels[pixels[:, 0] == plane]
            exclude = pixels[:, -2:]
        want_uncertainty = view.uncert_check.isChecked()
        seed = int(time.time_ns() % (2**31))

        def find_places(model):
            proba = model.predict_proba(plane)
            excluded = None
            if exclude is not None and len(exclude):  # clicked points: excluded and repelling
                excluded = np.clip(exclude, 0, np.asarray(proba.shape[1:]) - 1)
            places = sampler(
                proba.astype(np.float32),
                count,
                kind="margin",
                exclude=excluded,
                rng=np.random.default_rng(seed),
            )
            margins = None
            if want_uncertainty:
                from ..core.predict import uncertainty

                margins = uncertainty(proba, "margin")
            return np.asarray(places), margins

        view.set_status("looking for uncertain places…")
        show = self.for_current_image(lambda result: self.show_suggestions(result[0], result[1], plane))
        view.jobs.run(Job(find_places, show, label="suggestion"))

    def show_suggestions(self, places: np.ndarray, margins, plane: int) -> None:
        """Show ``places`` (N, 2) of slice ``plane`` as magenta rings, selectable for Accept."""
        view = self.view
        if view.image is None:
            return
        viewer = view.viewer
        geometry = view.image_geometry()
        coords = np.asarray(places, np.float64).reshape(-1, 2)
        if len(geometry.spatial_shape()) == 3:
            coords = np.column_stack([np.full(len(coords), plane, np.float64), coords])
        coords = geometry.to_layer_coords(coords)  # points live in the layer's dims
        layer = (
            self.suggestions
            if self.suggestions is not None and self.suggestions in viewer.layers
            else find_layer(viewer, suggestions_layer_name(view.image.name))
        )
        if layer is None:
            layer = viewer.add_points(
                coords,
                name=suggestions_layer_name(view.image.name),
                symbol="ring",
                face_color="transparent",
                border_color="magenta",
                border_width=0.2,
                size=geometry.point_size() * 2.2,
                scale=view.image.scale,
                translate=view.image.translate,
            )
            for value in range(1, 10):
                layer.bind_key(str(value), self._accept_handler(value), overwrite=True)
        else:
            layer.data = coords
        layer.selected_data = set()
        self.suggestions = layer
        if margins is not None:
            self.show_uncertainty(margins, plane)
        viewer.layers.selection.active = layer
        layer.mode = "select"
        view.report(
            f"{len(coords)} suggestions (magenta rings): select some and press a "
            "class key 1-9, or 'Accept as class'"
        )
        view.refresh()

    def _accept_handler(self, value: int):
        def handler(layer):
            self.accept(value)

        handler.__doc__ = f"point-seg: accept suggestions as class {value}"
        return handler

    def accept(self, value: int) -> int:
        """Selected suggestions (all if none selected) become points of class ``value``."""
        layer = self.suggestions
        if layer is None or len(layer.data) == 0:
            return 0
        chosen = sorted(layer.selected_data) or list(range(len(layer.data)))
        coords = np.asarray(layer.data)[chosen]
        classes = self.view.classes
        if classes.info(value) is None:
            classes.add_class(value=value, select=False)
        self.view.points.add(coords, [value] * len(coords))
        keep = np.setdiff1d(np.arange(len(layer.data)), chosen)
        layer.selected_data = set()
        layer.data = np.asarray(layer.data)[keep]
        if len(keep) == 0:
            self._keep_points_active()
        return len(coords)
