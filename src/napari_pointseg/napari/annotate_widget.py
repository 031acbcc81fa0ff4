"""Widget 1, "Annotate & train": click points per class, watch a network learn the segmentation.

Flow (see /work/shared/DESIGN.md, "Flow of one interactive session"):

1. Pick an image layer. The widget creates (or reuses) a Points layer "<image> points" whose
   ``features`` hold ``label`` (class value, 1..) and ``order`` (click rank).
2. Train starts a napari ``thread_worker`` around `_worker.training_loop`, which builds the
   trainer (filter bank + random network) in the worker thread and drives
   ``SparseTrainer.run()``. Point edits are debounced (150 ms) and handed to the running
   trainer with ``set_points``: new clicks join in click order without a restart.
3. The worker forwards a throttled stream: predictions (every ``predict_every_s``) go into the
   non-editable Labels layer "<image> prediction", progress goes into the status line.
   The main thread only copies arrays into layers: no torch, no filtering, no prediction.

Nothing here imports torch at module import time.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import InputError
from ..core.images import guess_channel_axis
from ..core.models import ARCHITECTURES
from ..core.points import PointSet
from ._classes import ClassList
from ._threads import add_stopper, on_viewer_close, start_worker
from ._worker import (
    UNCERTAINTY_SUFFIX, BundleModel, Job, LoopControl, TrainRequest, is_input_image, job_runner,
    training_loop,
)

DEVICES = ("auto", "cuda", "mps", "cpu")
ENCODERS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "efficientnet-b0", "vgg11")
SYNC_DELAY_MS = 150


def _notify(kind: str, msg: str) -> None:
    from napari.utils import notifications

    {"error": notifications.show_error, "warning": notifications.show_warning,
     "info": notifications.show_info}[kind](msg)


def _error_text(e: BaseException) -> str:
    if isinstance(e, InputError):
        return str(e)
    return f"{type(e).__name__}: {e}"


class AnnotateWidget(QWidget):
    """Dock widget "Annotate & train".

    Attributes useful to scripts and tests: ``trainer`` (the SparseTrainer of the current
    image or None), ``points_layer``, ``prediction_layer``, ``is_training``,
    ``last_update`` (the latest TrainUpdate), ``train_overrides`` / ``model_overrides``
    (dicts merged into TrainConfig / ModelSpec when a trainer is built).
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.train_overrides: dict = {}
        self.model_overrides: dict = {}
        self.predict_every_s = 1.0
        self.trainer = None
        self.last_update = None
        self.n_predictions = 0          # prediction layer updates (tests, benchmark)
        self.bundle = None              # a model bundle loaded from disk
        self._bundle_path: Path | None = None
        self._bundle_model = None       # BundleModel for (bundle, image)
        self._trainers: dict[int, object] = {}   # id(image layer) -> trainer
        self._image = None
        self._points = None
        self._pred = None
        self._suggest = None
        self._uncert = None
        self._worker = None
        self._control: LoopControl | None = None
        self._job_workers: set = set()
        self._controls: set = set()       # LoopControl of live training loops
        self._closed = False
        self._stopping_at: float | None = None
        self._start_requested = False
        self._prepared = None            # (key, PreparedImage) of the chosen image, made ahead
        self._preparing_key = None
        self._background: set = set()    # input preparation: never blocks a button
        self._next_order = 0
        self._connected_points = None
        self._connected_image = None
        self._sync_timer = QTimer(self)
        self._sync_timer.setSingleShot(True)
        self._sync_timer.setInterval(SYNC_DELAY_MS)
        self._sync_timer.timeout.connect(self._sync_points)
        self._plane_timer = QTimer(self)
        self._plane_timer.setSingleShot(True)
        self._plane_timer.setInterval(250)
        self._plane_timer.timeout.connect(self._on_plane_settled)
        self._build_ui()
        self.viewer.layers.events.inserted.connect(self._refresh_image_choices)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.viewer.layers.events.moved.connect(self._refresh_image_choices)
        self.viewer.dims.events.current_step.connect(self._on_dims)
        self._install_close_hooks()
        self._refresh_image_choices()
        self._update_buttons()
        self._start_warm_up()

    def _start_warm_up(self) -> None:
        """Import torch in the background now, so that the first Train starts fast."""
        import sys

        if "segmentation_models_pytorch" in sys.modules:
            return
        from napari.qt.threading import create_worker

        from ._worker import warm_up

        worker = create_worker(warm_up, _start_thread=False)
        worker.errored.connect(lambda e: None)  # a real problem shows up again at Train
        worker.returned.connect(lambda _: self._prepare_input())
        worker.finished.connect(lambda w=worker: self._job_workers.discard(w))
        self._warm_up_worker = worker
        start_worker(worker)

    # =========================================================================== UI ======
    def _build_ui(self) -> None:
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)

        form = QFormLayout()
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image to annotate and segment (2D grey, RGB, "
                                    "multi-channel or a 3D stack)")
        self.image_combo.currentIndexChanged.connect(self._on_image_chosen)
        form.addRow("Image", self.image_combo)
        lay.addLayout(form)

        self.hint = QLabel()
        self.hint.setWordWrap(True)
        self.hint.setToolTip("What to do next")
        self.hint.setStyleSheet("color: #9ab;")
        lay.addWidget(self.hint)

        # -- classes and points
        box = QGroupBox("1 · Classes and points")
        bl = QVBoxLayout(box)
        self.classes = ClassList()
        self.classes.currentChanged.connect(self._on_class_chosen)
        self.classes.classesChanged.connect(self._on_classes_changed)
        bl.addWidget(self.classes)
        row = QHBoxLayout()
        self.remove_last_button = QPushButton("Remove last point")
        self.remove_last_button.setToolTip("Delete the most recently clicked point")
        self.remove_last_button.clicked.connect(self.remove_last_point)
        self.relabel_button = QPushButton("Relabel selected")
        self.relabel_button.setToolTip("Give the selected points the current class "
                                       "(or press 1-9 in select mode)")
        self.relabel_button.clicked.connect(lambda: self.relabel_selected(self.classes.current_value()))
        row.addWidget(self.remove_last_button)
        row.addWidget(self.relabel_button)
        bl.addLayout(row)
        lay.addWidget(box)

        # -- training
        box = QGroupBox("2 · Train")
        gl = QGridLayout(box)
        self.train_button = QPushButton("Train")
        self.train_button.setToolTip("Train a network on this image from the points, in the "
                                     "background. Keep clicking: new points join in click order.")
        self.train_button.clicked.connect(self.start_training)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop training after the current iteration (Resume continues)")
        self.stop_button.clicked.connect(self.stop_training)
        self.reset_button = QPushButton("Reset")
        self.reset_button.setToolTip("Discard the network and train a new random one, replaying "
                                     "all points in click order (also needed after adding a class)")
        self.reset_button.clicked.connect(self.reset_training)
        gl.addWidget(self.train_button, 0, 0)
        gl.addWidget(self.stop_button, 0, 1)
        gl.addWidget(self.reset_button, 0, 2)
        gl.addWidget(QLabel("Device"), 1, 0)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.setToolTip("auto: CUDA if available, else Apple MPS, else CPU. "
                                     "Takes effect at the next Train / Reset.")
        gl.addWidget(self.device_combo, 1, 1, 1, 2)
        self.status = QLabel("idle")
        self.status.setWordWrap(True)
        self.status.setToolTip("step · loss · points used / clicked · iterations per second · device")
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        gl.addWidget(self.status, 2, 0, 1, 3)
        lay.addWidget(box)

        # -- prediction and suggestions
        box = QGroupBox("3 · Prediction and suggestions")
        gl = QGridLayout(box)
        gl.addWidget(QLabel("Model"), 0, 0)
        self.model_combo = QComboBox()
        self.model_combo.setToolTip("Which network Predict / Suggest use: the one trained on "
                                    "this image, or a model bundle loaded from disk")
        self.model_combo.currentIndexChanged.connect(lambda _: self._update_buttons())
        gl.addWidget(self.model_combo, 0, 1, 1, 2)
        self.predict_button = QPushButton("Predict image")
        self.predict_button.setToolTip("Predict the whole image (every slice of a stack) with the "
                                       "chosen model")
        self.predict_button.clicked.connect(self.predict_all)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip("Save the prediction as a TIFF label image")
        self.export_button.clicked.connect(lambda: self.export_prediction())
        self.uncert_check = QCheckBox("uncertainty layer")
        self.uncert_check.setToolTip("Also show where the network is unsure (margin between "
                                     "the two most likely classes), updated by Predict / Suggest")
        gl.addWidget(self.predict_button, 1, 0)
        gl.addWidget(self.export_button, 1, 1)
        gl.addWidget(self.uncert_check, 1, 2)
        self.n_suggest = QSpinBox()
        self.n_suggest.setRange(1, 100)
        self.n_suggest.setValue(5)
        self.n_suggest.setToolTip("How many places to suggest")
        self.suggest_button = QPushButton("Suggest points")
        self.suggest_button.setToolTip("Show the places where the network is least sure (margin "
                                       "sampling with the PixelPick diversity heuristic) as a "
                                       "'suggestions' layer")
        self.suggest_button.clicked.connect(lambda: self.suggest_points())
        self.accept_button = QPushButton("Accept as class")
        self.accept_button.setToolTip("Turn the selected suggestions (all, if none is selected) "
                                      "into points of the current class")
        self.accept_button.clicked.connect(lambda: self.accept_suggestions(self.classes.current_value()))
        gl.addWidget(self.n_suggest, 2, 0)
        gl.addWidget(self.suggest_button, 2, 1)
        gl.addWidget(self.accept_button, 2, 2)
        lay.addWidget(box)

        # -- files
        box = QGroupBox("4 · Files")
        gl = QGridLayout(box)
        self.save_points_button = QPushButton("Save points…")
        self.save_points_button.setToolTip("Write the points as CSV (order,label,y,x)")
        self.save_points_button.clicked.connect(lambda: self.save_points())
        self.load_points_button = QPushButton("Load points…")
        self.load_points_button.setToolTip("Replace the points by a points CSV")
        self.load_points_button.clicked.connect(lambda: self.load_points())
        self.save_model_button = QPushButton("Save model…")
        self.save_model_button.setToolTip("Save the trained network, classes, normalisation and "
                                          "points as a .safetensors bundle")
        self.save_model_button.clicked.connect(lambda: self.save_model())
        self.load_model_button = QPushButton("Load model…")
        self.load_model_button.setToolTip("Load a model bundle; it can then predict any open "
                                          "image (choose it under Model)")
        self.load_model_button.clicked.connect(lambda: self.load_model())
        gl.addWidget(self.save_points_button, 0, 0)
        gl.addWidget(self.load_points_button, 0, 1)
        gl.addWidget(self.save_model_button, 1, 0)
        gl.addWidget(self.load_model_button, 1, 1)
        lay.addWidget(box)

        # -- advanced (collapsible)
        from superqt import QCollapsible

        self.advanced = QCollapsible("Advanced options")
        self.advanced.setToolTip("Network and input options; they apply at the next Train / Reset")
        self.advanced.toggleButton().setToolTip("Show / hide the network and input options")
        adv = QWidget()
        af = QFormLayout(adv)
        self.arch_combo = QComboBox()
        self.arch_combo.addItems(list(ARCHITECTURES))
        self.arch_combo.setToolTip("Network architecture (segmentation-models-pytorch), "
                                   "randomly initialised")
        self.encoder_combo = QComboBox()
        self.encoder_combo.setEditable(True)
        self.encoder_combo.addItems(list(ENCODERS))
        self.encoder_combo.setToolTip("Encoder name (any segmentation-models-pytorch encoder; "
                                      "`pointseg models` lists them). Random weights, no download.")
        self.iters_spin = QSpinBox()
        self.iters_spin.setRange(1, 1000)
        self.iters_spin.setValue(self._default_config().iters_per_step)
        self.iters_spin.setToolTip("Training iterations per step (a step admits the next point)")
        self.channel_combo = QComboBox()
        self.channel_combo.setToolTip("Which axis of the image holds channels. auto: RGB, or a "
                                      "first / last axis of size <= 4; none: grey or 3D stack")
        self.channel_combo.addItems(["auto", "none"])
        self.channel_combo.currentIndexChanged.connect(self._prepare_input)
        self.interval_spin = QDoubleSpinBox()
        self.interval_spin.setRange(0.2, 30.0)
        self.interval_spin.setSingleStep(0.5)
        self.interval_spin.setValue(self.predict_every_s)
        self.interval_spin.setSuffix(" s")
        self.interval_spin.setToolTip("Live prediction update interval while training")
        af.addRow("Architecture", self.arch_combo)
        af.addRow("Encoder", self.encoder_combo)
        af.addRow("Iterations per point", self.iters_spin)
        af.addRow("Channel axis", self.channel_combo)
        af.addRow("Live update every", self.interval_spin)
        self.advanced.addWidget(adv)
        lay.addWidget(self.advanced)
        lay.addStretch(1)

    @staticmethod
    def _default_config():
        from ..core.trainer import TrainConfig

        return TrainConfig()

    # ================================================================ image & layers ======
    def _image_layers(self):
        return [ly for ly in self.viewer.layers if is_input_image(ly)]

    def _refresh_image_choices(self, event=None) -> None:
        if self._closed:
            return
        layers = self._image_layers()
        names = [ly.name for ly in layers]
        current = self._image.name if self._image is not None and self._image in layers else None
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current is not None:
            self.image_combo.setCurrentIndex(names.index(current))
        self.image_combo.blockSignals(False)
        if current is None:
            self._on_image_chosen()

    def _on_layer_removed(self, event) -> None:
        if self._closed:
            return
        layer = event.value
        if layer is self._image:
            self.stop_training()
            self._trainers.pop(id(layer), None)
            self.trainer = None
            self._image = None
        if layer is self._points:
            self._disconnect_points()
            self._points = None
            self._schedule_sync()
        if layer is self._pred:
            self._pred = None
        if layer is self._suggest:
            self._suggest = None
        if layer is self._uncert:
            self._uncert = None
        self._refresh_image_choices()
        self._update_buttons()

    def select_image(self, layer) -> None:
        """Make ``layer`` (an Image layer or its name) the image being annotated."""
        name = layer if isinstance(layer, str) else layer.name
        idx = self.image_combo.findText(name)
        if idx < 0:
            raise InputError(f"no image layer named {name!r}")
        self.image_combo.setCurrentIndex(idx)
        self._on_image_chosen()

    def _on_image_chosen(self, *_) -> None:
        name = self.image_combo.currentText()
        layer = next((ly for ly in self._image_layers() if ly.name == name), None)
        if layer is self._image:
            return
        if self.is_training:
            self.stop_training()
        if self._image is not None and self.trainer is not None:
            self._trainers[id(self._image)] = self.trainer
        self._image = layer
        self.trainer = self._trainers.get(id(layer)) if layer is not None else None
        self._bundle_model = None
        self._pred = self._find_layer(f"{name} prediction") if layer is not None else None
        self._suggest = self._find_layer(f"{name} suggestions") if layer is not None else None
        self._uncert = self._find_layer(f"{name}{UNCERTAINTY_SUFFIX}") if layer is not None else None
        self._update_channel_choices()
        if layer is not None:
            self._ensure_points_layer()
        else:
            self._disconnect_points()
            self._points = None
        self._refresh_model_choices()
        self._update_counts()
        self._update_buttons()
        self._prepare_input()

    def _find_layer(self, name):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _update_channel_choices(self) -> None:
        self.channel_combo.blockSignals(True)
        keep = self.channel_combo.currentText()
        self.channel_combo.clear()
        self.channel_combo.addItem("auto")
        self.channel_combo.addItem("none")
        if self._image is not None and not self._image.rgb:
            for i in range(self._image.ndim):
                self.channel_combo.addItem(str(i))
        idx = self.channel_combo.findText(keep)
        self.channel_combo.setCurrentIndex(max(idx, 0))
        self.channel_combo.blockSignals(False)

    # -- geometry of the chosen image ------------------------------------------------------
    def _data_shape(self) -> tuple[int, ...]:
        data = self._image.data
        if isinstance(data, (list, tuple)):  # multiscale: level 0
            data = data[0]
        return tuple(int(s) for s in data.shape)

    def channel_axis(self):
        """'auto' resolved: the channel axis of the image array, or None."""
        shape = self._data_shape()
        txt = self.channel_combo.currentText()
        if self._image.rgb:
            return len(shape) - 1
        if txt == "none":
            return None
        if txt == "auto":
            return guess_channel_axis(shape, False)
        return int(txt)

    def _layer_channel_axis(self):
        """The channel axis among the *layer's* dims (RGB has none: napari hides it)."""
        return None if self._image.rgb else self.channel_axis()

    def spatial_shape(self) -> tuple[int, ...]:
        shape = list(self._data_shape())
        ca = self.channel_axis()
        if ca is not None:
            shape.pop(ca)
        if len(shape) not in (2, 3):
            raise InputError(f"image shape {tuple(self._data_shape())} has {len(shape)} spatial "
                             "axes after removing channels; 2D or 3D images are supported "
                             "(check Advanced options > Channel axis)")
        return tuple(shape)

    def _spatial_transform(self) -> dict:
        ca = self._layer_channel_axis()
        keep = [i for i in range(self._image.ndim) if i != ca]
        return {"scale": [self._image.scale[i] for i in keep],
                "translate": [self._image.translate[i] for i in keep]}

    def current_plane(self) -> int:
        """Index of the displayed slice of a 3D stack (0 for 2D)."""
        if self._image is None:
            return 0
        try:
            spatial = self.spatial_shape()
        except InputError:
            return 0
        if len(spatial) != 3:
            return 0
        ca = self._layer_channel_axis()
        z_axis = next(i for i in range(self._image.ndim) if i != ca)
        pos = self._image.world_to_data(self.viewer.dims.point)
        return int(np.clip(round(float(pos[z_axis])), 0, spatial[0] - 1))

    # -- points layer ----------------------------------------------------------------------
    @property
    def points_layer(self):
        return self._points

    @property
    def prediction_layer(self):
        return self._pred

    @property
    def suggestions_layer(self):
        return self._suggest

    def _colour_cycle(self, extra_labels=()) -> dict:
        from .io import class_colour_cycle

        values = set(self.classes.values()) | {int(v) for v in extra_labels}
        return class_colour_cycle(sorted(values), self.classes.colours())

    def _ensure_points_layer(self):
        if self._image is None:
            return None
        if self._points is not None and self._points in self.viewer.layers \
                and self._points.name == f"{self._image.name} points":
            return self._points
        name = f"{self._image.name} points"
        layer = self._find_layer(name)
        ndim = self._image.ndim
        if layer is None:
            layer = self._new_points_layer(np.zeros((0, ndim)), np.zeros(0, np.int64),
                                           np.zeros(0, np.int64), name)
            self.viewer.layers.selection.active = layer
            layer.mode = "add"
        else:
            self._adopt_points_layer(layer)
        self._points = layer
        self._connect_points(layer)
        return layer

    def _new_points_layer(self, coords, labels, order, name):
        from napari.layers import Points

        tf = {"scale": self._image.scale, "translate": self._image.translate}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layer = Points(
                coords, ndim=self._image.ndim, name=name,
                features={"label": np.asarray(labels, np.int64), "order": np.asarray(order, np.int64)},
                face_color="label", face_color_cycle=self._colour_cycle(labels),
                border_color="white", border_width=0.12, size=self._point_size(), **tf)
        layer.feature_defaults = {"label": self.classes.current_value(), "order": 0}
        self.viewer.add_layer(layer)
        return layer

    def _point_size(self) -> float:
        try:
            h, w = self.spatial_shape()[-2:]
        except InputError:
            return 6.0
        return float(np.clip(max(h, w) / 80, 3, 12))

    def _adopt_points_layer(self, layer) -> None:
        """An existing Points layer: make sure it has label / order features and class colours."""
        feats = layer.features
        n = len(layer.data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if "label" not in feats or "order" not in feats:
                new = {c: feats[c].to_numpy() for c in feats.columns}
                if "label" not in feats:
                    new["label"] = np.full(n, self.classes.current_value(), np.int64)
                if "order" not in feats:
                    new["order"] = np.arange(n, dtype=np.int64)
                layer.features = new
            labels = layer.features["label"].to_numpy()
            self.classes.ensure(labels[np.isfinite(labels.astype(float))].astype(np.int64))
            layer.face_color_cycle = self._colour_cycle(labels)
            layer.face_color = "label"
            layer.feature_defaults = {"label": self.classes.current_value(),
                                      "order": self._max_order(layer) + 1}

    @staticmethod
    def _max_order(layer) -> int:
        if len(layer.data) == 0 or "order" not in layer.features:
            return -1
        return int(np.nanmax(layer.features["order"].to_numpy().astype(float)))

    def _connect_points(self, layer) -> None:
        if self._connected_points is layer:
            return
        self._disconnect_points()
        layer.events.data.connect(self._on_points_data)
        layer.events.features.connect(self._on_points_features)
        for k in range(1, 10):
            layer.bind_key(str(k), self._make_key_handler(k), overwrite=True)
        self._connected_points = layer

    def _disconnect_points(self) -> None:
        layer = self._connected_points
        if layer is None:
            return
        try:
            layer.events.data.disconnect(self._on_points_data)
            layer.events.features.disconnect(self._on_points_features)
        except (TypeError, ValueError, RuntimeError):
            pass
        self._connected_points = None

    def _make_key_handler(self, k: int):
        def handler(layer):
            self.pick_class(k, relabel_selected=layer.mode == "select")
        handler.__doc__ = f"point-seg: class {k} for the next click"
        return handler

    def _on_points_data(self, event) -> None:
        layer = self._points
        if layer is None or self._closed:
            return
        action = str(getattr(event, "action", ""))
        if action.endswith("ADDED") or action == "added":
            n = len(layer.data)
            idx = sorted({int(i) % n for i in (getattr(event, "data_indices", ()) or ())} if n else ())
            if idx:
                order = layer.features["order"].to_numpy().astype(float)
                others = np.delete(order, idx) if len(idx) < len(order) else np.zeros(0)
                start = int(np.nanmax(others)) + 1 if len(others) else 0
                col = layer.features.columns.get_loc("order")
                for j, i in enumerate(i for i in idx if 0 <= i < len(order)):
                    layer.features.iat[i, col] = start + j
            layer.feature_defaults = {"label": self.classes.current_value(),
                                      "order": self._max_order(layer) + 1}
        if action.endswith("ING") or action in ("adding", "removing", "changing"):
            return
        self._schedule_sync()

    def _on_points_features(self, event=None) -> None:
        if self._points is not None and not self._closed:
            self._schedule_sync()

    def _schedule_sync(self) -> None:
        if not self._closed:
            self._sync_timer.start()

    # -- classes ---------------------------------------------------------------------------
    def pick_class(self, k: int, relabel_selected: bool = False) -> None:
        """Class ``k`` for the next click (key k); with relabel_selected also for the selection."""
        if self.classes.info(k) is None:
            self.classes.add_class(value=k)
            self._set_status(f"added class {k}; it reaches a running training after Reset")
        self.classes.set_current(k)
        if relabel_selected:
            self.relabel_selected(k)

    def _on_class_chosen(self, value: int) -> None:
        layer = self._points
        if layer is not None:
            layer.feature_defaults = {"label": int(value), "order": self._max_order(layer) + 1}
        self._update_hint()

    def _on_classes_changed(self) -> None:
        cycle = self._colour_cycle(self._point_labels())
        if self._points is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._points.face_color_cycle = cycle
                self._points.refresh_colors(update_color_mapping=False)
        if self._pred is not None:
            self._pred.colormap = self._label_colormap()
        self._update_counts()

    def _point_labels(self) -> np.ndarray:
        if self._points is None or "label" not in self._points.features:
            return np.zeros(0, np.int64)
        lab = self._points.features["label"].to_numpy().astype(float)
        return lab[np.isfinite(lab)].astype(np.int64)

    def relabel_selected(self, k: int) -> int:
        """Give the selected points class ``k``; returns how many changed."""
        layer = self._points
        if layer is None or not layer.selected_data:
            self._set_status("select points first (select mode: key 3 or S), then pick a class")
            return 0
        if self.classes.info(k) is None:
            self.classes.add_class(value=k, select=False)
        idx = sorted(layer.selected_data)
        col = layer.features.columns.get_loc("label")
        for i in idx:
            layer.features.iat[i, col] = int(k)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layer.face_color_cycle = self._colour_cycle(self._point_labels())
            layer.refresh_colors(update_color_mapping=False)
        layer.events.features()
        return len(idx)

    def remove_last_point(self) -> None:
        layer = self._points
        if layer is None or len(layer.data) == 0:
            return
        order = layer.features["order"].to_numpy().astype(float)
        i = int(np.nanargmax(order)) if np.isfinite(order).any() else len(order) - 1
        layer.selected_data = {i}
        layer.remove_selected()
        layer.feature_defaults = {"label": self.classes.current_value(),
                                  "order": self._max_order(layer) + 1}

    # -- reading the points ----------------------------------------------------------------
    def current_points(self) -> PointSet:
        """The points layer as a PointSet in the image's spatial axes (may be empty)."""
        layer = self._points
        spatial = self.spatial_shape()
        if layer is None or len(layer.data) == 0:
            return PointSet(np.zeros((0, len(spatial))), np.zeros(0, np.int64))
        data = np.asarray(layer.data, dtype=np.float64)
        ca = self._layer_channel_axis()
        if ca is not None and data.shape[1] == self._image.ndim:
            data = np.delete(data, ca, axis=1)
        return PointSet.from_napari(data, layer.features, spatial_ndim=len(spatial))

    def _sync_points(self) -> None:
        """Debounced: hand the edited points to the running trainer; update counts."""
        if self._closed or self._image is None:
            return
        self._update_counts()
        self._update_buttons()
        if self.trainer is None:
            return
        try:
            pts = self.current_points()
        except InputError as e:
            self._set_status(str(e))
            return
        known = set(int(c) for c in self.trainer.classes)
        keep = np.isin(pts.labels, list(known))
        notes = []
        if not keep.all():
            unknown = sorted(set(pts.labels[~keep].tolist()))
            notes.append(f"points of class {unknown} wait for Reset (the network was built "
                         f"for classes {sorted(known)})")
        pix = pts.pixel_coords()
        inside = np.all((pix >= 0) & (pix < np.asarray(self.spatial_shape())), axis=1)
        if not inside.all():
            notes.append(f"{int((~inside).sum())} point(s) outside the image are ignored")
        self._note = "; ".join(notes)
        if self._note:
            self._set_status(self._note)
        keep &= inside
        if not keep.all():
            pts = PointSet(pts.coords[keep], pts.labels[keep], pts.order[keep])
        try:
            self.trainer.set_points(pts)
        except InputError as e:
            self._set_status(str(e))
            _notify("warning", str(e))
            return

    def _update_counts(self) -> None:
        labels = self._point_labels()
        vals, counts = np.unique(labels, return_counts=True)
        self.classes.set_counts(dict(zip(vals.tolist(), counts.tolist())))
        self._update_hint()

    def _update_hint(self) -> None:
        if self._image is None:
            self.hint.setText("Open an image (File > Open Sample > Point Segmentation) and pick it above.")
            return
        labels = self._point_labels()
        cls = self.classes.current_value()
        name = self.classes.name(cls)
        if len(np.unique(labels)) < 2:
            self.hint.setText(f"Click points on '{self._points.name if self._points else ''}' "
                              f"(add mode). Next click: class {cls} ({name}); keys 1-9 switch "
                              "class. At least two classes are needed.")
        elif not self.is_training:
            self.hint.setText(f"Press Train. Next click: class {cls} ({name}); keys 1-9 switch class.")
        else:
            self.hint.setText(f"Keep clicking where the prediction is wrong. Next click: class "
                              f"{cls} ({name}).")

    # ================================================================ training ===========
    @property
    def is_training(self) -> bool:
        return self._worker is not None

    def _train_settings(self):
        """(TrainConfig, ModelSpec) from the widget's options."""
        from ..core.models import ModelSpec
        from ..core.trainer import TrainConfig

        cfg = TrainConfig(**{
            "wait_for_points": True,
            "predict_every_s": float(self.interval_spin.value()),
            "predict_plane": self.current_plane(),
            "iters_per_step": int(self.iters_spin.value()),
            **self.train_overrides})
        cfg.min_iters_per_step = min(cfg.min_iters_per_step, cfg.iters_per_step)
        spec = ModelSpec(**{"arch": self.arch_combo.currentText(),
                            "encoder": self.encoder_combo.currentText().strip(),
                            **self.model_overrides})
        return cfg, spec

    def _make_request(self, points: PointSet) -> TrainRequest:
        cfg, spec = self._train_settings()
        classes = sorted(set(self.classes.values()) | set(points.labels.tolist()))
        ca = self.channel_axis()
        key = self._prepare_key()
        prepared = self._prepared[1] if self._prepared and self._prepared[0] == key else None
        return TrainRequest(image=self._image.data, rgb=bool(self._image.rgb),
                            channel_axis=ca, points=points, classes=classes, config=cfg,
                            spec=spec, device=self.device_combo.currentText(),
                            prepared=prepared)

    # -- input prepared ahead of Train -------------------------------------------------------
    def _prepare_key(self):
        """What a prepared input depends on: layer, its data array, channel axis, RGB."""
        if self._image is None:
            return None
        try:
            ca = self.channel_axis()
            self.spatial_shape()
        except (InputError, ValueError, IndexError):
            return None
        return (id(self._image), id(self._image.data), ca, bool(self._image.rgb))

    def _prepare_input(self, *_) -> None:
        """Compute the chosen image's network input (filter bank) and warm up the network's
        kernels in the background while the user clicks: Train then starts with the first
        iteration instead of ~1-2 s of set-up. Needs torch imported (the warm-up calls this
        again when it is done)."""
        import sys

        if self._closed or self.is_training or "segmentation_models_pytorch" not in sys.modules:
            return
        key = self._prepare_key()
        if key is None or key == self._preparing_key or (self._prepared and self._prepared[0] == key):
            return
        self._prepared = None
        from napari.qt.threading import create_worker

        from ._worker import prepare_input

        cfg, spec = self._train_settings()
        worker = create_worker(prepare_input, self._image.data, key[2], key[3],
                               self.current_plane(), spec, max(2, len(self.classes.values())), cfg,
                               self.device_combo.currentText(), _start_thread=False)
        worker.returned.connect(lambda prep, k=key: self._on_prepared(k, prep))
        worker.errored.connect(lambda e: None)  # Train reports a real problem with the image
        worker.finished.connect(lambda w=worker: self._prepare_finished(w))
        self._background.add(worker)
        self._preparing_key = key
        start_worker(worker)

    @property
    def input_prepared(self) -> bool:
        """True once the chosen image's network input has been made ahead of Train."""
        return bool(self._prepared) and self._prepared[0] == self._prepare_key()

    def _on_prepared(self, key, prep) -> None:
        if not self._closed and key == self._prepare_key():
            self._prepared = (key, prep)

    def _prepare_finished(self, worker) -> None:
        self._background.discard(worker)
        self._preparing_key = None

    def start_training(self) -> bool:
        """Train (or resume). Returns False (with a message) when it cannot start."""
        if self._closed or self.is_training:
            return False
        if self._image is None:
            self._fail("pick an image layer first")
            return False
        self._sync_timer.stop()
        try:
            pts = self.current_points()
            spatial = self.spatial_shape()
            pts.validate(spatial, min_classes=2)
        except InputError as e:
            hint = (" — click points of at least two classes (keys 1-9 pick the class)"
                    if "class" in str(e) or "no points" in str(e) else "")
            self._fail(f"cannot train: {e}{hint}")
            return False
        if self.trainer is not None:
            known = set(int(c) for c in self.trainer.classes)
            keep = np.isin(pts.labels, list(known))
            if not keep.all():
                _notify("info", "new classes since the network was built: training a new network")
                self.trainer = None
            else:
                try:
                    self.trainer.set_points(pts)
                    self.trainer.config.predict_plane = self.current_plane()
                    self.trainer.config.predict_every_s = float(self.interval_spin.value())
                except InputError as e:
                    self._fail(f"cannot train: {e}")
                    return False
        source = self.trainer if self.trainer is not None else self._make_request(pts)
        self._start_worker(source)
        # add the (still empty) prediction layer while the worker builds the network: adding
        # a layer takes up to ~1 s of main-thread time on a software-OpenGL display, which
        # would otherwise delay the first prediction the user sees
        self._ensure_prediction_layer(np.uint8 if int(pts.labels.max()) < 256 else np.uint16)
        return True

    def _start_worker(self, source) -> None:
        from napari.qt.threading import create_worker

        control = LoopControl()
        worker = create_worker(training_loop, source, control, _start_thread=False)
        worker.image_layer = self._image   # whose network it trains (see _on_message)
        worker.discarded = False           # set by Reset: its network is thrown away
        worker.yielded.connect(lambda msg, w=worker: self._on_message(msg, w))
        worker.errored.connect(self._on_train_error)
        worker.finished.connect(lambda w=worker: self._on_worker_finished(w))
        self._worker, self._control = worker, control
        self._controls.add(control)
        self.last_update = None
        self._set_status("starting…" if source is self.trainer else "preparing the image and a new network…")
        self._update_buttons()
        start_worker(worker)

    def stop_training(self) -> None:
        """Ask the training to stop after the current iteration (returns at once)."""
        # Stop after Reset (while the old loop is still ending) cancels the pending restart:
        # the user's last word is Stop, so nothing may start training afterwards
        self._restart_after = None
        if self._worker is None:
            return
        self._stopping_at = time.perf_counter()
        if self.trainer is not None:
            self.trainer.stop()
        if self._control is not None:
            self._control.abort = True
        self._worker.quit()
        self._set_status("stopping…")
        self.stop_button.setEnabled(False)

    def reset_training(self) -> None:
        """Fresh random network, replaying every point in click order."""
        was_training = self.is_training
        old = self._worker
        self._trainers.pop(id(self._image), None)
        self.trainer = None
        if was_training:
            self.stop_training()
            old.discarded = True
            self._restart_after = old
        else:
            self._restart_after = None
            self.start_training()

    _restart_after = None

    def _on_message(self, msg, worker=None) -> None:
        if self._closed:
            return
        kind, payload = msg
        if worker is not None and kind in ("update", "trainer") and (
                worker.discarded or worker.image_layer is not self._image):
            # a loop that is ending after Reset, or after its image was removed / another
            # image was picked: its network and predictions belong to no layer shown now
            return
        if kind == "update":
            self._on_update(payload)
        elif kind == "trainer":
            self.trainer = payload
            self._trainers[id(self._image)] = payload
            self._sync_points()  # clicks made while the network was being built
            self._refresh_model_choices()
        elif kind == "status":
            self._set_status(payload)
        elif kind == "job":
            self._finish_job(*payload)

    def _on_update(self, upd) -> None:
        self.last_update = upd
        if upd.prediction is not None:
            self._show_prediction(upd.prediction, upd.plane)
        n_clicked = len(self._points.data) if self._points is not None else upd.n_points
        state = " · waiting for new points" if upd.waiting else ""
        note = f"\n{self._note}" if self._note else ""
        self._set_status(f"step {upd.step} · loss {upd.loss:.3f} · points {upd.n_active}/{n_clicked}"
                         f" · {upd.iters_per_second:.1f} it/s · {upd.device}{state}{note}")

    _note = ""

    def _on_train_error(self, exc) -> None:
        if self._closed:
            return
        self._fail(f"training failed: {_error_text(exc)}")
        if self.trainer is None:
            self._trainers.pop(id(self._image), None)

    def _on_worker_finished(self, worker) -> None:
        if worker is not self._worker:
            return
        self._worker = None
        control, self._control = self._control, None
        self._controls.discard(control)
        if self._closed:
            return
        if self._stopping_at is not None:
            self.stop_seconds = time.perf_counter() - self._stopping_at
            self._stopping_at = None
            u = self.last_update if self.trainer is not None else None
            self._set_status("stopped" + (f" at step {u.step} · loss {u.loss:.3f} · points "
                                          f"{u.n_active}/{u.n_points}" if u else ""))
        # jobs that arrived after the loop's last look run on their own
        if control is not None:
            while not control.jobs.empty():
                self.run_job(control.jobs.get_nowait())
        if self._restart_after is not None:
            self._restart_after = None
            self.start_training()
        self._update_buttons()

    stop_seconds: float | None = None

    # ============================================================== jobs ==================
    def _model_choice(self) -> str:
        data = self.model_combo.currentData()
        return data or "trainer"

    def _job_model(self):
        """The network Predict / Suggest use: the trainer, or the loaded bundle (lazy)."""
        if self._model_choice() == "bundle" and self.bundle is not None:
            return "bundle"
        return self.trainer

    def run_job(self, job: Job) -> None:
        """Run ``job`` where the network lives: in the training loop, else in a worker."""
        if self._closed:
            return
        model = self._job_model()
        if model is self.trainer and self._worker is not None and self._control is not None:
            self._control.jobs.put(job)
            return
        from napari.qt.threading import create_worker

        if model == "bundle":
            fn = job.fn
            spec = (self._image.data, self.channel_axis(), bool(self._image.rgb),
                    self.device_combo.currentText())

            def with_bundle(_unused, fn=fn, spec=spec):
                if self._bundle_model is None or self._bundle_model.bundle is not self.bundle:
                    self._bundle_model = BundleModel(self.bundle, spec[0], spec[1], spec[2], spec[3])
                return fn(self._bundle_model)

            job = Job(with_bundle, job.on_done, job.on_error, job.label)
            model = None
        worker = create_worker(job_runner, job, model, _start_thread=False)
        worker.returned.connect(lambda r, j=job: self._finish_job(j, r, None))
        worker.errored.connect(lambda e, j=job: self._finish_job(j, None, e))
        worker.finished.connect(lambda w=worker: self._job_done(w))
        self._job_workers.add(worker)
        self._update_buttons()
        start_worker(worker)

    def _job_done(self, worker) -> None:
        self._job_workers.discard(worker)
        if not self._closed:
            self._update_buttons()

    def _finish_job(self, job: Job, result, error) -> None:
        if self._closed:
            return
        if error is not None:
            if job.on_error is not None:
                job.on_error(error)
            else:
                self._fail(f"{job.label or 'task'} failed: {_error_text(error)}")
            return
        if job.on_done is not None:
            try:
                job.on_done(result)
            except InputError as e:
                self._fail(str(e))

    @property
    def busy(self) -> bool:
        return bool(self._job_workers)

    @property
    def preparing(self) -> bool:
        """True while the chosen image's input is being prepared in the background."""
        return bool(self._background)

    # -- prediction ------------------------------------------------------------------------
    def _label_colormap(self):
        from napari.utils.colormaps import DirectLabelColormap

        colours = {None: (0, 0, 0, 0), 0: (0, 0, 0, 0)}
        for v, rgba in self._colour_cycle(self._point_labels()).items():
            colours[v] = rgba
        return DirectLabelColormap(color_dict=colours)

    def _ensure_prediction_layer(self, dtype=np.uint8):
        name = f"{self._image.name} prediction"
        if self._pred is not None and self._pred in self.viewer.layers:
            return self._pred
        layer = self._find_layer(name)
        shape = self.spatial_shape()
        if layer is None or tuple(layer.data.shape) != shape:
            if layer is not None:
                self.viewer.layers.remove(layer)
            from napari.layers import Labels

            layer = Labels(np.zeros(shape, dtype), name=name, opacity=0.4,
                           colormap=self._label_colormap(), **self._spatial_transform())
            layer.editable = False
            self.viewer.add_layer(layer)
            if self._points is not None:  # keep the points on top, and the active layer
                self.viewer.layers.move(self.viewer.layers.index(layer),
                                        self.viewer.layers.index(self._points))
                self.viewer.layers.selection.active = self._points
        self._pred = layer
        return layer

    def _show_prediction(self, labels: np.ndarray, plane: int | None = None) -> None:
        """Copy a prediction (H, W) of ``plane`` — or the whole (Z, H, W) — into the layer."""
        if self._image is None:
            return
        hi = int(labels.max()) if labels.size else 0
        dtype = np.uint8 if hi < 256 else np.uint16 if hi < 65536 else np.int32
        layer = self._ensure_prediction_layer(dtype)
        if np.dtype(layer.data.dtype).itemsize < np.dtype(dtype).itemsize:
            layer.data = layer.data.astype(dtype)
        data = layer.data
        if data.ndim == 3 and labels.ndim == 2:
            data[int(plane or 0)] = labels
        else:
            data[...] = labels
        layer.refresh()
        self.n_predictions += 1
        self._update_buttons()

    def predict_all(self) -> None:
        """Predict the whole image (every slice) with the chosen model, in the background."""
        model = self._job_model()
        if model is None:
            self._fail("no network yet: train first, or load a model")
            return
        want_unc = self.uncert_check.isChecked()

        def fn(m):
            if not want_unc:
                return m.predict(None), None
            n = m.image.n_planes
            probas = [m.predict_proba(z) for z in range(n)]
            labels = [m.classes[np.argmax(p, 0)] for p in probas]
            from ..core.predict import uncertainty

            unc = [uncertainty(p, "margin") for p in probas]
            return (np.stack(labels) if m.image.is_3d else labels[0],
                    np.stack(unc) if m.image.is_3d else unc[0])

        def done(res):
            labels, unc = res
            self._show_prediction(labels)
            if unc is not None:
                self._show_uncertainty(unc)
            self._set_status("prediction of the whole image done")

        self._set_status("predicting the whole image…")
        self.run_job(Job(fn, self._for_current_image(done), label="prediction"))

    def _for_current_image(self, on_done):
        """``on_done`` of a job whose result belongs to the image chosen now: dropped if by
        then that image was removed or another one picked (wrong layer, maybe wrong shape)."""
        image = self._image

        def guarded(result):
            if self._image is image:
                on_done(result)
        return guarded

    def _show_uncertainty(self, unc: np.ndarray, plane: int | None = None) -> None:
        name = f"{self._image.name}{UNCERTAINTY_SUFFIX}"
        shape = self.spatial_shape()
        layer = self._uncert if self._uncert is not None and self._uncert in self.viewer.layers else self._find_layer(name)
        if layer is None or tuple(layer.data.shape) != shape:
            if layer is not None:
                self.viewer.layers.remove(layer)
            layer = self.viewer.add_image(np.zeros(shape, np.float32), name=name,
                                          colormap="magma", opacity=0.5, blending="additive",
                                          contrast_limits=(0, 1), **self._spatial_transform())
            if self._points is not None:
                self.viewer.layers.selection.active = self._points
        self._uncert = layer
        if layer.data.ndim == 3 and unc.ndim == 2:
            layer.data[int(plane or 0)] = unc
        else:
            layer.data[...] = unc
        layer.refresh()

    def export_prediction(self, path: str | None = None) -> Path | None:
        if self._pred is None:
            self._fail("nothing to export yet: train or predict first")
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export prediction",
                                                  f"{self._image.name}_prediction.tif",
                                                  "TIFF (*.tif *.tiff)")
            if not path:
                return None
        from ..core.session import write_labels

        try:
            out = write_labels(path, np.asarray(self._pred.data))
        except (OSError, InputError) as e:
            self._fail(f"cannot write {path}: {e}")
            return None
        self._set_status(f"prediction written to {out}")
        return out

    def _on_dims(self, event=None) -> None:
        if self._closed or self._image is None:
            return
        try:
            if len(self.spatial_shape()) != 3:
                return
        except InputError:
            return
        z = self.current_plane()
        if self.trainer is not None:
            self.trainer.config.predict_plane = z
            if self._worker is not None and self._control is not None:
                self._control.predict_now = self.last_update is not None and self.last_update.waiting
        self._plane_timer.start()

    def _on_plane_settled(self) -> None:
        """Idle and moved to a slice: predict it (a running training does so itself)."""
        if self._closed or self.is_training or self.trainer is None or self.busy:
            return
        z = self.current_plane()
        self.run_job(Job(lambda m: m.predict(z), lambda p: self._show_prediction(p, z),
                         label="slice prediction"))

    # -- suggestions -----------------------------------------------------------------------
    def suggest_points(self, n: int | None = None) -> None:
        """Show the ``n`` places where the network is least sure as a 'suggestions' layer."""
        model = self._job_model()
        if model is None:
            self._fail("no network yet: train first, or load a model")
            return
        try:
            from ..core.suggest import suggest_points as sampler
        except ImportError:
            self._fail("suggestions need napari_pointseg.oracle.samplers, which is not installed")
            return
        n = int(n or self.n_suggest.value())
        z = self.current_plane()
        try:
            pts = self.current_points()
        except InputError:
            pts = None
        exclude = None
        if pts is not None and len(pts):
            pix = pts.pixel_coords()
            if pts.ndim == 3:
                pix = pix[pix[:, 0] == z]
            exclude = pix[:, -2:]
        want_unc = self.uncert_check.isChecked()
        seed = int(time.time_ns() % (2**31))

        def fn(m):
            proba = m.predict_proba(z)
            excl = None
            if exclude is not None and len(exclude):  # clicked points: excluded and repelling
                excl = np.clip(exclude, 0, np.asarray(proba.shape[1:]) - 1)
            yx = sampler(proba.astype(np.float32), n, kind="margin", exclude=excl,
                         rng=np.random.default_rng(seed))
            unc = None
            if want_unc:
                from ..core.predict import uncertainty

                unc = uncertainty(proba, "margin")
            return np.asarray(yx), unc

        self._set_status("looking for uncertain places…")
        self.run_job(Job(fn, self._for_current_image(lambda r: self._show_suggestions(r[0], r[1], z)),
                         label="suggestion"))

    def _show_suggestions(self, yx: np.ndarray, unc, z: int) -> None:
        if self._image is None:
            return
        coords = np.asarray(yx, np.float64).reshape(-1, 2)
        spatial = self.spatial_shape()
        if len(spatial) == 3:
            coords = np.column_stack([np.full(len(coords), z, np.float64), coords])
        ca = self._layer_channel_axis()
        if ca is not None:  # points live in the layer's dims: put the channel axis back
            coords = np.insert(coords, ca, 0, axis=1)
        name = f"{self._image.name} suggestions"
        layer = self._suggest if self._suggest is not None and self._suggest in self.viewer.layers \
            else self._find_layer(name)
        if layer is None:
            layer = self.viewer.add_points(
                coords, name=name, symbol="ring", face_color="transparent",
                border_color="magenta", border_width=0.2, size=self._point_size() * 2.2,
                scale=self._image.scale, translate=self._image.translate)
            for k in range(1, 10):
                layer.bind_key(str(k), self._make_accept_handler(k), overwrite=True)
        else:
            layer.data = coords
        layer.selected_data = set()
        self._suggest = layer
        if unc is not None:
            self._show_uncertainty(unc, z)
        self.viewer.layers.selection.active = layer
        layer.mode = "select"
        self._set_status(f"{len(coords)} suggestions (magenta rings): select some and press a "
                         "class key 1-9, or 'Accept as class'")
        self._update_buttons()

    def _make_accept_handler(self, k: int):
        def handler(layer):
            self.accept_suggestions(k)
        handler.__doc__ = f"point-seg: accept suggestions as class {k}"
        return handler

    def accept_suggestions(self, k: int) -> int:
        """Selected suggestions (all if none selected) become points of class ``k``."""
        layer = self._suggest
        if layer is None or len(layer.data) == 0:
            return 0
        sel = sorted(layer.selected_data) or list(range(len(layer.data)))
        coords = np.asarray(layer.data)[sel]
        if self.classes.info(k) is None:
            self.classes.add_class(value=k, select=False)
        self.add_points(coords, [k] * len(coords))
        keep = np.setdiff1d(np.arange(len(layer.data)), sel)
        layer.selected_data = set()
        layer.data = np.asarray(layer.data)[keep]
        if len(keep) == 0 and self._points is not None:
            self.viewer.layers.selection.active = self._points
        return len(coords)

    def add_points(self, coords, labels) -> None:
        """Append points (layer coordinates) with class ``labels``, after the existing ones."""
        layer = self._ensure_points_layer()
        coords = np.asarray(coords, np.float64).reshape(len(labels), -1)
        start = self._max_order(layer) + 1
        for j, (c, lab) in enumerate(zip(coords, labels)):
            layer.feature_defaults = {"label": int(lab), "order": start + j}
            layer.add(c[None])
        layer.feature_defaults = {"label": self.classes.current_value(),
                                  "order": self._max_order(layer) + 1}
        layer.selected_data = set()

    # ============================================================== files =================
    def save_points(self, path: str | None = None) -> Path | None:
        if self._points is None:
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save points", f"{self._image.name}_points.csv",
                                                  "CSV (*.csv)")
            if not path:
                return None
        try:
            pts = self.current_points().renumbered()
            pts.to_csv(path)
        except (OSError, InputError) as e:
            self._fail(f"cannot save points: {e}")
            return None
        self._set_status(f"{len(pts)} points written to {path}")
        return Path(path)

    def load_points(self, path: str | None = None) -> bool:
        if self._image is None:
            self._fail("pick an image layer first")
            return False
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load points", "", "CSV (*.csv)")
            if not path:
                return False
        try:
            pts = PointSet.from_csv(path)
            spatial = self.spatial_shape()
            pts.validate(spatial, min_classes=1)
        except InputError as e:
            self._fail(f"cannot load points: {e}")
            return False
        self.classes.ensure(pts.labels)
        coords = pts.coords
        ca = self._layer_channel_axis()
        if ca is not None:
            coords = np.insert(coords, ca, 0, axis=1)
        layer = self._ensure_points_layer()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layer.face_color_cycle = self._colour_cycle(pts.labels)
            layer.selected_data = set()
            layer.data = coords
            layer.features = {"label": pts.labels.copy(), "order": np.arange(len(pts))}
            layer.face_color = "label"
            layer.refresh_colors(update_color_mapping=False)
        layer.feature_defaults = {"label": self.classes.current_value(), "order": len(pts)}
        self._schedule_sync()
        self._set_status(f"{len(pts)} points loaded from {Path(path).name}")
        return True

    def save_model(self, path: str | None = None) -> None:
        if self.trainer is None:
            self._fail("no trained network to save yet")
            return
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save model bundle",
                                                  f"{self._image.name}.safetensors",
                                                  "Model bundle (*.safetensors)")
            if not path:
                return
        names = {str(c.value): c.name for c in self.classes.classes}
        extra = {"class_names": names, "image": self._image.name}

        def fn(trainer):
            from ..core.bundle import save_trainer

            return save_trainer(path, trainer, extra=extra)

        self.saved_model_path = None
        self.run_job(Job(fn, self._model_saved, label="saving the model"))

    saved_model_path: Path | None = None

    def _model_saved(self, path) -> None:
        self.saved_model_path = Path(path)
        self._set_status(f"model saved to {path}")

    def load_model(self, path: str | None = None) -> None:
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self, "Load model bundle", "",
                                                  "Model bundle (*.safetensors)")
            if not path:
                return
        from napari.qt.threading import create_worker

        def load(p=path):
            from ..core.bundle import load_bundle
            from ._safe_import import import_torch

            import_torch()

            return load_bundle(p)

        worker = create_worker(load, _start_thread=False)
        worker.returned.connect(lambda b, p=path: self._model_loaded(b, p))
        worker.errored.connect(lambda e: self._fail(f"cannot load the model: {_error_text(e)}"))
        worker.finished.connect(lambda w=worker: self._job_done(w))
        self._job_workers.add(worker)
        self._update_buttons()
        start_worker(worker)

    def _model_loaded(self, bundle, path) -> None:
        if self._closed:
            return
        self.bundle = bundle
        self._bundle_path = Path(path)
        self._bundle_model = None
        names = (bundle.extra or {}).get("class_names", {})
        for v in bundle.classes:
            if int(v) >= 1:
                if self.classes.info(int(v)) is None:
                    self.classes.add_class(names.get(str(v)), value=int(v), select=False)
        self._refresh_model_choices(prefer_bundle=True)
        self._set_status(f"model loaded: {self._bundle_path.name} ({bundle.spec.arch}/"
                         f"{bundle.spec.encoder}, classes {list(bundle.classes)}) — Predict image "
                         "applies it to the chosen image")

    def _refresh_model_choices(self, prefer_bundle: bool = False) -> None:
        keep = self.model_combo.currentData()
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self.model_combo.addItem("trained on this image", "trainer")
        if self.bundle is not None:
            self.model_combo.addItem(f"loaded: {self._bundle_path.name}", "bundle")
        want = "bundle" if prefer_bundle or (self.trainer is None and self.bundle is not None) else keep
        idx = self.model_combo.findData(want)
        self.model_combo.setCurrentIndex(max(idx, 0))
        self.model_combo.blockSignals(False)
        self._update_buttons()

    # ============================================================== state =================
    def _set_status(self, text: str) -> None:
        if not self._closed:
            self.status.setText(text)

    def _fail(self, msg: str) -> None:
        self._set_status(msg)
        _notify("error", msg)

    def _update_buttons(self) -> None:
        if self._closed:
            return
        has_image = self._image is not None
        training = self.is_training
        n_points = len(self._points.data) if self._points is not None else 0
        has_model = self._job_model() is not None
        self.train_button.setText("Resume" if self.trainer is not None and not training else "Train")
        self.train_button.setEnabled(has_image and not training and not self.busy)
        self.stop_button.setEnabled(training and self._stopping_at is None)
        self.reset_button.setEnabled(has_image and self.trainer is not None and not self.busy)
        self.remove_last_button.setEnabled(n_points > 0)
        self.relabel_button.setEnabled(n_points > 0)
        self.predict_button.setEnabled(has_image and has_model and not self.busy)
        self.predict_button.setText("Predict all slices" if has_image and self._is_stack() else "Predict image")
        self.export_button.setEnabled(self._pred is not None)
        self.suggest_button.setEnabled(has_image and has_model and not self.busy)
        self.accept_button.setEnabled(self._suggest is not None and len(self._suggest.data) > 0)
        self.save_points_button.setEnabled(n_points > 0)
        self.load_points_button.setEnabled(has_image)
        self.save_model_button.setEnabled(self.trainer is not None and not self.busy)
        self.load_model_button.setEnabled(not self.busy)
        self.image_combo.setEnabled(not training)
        self.advanced.setEnabled(not training)
        self.device_combo.setEnabled(not training)
        self.model_combo.setEnabled(self.model_combo.count() > 1)
        self._update_hint()

    def _is_stack(self) -> bool:
        try:
            return len(self.spatial_shape()) == 3
        except InputError:
            return False

    # ============================================================== shutdown ==============
    def _install_close_hooks(self) -> None:
        on_viewer_close(self, self.viewer, self.shutdown)
        add_stopper(self.shutdown)  # a script that exits without closing its viewer
        # if the widget is deleted without a close event, still stop the training threads
        controls = self._controls

        def on_destroyed(*_):
            for c in list(controls):
                c.abort = True
        self.destroyed.connect(on_destroyed)

    def shutdown(self) -> None:
        """Stop training and jobs (the viewer is closing). Safe to call more than once."""
        if self._closed:
            return
        self._stop_threads()
        self._closed = True
        try:
            self._sync_timer.stop()
            self._plane_timer.stop()
            self._disconnect_points()
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
        for trainer in [self.trainer, *self._trainers.values()]:
            if trainer is not None:
                trainer.stop()
        for c in list(self._controls):
            c.abort = True
        for w in [self._worker, *self._job_workers, *self._background]:
            if w is not None:
                try:
                    w.quit()
                except RuntimeError:
                    pass

    def closeEvent(self, event):  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)
