"""Widget 1, "Annotate & train": click points per class, watch a network learn the segmentation.

Flow (see /work/shared/DESIGN.md, "Flow of one interactive session"):

1. Pick an image layer. The widget creates (or reuses) a Points layer "<image> points" whose
   ``features`` hold ``label`` (class value, 1..) and ``order`` (click rank).
2. Train starts a napari ``thread_worker`` around `_worker.training_loop`, which builds the
   trainer (filter bank + random network) in the worker thread and drives
   ``SparseTrainer.run()``. Point edits are debounced (150 ms) and handed to the running
   trainer with ``set_points``: new clicks join in click order without a restart.
3. The worker forwards a throttled stream of typed events (`_events`): predictions (every
   ``predict_every_s``) go into the non-editable Labels layer "<image> prediction", progress
   goes into the status line. The main thread only copies arrays into layers: no torch, no
   filtering, no prediction.

This module is the view: it builds the controls and keeps them in step with the parts that do
the work, each with one job: `_points.PointsController` (the clicks and their classes),
`_training.TrainingController` (the worker), `_jobs.JobRunner` (work that needs a network),
`_results.ResultLayers` (prediction, uncertainty, suggestions), `_files.FileActions`, with
`_geometry.ImageGeometry` for the image's axes and `_tooltips` for every tooltip.

Nothing here imports torch at module import time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QWidget

from ..core.errors import InputError
from ..core.points import PointSet
from . import _messages
from ._annotate_ui import build_ui
from ._files import FileActions
from ._geometry import ImageGeometry
from ._jobs import JobRunner
from ._layer_names import is_input_image
from ._points import PointsController
from ._results import ResultLayers
from ._scribbles import ScribblesController
from ._threads import add_stopper, on_viewer_close
from ._training import TrainingController
from ._worker import Job

SYNC_DELAY_MS = 150
PLANE_SETTLE_MS = 250


class AnnotateWidget(QWidget):
    """Dock widget "Annotate & train".

    Attributes useful to scripts and tests: ``trainer`` (the SparseTrainer of the current
    image or None), ``image``, ``points_layer``, ``prediction_layer``, ``is_training``,
    ``last_update`` (the latest TrainUpdate), ``train_overrides`` / ``model_overrides``
    (dicts merged into TrainConfig / ModelSpec when a trainer is built), and the parts
    ``points``, ``training``, ``jobs``, ``results``, ``files``.
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.train_overrides: dict = {}
        self.model_overrides: dict = {}
        self.predict_every_s = 1.0
        self.image = None  # the Image layer being annotated, or None
        self._closed = False
        self.points = PointsController(self, on_edited=self.schedule_sync)
        self.scribbles = ScribblesController(self, on_edited=self.schedule_sync)
        self.training = TrainingController(self)
        self.jobs = JobRunner(self)
        self.results = ResultLayers(self)
        self.files = FileActions(self)
        self._sync_timer = self._single_shot(SYNC_DELAY_MS, self.sync_points)
        self._plane_timer = self._single_shot(PLANE_SETTLE_MS, self.results.predict_plane)
        build_ui(self)
        self.viewer.layers.events.inserted.connect(self._refresh_image_choices)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.viewer.layers.events.moved.connect(self._refresh_image_choices)
        self.viewer.dims.events.current_step.connect(self._on_dims)
        self._install_close_hooks()
        self._refresh_image_choices()
        self.refresh()
        self.training.start_warm_up()

    def _single_shot(self, interval_ms: int, callback) -> QTimer:
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(interval_ms)
        timer.timeout.connect(callback)
        return timer

    # ============================================================ options read ============
    @property
    def closed(self) -> bool:
        """True once the widget shut down: late callbacks then do nothing."""
        return self._closed

    def device(self) -> str:
        """The Device option ("auto", "cuda", "mps" or "cpu")."""
        return self.device_combo.currentText()

    def model_choice(self) -> str:
        """The Model option: "trainer" (trained on this image) or "bundle" (loaded)."""
        return self.model_combo.currentData() or "trainer"

    def train_settings(self):
        """(TrainConfig, ModelSpec) from the widget's options."""
        from ..core.models import ModelSpec
        from ..core.trainer import TrainConfig

        config = TrainConfig(
            **{
                "wait_for_points": True,
                "predict_every_s": float(self.interval_spin.value()),
                "predict_plane": self.current_plane(),
                "iters_per_step": int(self.iters_spin.value()),
                **self._forest_setting(),
                **self.train_overrides,
            }
        )
        config.min_iters_per_step = min(config.min_iters_per_step, config.iters_per_step)
        spec = ModelSpec(
            **{
                "arch": self.arch_combo.currentText(),
                "encoder": self.encoder_combo.currentText().strip(),
                **self.model_overrides,
            }
        )
        return config, spec

    def _forest_setting(self) -> dict:
        """TrainConfig fields of the Click forest option."""
        value = self.forest_combo.currentData() or "colour"
        return {"forest_trees": 0} if value == "off" else {"forest_on": value}

    # ======================================================= image and geometry ============
    def image_geometry(self) -> ImageGeometry:
        """The chosen image's axes under the current Channel axis option."""
        return ImageGeometry(self.image, self.channel_combo.currentText())

    def channel_axis(self):
        """'auto' resolved: the channel axis of the image array, or None."""
        return self.image_geometry().channel_axis()

    def spatial_shape(self) -> tuple[int, ...]:
        """(H, W) or (Z, H, W) of the chosen image (InputError when not 2D / 3D)."""
        return self.image_geometry().spatial_shape()

    def current_plane(self) -> int:
        """Index of the displayed slice of a 3D stack (0 for 2D)."""
        if self.image is None:
            return 0
        return self.image_geometry().plane_at(self.viewer.dims.point)

    def _refresh_image_choices(self, event=None) -> None:
        if self._closed:
            return
        layers = [layer for layer in self.viewer.layers if is_input_image(layer)]
        names = [layer.name for layer in layers]
        current = self.image.name if self.image is not None and self.image in layers else None
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current is not None:
            self.image_combo.setCurrentIndex(names.index(current))
        self.image_combo.blockSignals(False)
        if current is None:
            self.on_image_chosen()

    def _on_layer_removed(self, event) -> None:
        if self._closed:
            return
        layer = event.value
        if layer is self.image:
            self.training.forget_image(layer)
            self.image = None
        if layer is self.points.layer:
            self.points.release()
            self.schedule_sync()
        if layer is self.scribbles.layer:
            self.scribbles.release()
            self.schedule_sync()
        self.results.forget(layer)
        self._refresh_image_choices()
        self.refresh()

    def select_image(self, layer) -> None:
        """Make ``layer`` (an Image layer or its name) the image being annotated."""
        name = layer if isinstance(layer, str) else layer.name
        index = self.image_combo.findText(name)
        if index < 0:
            raise InputError(f"no image layer named {name!r}")
        self.image_combo.setCurrentIndex(index)
        self.on_image_chosen()

    def on_image_chosen(self, *_) -> None:
        """Slot of the Image choice: switch every part to the image named there."""
        name = self.image_combo.currentText()
        layer = next(
            (
                candidate
                for candidate in self.viewer.layers
                if is_input_image(candidate) and candidate.name == name
            ),
            None,
        )
        if layer is self.image:
            return
        if self.is_training:
            self.stop_training()
        self.training.switch_image(self.image, layer)
        self.image = layer
        self.jobs.bundle_model = None
        self.results.adopt(layer)
        self._update_channel_choices()
        if layer is not None:
            self.points.ensure_layer()
        else:
            self.points.release()
        self.scribbles.adopt()
        self.refresh_model_choices()
        self._update_counts()
        self.refresh()
        self.training.prepare_input()

    def _update_channel_choices(self) -> None:
        self.channel_combo.blockSignals(True)
        keep = self.channel_combo.currentText()
        self.channel_combo.clear()
        self.channel_combo.addItem("auto")
        self.channel_combo.addItem("none")
        if self.image is not None and not self.image.rgb:
            for axis in range(self.image.ndim):
                self.channel_combo.addItem(str(axis))
        index = self.channel_combo.findText(keep)
        self.channel_combo.setCurrentIndex(max(index, 0))
        self.channel_combo.blockSignals(False)

    def _on_dims(self, event=None) -> None:
        if self._closed or self.image is None or not self.image_geometry().is_stack():
            return
        self.training.on_plane(self.current_plane())
        self._plane_timer.start()

    # ============================================================ points ==================
    @property
    def points_layer(self):
        """The Points layer of the chosen image ("<image> points"), or None."""
        return self.points.layer

    def pick_class(self, value: int, relabel_selected: bool = False) -> None:
        """Class ``value`` for the next click (key 1-9); with relabel_selected also for the
        selection."""
        self.points.pick_class(value, relabel_selected)

    def relabel_selected(self, value: int) -> int:
        """Give the selected points class ``value``; returns how many changed."""
        return self.points.relabel_selected(value)

    def remove_last_point(self) -> None:
        """Delete the most recently clicked point."""
        self.points.remove_last()

    def add_points(self, coords, labels) -> None:
        """Append points (layer coordinates) with class ``labels``, after the existing ones."""
        self.points.add(coords, labels)

    def current_points(self) -> PointSet:
        """What trains: the clicks and the thinned scribble strokes in acquisition order, as a
        PointSet in the image's spatial axes (may be empty)."""
        return self.points.current()

    def paint_scribbles(self) -> None:
        """Make (or select) the "<image> scribbles" Labels layer, brush on the current class."""
        self.scribbles.ensure_layer()

    def on_class_chosen(self, value: int) -> None:
        """Slot of the class table: the next click gets class ``value``."""
        if self.points.layer is not None:
            self.points.reset_defaults(label=value)
        self.scribbles.on_class_chosen(value)
        self._update_hint()

    def on_classes_changed(self) -> None:
        """Slot of the class table: a class was added, renamed or recoloured."""
        self.points.recolour()
        self.results.recolour()
        self.scribbles.recolour()
        self._update_counts()

    def schedule_sync(self) -> None:
        """Hand the points to the trainer soon (edits come in bursts: debounced)."""
        if not self._closed:
            self._sync_timer.start()

    def stop_sync_timer(self) -> None:
        """Drop a pending hand-over (the caller hands the points itself)."""
        self._sync_timer.stop()

    def sync_points(self) -> None:
        """Debounced: hand the edited points to the running trainer; update counts."""
        if self._closed or self.image is None:
            return
        self._update_counts()
        self.refresh()
        self.training.hand_points()

    def _update_counts(self) -> None:
        values, counts = np.unique(self.points.labels(), return_counts=True)
        self.classes.set_counts(dict(zip(values.tolist(), counts.tolist())))
        self._update_hint()

    def _update_hint(self) -> None:
        if self.image is None:
            self.hint.setText("Open an image (File > Open Sample > Point Segmentation) and pick it above.")
            return
        value = self.classes.current_value()
        name = self.classes.name(value)
        if len(np.unique(self.points.labels())) < 2:
            layer_name = self.points.layer.name if self.points.layer else ""
            self.hint.setText(
                f"Click points on '{layer_name}' (add mode) or Paint strokes. Next click: class "
                f"{value} ({name}); keys 1-9 switch class. At least two classes "
                "are needed."
            )
        elif not self.is_training:
            self.hint.setText(f"Press Train. Next click: class {value} ({name}); keys 1-9 switch class.")
        else:
            self.hint.setText(
                f"Keep clicking where the prediction is wrong. Next click: class {value} ({name})."
            )

    # ============================================================ training ================
    @property
    def trainer(self):
        """The SparseTrainer of the chosen image, or None."""
        return self.training.trainer

    @property
    def last_update(self):
        """The latest TrainUpdate of the running training (None before the first)."""
        return self.training.last_update

    @property
    def stop_seconds(self) -> float | None:
        """How long the last Stop took until the training thread ended."""
        return self.training.stop_seconds

    @property
    def is_training(self) -> bool:
        """True while a training worker runs (also while it is stopping)."""
        return self.training.is_training

    @property
    def input_prepared(self) -> bool:
        """True once the chosen image's network input has been made ahead of Train."""
        return self.training.input_prepared

    @property
    def preparing(self) -> bool:
        """True while the chosen image's input is being prepared in the background."""
        return self.training.preparing

    def start_training(self) -> bool:
        """Train (or resume). Returns False (with a message) when it cannot start."""
        return self.training.start()

    def stop_training(self) -> None:
        """Ask the training to stop after the current iteration (returns at once)."""
        self.training.stop()

    def reset_training(self) -> None:
        """Fresh random network, replaying every point in click order."""
        self.training.reset()

    # ============================================================ jobs and results =======
    @property
    def busy(self) -> bool:
        """True while a job or a bundle load runs in a worker of its own."""
        return self.jobs.busy

    @property
    def bundle(self):
        """The model bundle loaded from disk, or None."""
        return self.jobs.bundle

    @property
    def prediction_layer(self):
        """The "<image> prediction" Labels layer, or None."""
        return self.results.prediction

    @property
    def suggestions_layer(self):
        """The "<image> suggestions" Points layer, or None."""
        return self.results.suggestions

    @property
    def n_predictions(self) -> int:
        """How many times the prediction layer was updated."""
        return self.results.n_predictions

    def run_job(self, job: Job) -> None:
        """Run ``job`` where the network lives: in the training loop, else in a worker."""
        self.jobs.run(job)

    def predict_all(self) -> None:
        """Predict the whole image (every slice) with the chosen model, in the background."""
        self.results.predict_all()

    def suggest_points(self, count: int | None = None) -> None:
        """Show the ``count`` places where the network is least sure as a 'suggestions' layer."""
        self.results.suggest(count)

    def accept_suggestions(self, value: int) -> int:
        """Selected suggestions (all if none selected) become points of class ``value``."""
        return self.results.accept(value)

    # ============================================================ files ===================
    @property
    def saved_model_path(self) -> Path | None:
        """Where the last Save model wrote the bundle (None until it is written)."""
        return self.files.saved_model_path

    def save_points(self, path: str | None = None) -> Path | None:
        """Write the points as CSV; asks for a path when none is given."""
        return self.files.save_points(path)

    def load_points(self, path: str | None = None) -> bool:
        """Replace the points by a points CSV; asks for a path when none is given."""
        return self.files.load_points(path)

    def save_model(self, path: str | None = None) -> None:
        """Save the trained network as a bundle (in the background)."""
        self.files.save_model(path)

    def load_model(self, path: str | None = None) -> None:
        """Load a model bundle (in the background); it becomes a choice under Model."""
        self.files.load_model(path)

    def export_prediction(self, path: str | None = None) -> Path | None:
        """Write the prediction as a TIFF label image; asks for a path when none is given."""
        return self.files.export_prediction(path)

    # ============================================================ state ===================
    def set_status(self, text: str) -> None:
        """Show ``text`` in the status line."""
        if not self._closed:
            self.status.setText(text)

    def report(self, text: str, note: str | None = None) -> None:
        """A result: ``text`` in the status line and ``note`` (default: ``text``) as an info
        notification."""
        self.set_status(text)
        if not self._closed:
            _messages.notify("info", note or text)

    def fail(self, message: str) -> None:
        """Show ``message`` in the status line and as an error notification."""
        self.set_status(message)
        _messages.notify("error", message)

    def refresh_model_choices(self, prefer_bundle: bool = False) -> None:
        """The Model choices: this image's network, and the loaded bundle if there is one."""
        keep = self.model_combo.currentData()
        bundle = self.jobs.bundle
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItem("trained on this image", "trainer")
        if bundle is not None:
            self.model_combo.addItem(f"loaded: {self.jobs.bundle_path.name}", "bundle")
        want = "bundle" if prefer_bundle or (self.trainer is None and bundle is not None) else keep
        index = self.model_combo.findData(want)
        self.model_combo.setCurrentIndex(max(index, 0))
        self.model_combo.blockSignals(False)
        self.refresh()

    def refresh(self) -> None:
        """Enable, disable and name the controls for the current state."""
        if self._closed:
            return
        has_image = self.image is not None
        training = self.is_training
        busy = self.busy
        n_points = self.points.count()
        has_model = self.jobs.model() is not None
        has_trainer = self.trainer is not None
        self.train_button.setText("Resume" if has_trainer and not training else "Train")
        self.train_button.setEnabled(has_image and not training and not busy)
        self.stop_button.setEnabled(training and self.training.stopping_at is None)
        self.reset_button.setEnabled(has_image and has_trainer and not busy)
        self.remove_last_button.setEnabled(n_points > 0)
        self.relabel_button.setEnabled(n_points > 0)
        self.scribble_button.setEnabled(has_image)
        self.predict_button.setEnabled(has_image and has_model and not busy)
        is_stack = has_image and self.image_geometry().is_stack()
        self.predict_button.setText("Predict all slices" if is_stack else "Predict image")
        self.export_button.setEnabled(self.results.prediction is not None)
        self.suggest_button.setEnabled(has_image and has_model and not busy)
        self.accept_button.setEnabled(self.results.has_suggestions())
        self.save_points_button.setEnabled(n_points > 0)
        self.load_points_button.setEnabled(has_image)
        self.save_model_button.setEnabled(has_trainer and not busy)
        self.load_model_button.setEnabled(not busy)
        self.image_combo.setEnabled(not training)
        self.advanced.setEnabled(not training)
        self.device_combo.setEnabled(not training)
        self.model_combo.setEnabled(self.model_combo.count() > 1)
        self._update_hint()

    # ============================================================ shutdown ================
    def _install_close_hooks(self) -> None:
        on_viewer_close(self, self.viewer, self.shutdown)
        add_stopper(self.shutdown)  # a script that exits without closing its viewer
        # if the widget is deleted without a close event, still stop the training threads
        controls = self.training.controls

        def on_destroyed(*_):
            for control in list(controls):
                control.abort = True

        self.destroyed.connect(on_destroyed)

    def shutdown(self) -> None:
        """Stop training and jobs (the viewer is closing). Safe to call more than once."""
        if self._closed:
            return
        self._stop_threads()
        self._closed = True
        self.jobs.close_activities()
        try:
            self._sync_timer.stop()
            self._plane_timer.stop()
            self.points.release()
            self.scribbles.release()
            self.viewer.layers.events.inserted.disconnect(self._refresh_image_choices)
            self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
            self.viewer.layers.events.moved.disconnect(self._refresh_image_choices)
            self.viewer.dims.events.current_step.disconnect(self._on_dims)
        except (TypeError, ValueError, RuntimeError):
            pass
        from qtpy.QtWidgets import QApplication

        app = QApplication.instance()
        try:
            app.aboutToQuit.disconnect(self.shutdown)
        except (TypeError, RuntimeError):
            pass

    def _stop_threads(self) -> None:
        training_workers = self.training.stop_threads()
        for worker in [training_workers[0], *self.jobs.workers, *training_workers[1:]]:
            if worker is not None:
                try:
                    worker.quit()
                except RuntimeError:
                    pass

    def closeEvent(self, event):  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)
