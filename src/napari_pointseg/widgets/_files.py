"""File actions of "Annotate & train": points CSV, model bundle, exported prediction.

`FileActions` asks for a path when none is given (Qt file dialogs), reads or writes, and
reports in the status line; reading a bundle and writing one run in workers (the bundle may
be large, and saving uses the network, so it is a `Job`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QFileDialog

from ..core.errors import InputError
from ..core.points import PointSet
from . import _messages
from ._worker import Job


def _default_name(image, suffix: str) -> str:
    """A save dialog's proposed file name for the chosen image (e.g. "cells_points.csv")."""
    return f"{image.name}{suffix}"


class FileActions:
    """Save / load of ``view``'s points and model, export of its prediction."""

    def __init__(self, view):
        self.view = view
        self.saved_model_path: Path | None = None  # set when a Save model finished

    def _ask_save(self, title: str, suffix: str, filters: str) -> str:
        path, _ = QFileDialog.getSaveFileName(
            self.view, title, _default_name(self.view.image, suffix), filters
        )
        return path

    def _ask_open(self, title: str, filters: str) -> str:
        path, _ = QFileDialog.getOpenFileName(self.view, title, "", filters)
        return path

    # -- points ------------------------------------------------------------------------------
    def save_points(self, path: str | None = None) -> Path | None:
        """Write the points as CSV (order,label,y,x); asks for a path when none is given."""
        view = self.view
        if view.points.layer is None:
            return None
        if path is None:
            path = self._ask_save("Save points", "_points.csv", "CSV (*.csv)")
            if not path:
                return None
        try:
            points = view.points.current(with_scribbles=False).renumbered()
            points.to_csv(path)
        except (OSError, InputError) as exc:
            view.fail(f"cannot save points: {exc}")
            return None
        view.report(f"{len(points)} points written to {path}")
        return Path(path)

    def load_points(self, path: str | None = None) -> bool:
        """Replace the points by a points CSV; asks for a path when none is given."""
        view = self.view
        if view.image is None:
            view.fail("pick an image layer first")
            return False
        if path is None:
            path = self._ask_open("Load points", "CSV (*.csv)")
            if not path:
                return False
        try:
            points = PointSet.from_csv(path)
            points.validate(view.image_geometry().spatial_shape(), min_classes=1)
        except InputError as exc:
            view.fail(f"cannot load points: {exc}")
            return False
        view.points.replace(points)
        view.schedule_sync()
        view.report(f"{len(points)} points loaded from {Path(path).name}")
        return True

    # -- prediction --------------------------------------------------------------------------
    def export_prediction(self, path: str | None = None) -> Path | None:
        """Write the prediction as a TIFF label image; asks for a path when none is given."""
        view = self.view
        prediction = view.results.prediction
        if prediction is None:
            view.fail("nothing to export yet: train or predict first")
            return None
        if path is None:
            path = self._ask_save("Export prediction", "_prediction.tif", "TIFF (*.tif *.tiff)")
            if not path:
                return None
        from ..core.session import write_labels

        try:
            out = write_labels(path, np.asarray(prediction.data))
        except (OSError, InputError) as exc:
            view.fail(f"cannot write {path}: {exc}")
            return None
        view.report(f"prediction written to {out}")
        return out

    # -- model bundle ------------------------------------------------------------------------
    def save_model(self, path: str | None = None) -> None:
        """Save the trained network, classes, normalisation and points as a bundle (in the
        background); ``saved_model_path`` is set when it is written."""
        view = self.view
        if view.trainer is None:
            view.fail("no trained network to save yet")
            return
        if path is None:
            path = self._ask_save("Save model bundle", ".safetensors", "Model bundle (*.safetensors)")
            if not path:
                return
        names = {str(info.value): info.name for info in view.classes.classes}
        extra = {"class_names": names, "image": view.image.name}

        def save(trainer):
            from ..core.bundle import save_trainer

            return save_trainer(path, trainer, extra=extra)

        self.saved_model_path = None
        view.jobs.run(Job(save, self._model_saved, label="saving the model"))

    def _model_saved(self, path) -> None:
        self.saved_model_path = Path(path)
        self.view.report(f"model saved to {path}")

    def load_model(self, path: str | None = None) -> None:
        """Load a model bundle in the background; it becomes a choice under Model."""
        if path is None:
            path = self._ask_open("Load model bundle", "Model bundle (*.safetensors)")
            if not path:
                return

        def load(bundle_path=path):
            from ..core.bundle import load_bundle
            from ._safe_import import import_torch

            import_torch()

            return load_bundle(bundle_path)

        self.view.jobs.start(
            load,
            on_done=lambda bundle, bundle_path=path: self._model_loaded(bundle, bundle_path),
            on_error=lambda exc: self.view.fail(f"cannot load the model: {_messages.error_text(exc)}"),
            label=f"loading the model {Path(path).name}…",
        )

    def _model_loaded(self, bundle, path) -> None:
        view = self.view
        if view.closed:
            return
        view.jobs.set_bundle(bundle, path)
        names = (bundle.extra or {}).get("class_names", {})
        for value in bundle.classes:
            if int(value) >= 1 and view.classes.info(int(value)) is None:
                view.classes.add_class(names.get(str(value)), value=int(value), select=False)
        view.refresh_model_choices(prefer_bundle=True)
        view.report(
            f"model loaded: {view.jobs.bundle_path.name} ({bundle.spec.arch}/"
            f"{bundle.spec.encoder}, classes {list(bundle.classes)}) — Predict image "
            "applies it to the chosen image"
        )
