"""Widget 2 "Dataset training": the dataset pipeline (`napari_pointseg.dataset`) from napari.

Input: folders (DATA with images/ + points/ and/or masks/, optional TEST, OUT) or the open
Image layers with their "<image> points" layers (written to OUT/layers_input in the folder
layout; images without points are labelled by the dataset network). Run starts a napari
thread_worker (`.start()`) around `_dataset_worker.dataset_loop`; its events drive a progress
bar, a stage line and a log here; results and errors are also napari notifications. A run
opens no progress bar in napari's activity dock: while one is open napari animates an "in
progress" indicator that repaints the window ~25 times a second, and on 2 cores that made a
run 1.5-1.6x slower (docs/training.md, twenty-eighth session).
Cancel stops the run (finished images stay on disk, a rerun resumes). Results
open as layers; the final bundle (OUT/model.safetensors) can be loaded into "Annotate & train".
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import InputError
from . import _messages
from ._layer_names import (
    dataset_prediction_layer_name,
    find_layer,
    is_input_image,
    points_layer_name,
    prediction_layer_name,
    pseudo_label_layer_name,
)
from ._threads import add_stopper, on_viewer_close, start_worker
from ._tooltips import tip

MAX_RESULT_LAYERS = 4  # folder mode: open at most this many images + predictions


class DatasetWidget(QWidget):
    """Dock widget "Dataset training".

    Useful to scripts and tests: ``data_edit`` / ``test_edit`` / ``out_edit`` (folders),
    ``run()``, ``cancel()``, ``is_running``, ``summary`` (metrics of the last finished run),
    ``bundle_path``, ``worker``, ``overrides`` (dict merged into the PipelineOptions).
    """

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.worker = None
        self.summary: dict | None = None
        self.bundle_path: Path | None = None
        self.overrides: dict = {}
        self._cancel: threading.Event | None = None
        self._stage_total = 0
        self._stage_name = ""
        self._stage_unit = ""
        self._layer_mode_run = False
        self._closed = False
        self._build_ui()
        self._update_buttons()
        # a dock widget gets no closeEvent when the viewer closes: stop a run then, or at exit
        on_viewer_close(self, self.viewer, self.shutdown)
        add_stopper(self.shutdown)

    # ------------------------------------------------------------------------------ UI ----
    def _build_ui(self) -> None:
        lay = QVBoxLayout(self)
        images_box = QGroupBox("1 · Images")
        images_column = QVBoxLayout(images_box)
        row = QHBoxLayout()
        self.folders_radio = QRadioButton("Folders")
        self.layers_radio = QRadioButton("Open layers")
        self.folders_radio.setChecked(True)
        self.folders_radio.setToolTip(tip("dataset.folders"))
        self.layers_radio.setToolTip(tip("dataset.layers"))
        group = QButtonGroup(self)
        group.addButton(self.folders_radio)
        group.addButton(self.layers_radio)
        self.folders_radio.toggled.connect(self._update_buttons)
        row.addWidget(self.folders_radio)
        row.addWidget(self.layers_radio)
        images_column.addLayout(row)
        form = QFormLayout()
        self.data_edit = self._folder_row(form, "Data", tip("dataset.data"))
        self.test_edit = self._folder_row(form, "Test (optional)", tip("dataset.test"))
        self.out_edit = self._folder_row(form, "Output", tip("dataset.out"))
        images_column.addLayout(form)
        lay.addWidget(images_box)

        options_box = QGroupBox("2 · Options")
        options_form = QFormLayout(options_box)
        self.source_combo = QComboBox()
        self.source_combo.addItems(["auto", "points", "oracle"])
        self.source_combo.setToolTip(tip("dataset.source"))
        options_form.addRow("Annotation", self.source_combo)
        self.rate_spin = QDoubleSpinBox()
        self.rate_spin.setRange(0.0, 100.0)
        self.rate_spin.setDecimals(3)
        self.rate_spin.setSingleStep(0.05)
        self.rate_spin.setValue(0.0)
        self.rate_spin.setSuffix(" %")
        self.rate_spin.setSpecialValueText("all clicks / 0.1 %")
        self.rate_spin.setToolTip(tip("dataset.rate"))
        options_form.addRow("Labelled pixels", self.rate_spin)
        self.fraction_spin = QSpinBox()
        self.fraction_spin.setRange(1, 100)
        self.fraction_spin.setValue(100)
        self.fraction_spin.setSuffix(" %")
        self.fraction_spin.setToolTip(tip("dataset.fraction"))
        options_form.addRow("Annotated images", self.fraction_spin)
        self.iter_spin = QSpinBox()
        self.iter_spin.setRange(10, 1_000_000)
        self.iter_spin.setSingleStep(100)
        self.iter_spin.setValue(1500)
        self.iter_spin.setToolTip(tip("dataset.iterations"))
        options_form.addRow("Iterations", self.iter_spin)
        self.workers_spin = QSpinBox()
        self.workers_spin.setRange(1, 64)
        self.workers_spin.setToolTip(tip("dataset.workers"))
        options_form.addRow("Workers", self.workers_spin)
        self.scheduler_edit = QLineEdit()
        self.scheduler_edit.setPlaceholderText("tcp://host:8786 (optional)")
        self.scheduler_edit.setToolTip(tip("dataset.scheduler"))
        options_form.addRow("Dask scheduler", self.scheduler_edit)
        self.weights_edit = self._file_row(options_form, "Encoder weights", tip("dataset.weights"))
        self.grid_check = QCheckBox("Grid: 50 / 100 % images x 0.1 / 0.3 % pixels + full masks")
        self.grid_check.setToolTip(tip("dataset.grid"))
        options_form.addRow(self.grid_check)
        lay.addWidget(options_box)

        run_box = QGroupBox("3 · Run")
        run_column = QVBoxLayout(run_box)
        row = QHBoxLayout()
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip(tip("dataset.run"))
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip(tip("dataset.cancel"))
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.run_button)
        row.addWidget(self.cancel_button)
        run_column.addLayout(row)
        self.stage_label = QLabel("idle")
        self.stage_label.setToolTip(tip("dataset.stage"))
        run_column.addWidget(self.stage_label)
        self.progress_bar = QProgressBar()
        self.progress_bar.setToolTip(tip("dataset.progress"))
        run_column.addWidget(self.progress_bar)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setToolTip(tip("dataset.log"))
        self.log.setMinimumHeight(90)
        run_column.addWidget(self.log)
        self.load_button = QPushButton("Load final network in “Annotate && train”")
        self.load_button.setToolTip(tip("dataset.load"))
        self.load_button.clicked.connect(self.load_in_annotate)
        run_column.addWidget(self.load_button)
        lay.addWidget(run_box)
        lay.addStretch(1)

    def _folder_row(self, form: QFormLayout, label: str, tooltip: str) -> QLineEdit:
        edit = QLineEdit()
        edit.setToolTip(tooltip)
        btn = QPushButton("…")
        btn.setToolTip(tip("dataset.browse_folder", folder=label.lower()))
        btn.setMaximumWidth(32)
        btn.clicked.connect(lambda: self._browse(edit, folder=True))
        row = QHBoxLayout()
        row.addWidget(edit)
        row.addWidget(btn)
        form.addRow(label, row)
        edit._browse_button = btn
        return edit

    def _file_row(self, form: QFormLayout, label: str, tooltip: str) -> QLineEdit:
        edit = QLineEdit()
        edit.setToolTip(tooltip)
        btn = QPushButton("…")
        btn.setToolTip(tip("dataset.browse_file"))
        btn.setMaximumWidth(32)
        btn.clicked.connect(lambda: self._browse(edit, folder=False))
        row = QHBoxLayout()
        row.addWidget(edit)
        row.addWidget(btn)
        form.addRow(label, row)
        return edit

    def _browse(self, edit: QLineEdit, folder: bool) -> None:
        if folder:
            path = QFileDialog.getExistingDirectory(self, "Choose a folder", edit.text())
        else:
            path, _ = QFileDialog.getOpenFileName(
                self, "Weights file", "", "Weights (*.safetensors *.pth *.pt)"
            )
        if path:
            edit.setText(path)

    # ------------------------------------------------------------------------- state ------
    @property
    def is_running(self) -> bool:
        """True while a pipeline run (or its cancelling) is in progress."""
        return self.worker is not None

    def _update_buttons(self) -> None:
        busy = self.is_running
        self.run_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.data_edit.setEnabled(not busy and self.folders_radio.isChecked())
        self.data_edit._browse_button.setEnabled(not busy and self.folders_radio.isChecked())
        for control in (
            self.folders_radio,
            self.layers_radio,
            self.test_edit,
            self.out_edit,
            self.source_combo,
            self.rate_spin,
            self.fraction_spin,
            self.iter_spin,
            self.workers_spin,
            self.scheduler_edit,
            self.weights_edit,
            self.grid_check,
        ):
            control.setEnabled(not busy)
        self.load_button.setEnabled(not busy and self.bundle_path is not None and self.bundle_path.is_file())

    def _say(self, text: str) -> None:
        self.log.appendPlainText(text)

    # --------------------------------------------------------------------------- run ------
    def _options(self):
        from ..dataset.pipeline import PipelineOptions

        out = self.out_edit.text().strip()
        if not out:
            raise InputError("choose an output folder")
        layer_mode = self.layers_radio.isChecked()
        data = Path(out) / "layers_input" if layer_mode else Path(self.data_edit.text().strip() or "")
        if not layer_mode and not self.data_edit.text().strip():
            raise InputError("choose a data folder")
        test = self.test_edit.text().strip() or None
        rate = self.rate_spin.value() / 100 or None
        options = dict(
            data=data,
            out=Path(out),
            test=test,
            source=self.source_combo.currentText(),
            rate=rate,
            fraction=self.fraction_spin.value() / 100,
            workers=self.workers_spin.value(),
            scheduler=self.scheduler_edit.text().strip() or None,
            encoder_weights=self.weights_edit.text().strip() or None,
            dataset_config={"iterations": self.iter_spin.value()},
        )
        for key, value in self.overrides.items():
            merge = isinstance(value, dict) and isinstance(options.get(key), dict)
            options[key] = {**options[key], **value} if merge else value
        return PipelineOptions(**options)

    def _layer_images(self):
        """Open Image layers (+ their '<name> points' layers), captured in the main thread."""
        from napari.layers import Points

        from ._dataset_worker import LayerImage

        images = [layer for layer in self.viewer.layers if is_input_image(layer)]
        if not images:
            raise InputError("no Image layer is open")
        out = []
        for layer in images:
            points = None
            points_layer = find_layer(self.viewer, points_layer_name(layer.name))
            data = layer.data[0] if layer.multiscale else layer.data
            if isinstance(points_layer, Points) and len(points_layer.data):
                from ..core.points import PointSet
                from ..dataset.stacks import spatial_shape

                # a 3D stack keeps the points' z (the plane index): stage 1 splits it in planes
                ndim = 2 if layer.rgb else len(spatial_shape(np.shape(data)))
                points = PointSet.from_napari(points_layer.data, points_layer.features, spatial_ndim=ndim)
            out.append(LayerImage(layer.name, np.asarray(data), bool(layer.rgb), points))
        return out

    def run(self) -> None:
        """Start the pipeline in a background thread (progress, log, layers at the end)."""
        if self.is_running:
            return
        try:
            options = self._options()
            layers = self._layer_images() if self.layers_radio.isChecked() else None
        except InputError as exc:
            _messages.notify("error", f"Dataset training: {exc}")
            return
        from napari.qt.threading import create_worker

        from ._dataset_worker import dataset_loop

        grid = ([0.5, 1.0], [0.001, 0.003]) if self.grid_check.isChecked() else None
        self._cancel = threading.Event()
        self._layer_mode_run = layers is not None
        self.summary = None
        self.log.clear()
        self._say(f"output: {options.out}")
        worker = create_worker(dataset_loop, options, self._cancel, grid, layers, _start_thread=False)
        worker.yielded.connect(self._on_event)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self._update_buttons()
        start_worker(worker)

    def cancel(self) -> None:
        """Ask the run to stop (between images / iterations)."""
        if self.worker is None:
            return
        self._cancel.set()
        self.worker.quit()
        self.stage_label.setText("cancelling…")
        self._say("cancel requested; finished images are kept, Run resumes")

    # ------------------------------------------------------------------ worker events -----
    def _on_event(self, event) -> None:
        from ..dataset.events import Advance, Done, Message, Stage
        from ._dataset_worker import LayerResults

        if self._closed:  # late events of a run stopped by closing the viewer
            return
        if isinstance(event, Stage):
            self._stage_total = event.total
            self.progress_bar.setRange(0, max(1, event.total))
            self.progress_bar.setValue(0)
            self.stage_label.setText(f"{event.name} (0 / {event.total} {event.unit})")
            self._stage_name, self._stage_unit = event.name, event.unit
        elif isinstance(event, Advance):
            value = min(self.progress_bar.value() + event.n, self.progress_bar.maximum())
            self.progress_bar.setValue(value)
            self.stage_label.setText(
                f"{self._stage_name} ({value} / {self._stage_total} {self._stage_unit})"
                + (f" · {event.info}" if event.info else "")
            )
        elif isinstance(event, Message):
            if event.level == "error":
                self._on_error(InputError(event.text))
            else:
                self._say(("⚠ " if event.level == "warning" else "") + event.text)
        elif isinstance(event, Done):
            self._finished_run(event.summary)
        elif isinstance(event, LayerResults):
            for name, pred in event.predictions.items():
                self._add_labels(pred, dataset_prediction_layer_name(name))

    def _finished_run(self, summary: dict) -> None:
        self.summary = summary
        if "rows" in summary:  # grid
            out = Path(self.out_edit.text().strip())
            self.bundle_path = None
            self._say(f"grid written to {out / 'grid.json'} and grid.png")
            for row in summary["rows"]:
                self._say(
                    f"  images {row['fraction']:g}, pixels {row['rate']}: test mIoU "
                    + ("-" if row["miou"] is None else f"{row['miou']:.4f}")
                )
            _messages.notify(
                "info", f"Dataset training: grid of {len(summary['rows'])} runs written to {out}"
            )
            return
        self.bundle_path = Path(summary["bundle"])
        miou = "-" if summary.get("miou") is None else f"{summary['miou']:.4f}"
        self._say(
            f"done: {summary['n_annotated']} annotated, {summary['n_self_labelled']} self-labelled, "
            f"{len(summary['skipped'])} skipped; test mIoU {miou}; bundle {self.bundle_path}"
        )
        for skipped in summary["skipped"]:
            self._say(f"  skipped {skipped['name']}: {skipped['reason']}")
        _messages.notify(
            "info",
            f"Dataset training done: {summary['n_annotated']} annotated, "
            f"{summary['n_self_labelled']} self-labelled; test mIoU {miou}; network in {self.bundle_path}",
        )
        if summary["skipped"]:
            _messages.notify(
                "warning", f"Dataset training: {len(summary['skipped'])} image(s) skipped (see the log)"
            )
        if not self._layer_mode_run:
            self._open_folder_results(summary)

    def _open_folder_results(self, summary: dict) -> None:
        """Test images + predictions (or, without a test folder, images + pseudo-labels)."""
        import tifffile

        from ..core.images import read_image

        out = Path(summary["bundle"]).parent
        test = summary["options"].get("test")
        pairs = []
        if test and (out / "test_predictions").is_dir():
            from ..dataset.layout import scan_folder

            for item in scan_folder(test).items[:MAX_RESULT_LAYERS]:
                path = out / "test_predictions" / f"{item.name}.tif"
                if path.is_file():
                    pairs.append((item.name, item.image, path, prediction_layer_name(item.name)))
        else:
            pseudo = Path(summary["options"].get("pseudo_dir") or out / "pseudo")
            for name in list(summary["pseudo_labels"])[:MAX_RESULT_LAYERS]:
                pairs.append((name, None, pseudo / f"{name}_labels.tif", pseudo_label_layer_name(name)))
        for name, image_path, labels_path, layer_name in pairs:
            record = None
            try:
                if image_path is None:
                    image_path = summary["pseudo_labels"][name].get("image") or ""
                    from ..dataset.pseudo_labels import load_record

                    record = load_record(labels_path.parent, name)
                    image_path = record["image"] if record else image_path
                image = read_image(image_path)
                if record and record.get("plane") is not None:  # a plane of a 3D stack
                    from ..dataset.stacks import plane_for_display

                    image = plane_for_display(
                        image, record["plane"], summary["options"].get("channel_axis", "auto")
                    )
                self.viewer.add_image(image, name=name, rgb=image.ndim == 3 and image.shape[-1] in (3, 4))
                self._add_labels(tifffile.imread(labels_path), layer_name)
            except (InputError, OSError, KeyError, TypeError) as exc:
                self._say(f"cannot open {name}: {exc}")

    def _add_labels(self, labels: np.ndarray, name: str) -> None:
        labels = np.asarray(labels)
        if name in self.viewer.layers:
            self.viewer.layers[name].data = labels
        else:
            self.viewer.add_labels(labels, name=name, opacity=0.5)

    def _on_error(self, exc: BaseException) -> None:
        if self._closed:
            return
        text = _messages.error_text(exc)
        self._say(f"error: {text}")
        _messages.notify("error", f"Dataset training: {text}")

    def _on_finished(self) -> None:
        cancelled = self._cancel is not None and self._cancel.is_set()
        self.worker = None
        if self._closed:
            return
        if cancelled:
            _messages.notify("info", "Dataset training cancelled: finished images are kept, Run resumes")
        self.stage_label.setText("cancelled" if cancelled else "idle" if self.summary is None else "finished")
        self._update_buttons()

    # ---------------------------------------------------------------------- widget 1 ------
    def load_in_annotate(self) -> None:
        """Open "Annotate & train" and load the final bundle into it."""
        if self.bundle_path is None or not self.bundle_path.is_file():
            _messages.notify("warning", "Dataset training: no final network yet")
            return
        try:
            _, annotate = self.viewer.window.add_plugin_dock_widget("napari-pointseg", "Annotate & train")
            annotate.load_model(str(self.bundle_path))
        except Exception as exc:  # noqa: BLE001 - widget 1 missing or refused: say so, keep going
            _messages.notify(
                "warning",
                f"could not open Annotate & train ({type(exc).__name__}: "
                f"{exc}); load {self.bundle_path} there with 'Load model'",
            )

    def shutdown(self) -> None:
        """Stop a run (the viewer is closing, or Python exits). Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self.worker is not None:
            self._cancel.set()
            self.worker.quit()
        from qtpy.QtWidgets import QApplication

        app = QApplication.instance()
        try:
            app.aboutToQuit.disconnect(self.shutdown)
        except (TypeError, RuntimeError, AttributeError):
            pass

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)
