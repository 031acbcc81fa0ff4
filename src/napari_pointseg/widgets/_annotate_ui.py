"""The controls of "Annotate & train", laid out (the view's ``setupUi``).

`build_ui` creates every control as an attribute of the AnnotateWidget (tests and scripts use
them by name: ``train_button``, ``status``, ``channel_combo``...) and connects each to the
widget method it triggers. Layout only: the behaviour lives in the widget and its parts.
"""

from __future__ import annotations

from qtpy.QtCore import QPoint, Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from ..core.models import ARCHITECTURES
from ._classes import ClassList
from ._tooltips import tip

DEVICES = ("auto", "cuda", "mps", "cpu")
ENCODERS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "efficientnet-b0", "vgg11")


def _button(text: str, tooltip: str, on_click) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tip(tooltip))
    button.clicked.connect(on_click)
    return button


def build_ui(view) -> None:
    """Create, lay out and connect the controls of ``view`` (an AnnotateWidget)."""
    layout = QVBoxLayout(view)
    layout.setContentsMargins(6, 6, 6, 6)
    form = QFormLayout()
    view.image_combo = QComboBox()
    view.image_combo.setToolTip(tip("annotate.image"))
    view.image_combo.currentIndexChanged.connect(view.on_image_chosen)
    form.addRow("Image", view.image_combo)
    layout.addLayout(form)
    view.hint = QLabel()
    view.hint.setWordWrap(True)
    view.hint.setToolTip(tip("annotate.hint"))
    view.hint.setStyleSheet("color: #9ab;")
    layout.addWidget(view.hint)
    layout.addWidget(_classes_box(view))
    layout.addWidget(_train_box(view))
    layout.addWidget(_results_box(view))
    layout.addWidget(_files_box(view))
    layout.addWidget(_advanced_box(view))
    layout.addStretch(1)


def _classes_box(view) -> QGroupBox:
    box = QGroupBox("1 · Classes and points")
    column = QVBoxLayout(box)
    view.classes = ClassList()
    view.classes.currentChanged.connect(view.on_class_chosen)
    view.classes.classesChanged.connect(view.on_classes_changed)
    column.addWidget(view.classes)
    row = QHBoxLayout()
    view.remove_last_button = _button("Remove last point", "annotate.remove_last", view.remove_last_point)
    view.relabel_button = _button(
        "Relabel selected", "annotate.relabel", lambda: view.relabel_selected(view.classes.current_value())
    )
    view.scribble_button = _button("Paint", "annotate.scribbles", view.paint_scribbles)
    row.addWidget(view.remove_last_button)
    row.addWidget(view.relabel_button)
    column.addLayout(row)
    row = QHBoxLayout()
    row.addWidget(view.scribble_button)
    view.keys_button = _keys_button()
    row.addWidget(view.keys_button)
    column.addLayout(row)
    return box


def _keys_button() -> QPushButton:
    """ "Keys": the keyboard shortcuts as its tooltip, shown at once on click."""
    button = QPushButton("Keys")
    button.setToolTip(tip("annotate.shortcuts"))
    button.clicked.connect(
        lambda: QToolTip.showText(button.mapToGlobal(QPoint(0, button.height())), button.toolTip(), button)
    )
    return button


def _train_box(view) -> QGroupBox:
    box = QGroupBox("2 · Train")
    grid = QGridLayout(box)
    view.train_button = _button("Train", "annotate.train", view.start_training)
    view.stop_button = _button("Stop", "annotate.stop", view.stop_training)
    view.reset_button = _button("Reset", "annotate.reset", view.reset_training)
    grid.addWidget(view.train_button, 0, 0)
    grid.addWidget(view.stop_button, 0, 1)
    grid.addWidget(view.reset_button, 0, 2)
    grid.addWidget(QLabel("Device"), 1, 0)
    view.device_combo = QComboBox()
    view.device_combo.addItems(DEVICES)
    view.device_combo.setToolTip(tip("annotate.device"))
    grid.addWidget(view.device_combo, 1, 1, 1, 2)
    view.status = QLabel("idle")
    view.status.setWordWrap(True)
    view.status.setToolTip(tip("annotate.status"))
    view.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
    grid.addWidget(view.status, 2, 0, 1, 3)
    return box


def _results_box(view) -> QGroupBox:
    box = QGroupBox("3 · Prediction and suggestions")
    grid = QGridLayout(box)
    grid.addWidget(QLabel("Model"), 0, 0)
    view.model_combo = QComboBox()
    view.model_combo.setToolTip(tip("annotate.model"))
    view.model_combo.currentIndexChanged.connect(lambda _: view.refresh())
    grid.addWidget(view.model_combo, 0, 1, 1, 2)
    view.predict_button = _button("Predict image", "annotate.predict", view.predict_all)
    view.export_button = _button("Export…", "annotate.export", lambda: view.export_prediction())
    view.uncert_check = QCheckBox("uncertainty layer")
    view.uncert_check.setToolTip(tip("annotate.uncertainty"))
    grid.addWidget(view.predict_button, 1, 0)
    grid.addWidget(view.export_button, 1, 1)
    grid.addWidget(view.uncert_check, 1, 2)
    view.n_suggest = QSpinBox()
    view.n_suggest.setRange(1, 100)
    view.n_suggest.setValue(5)
    view.n_suggest.setToolTip(tip("annotate.n_suggest"))
    view.suggest_button = _button("Suggest points", "annotate.suggest", lambda: view.suggest_points())
    view.accept_button = _button(
        "Accept as class", "annotate.accept", lambda: view.accept_suggestions(view.classes.current_value())
    )
    grid.addWidget(view.n_suggest, 2, 0)
    grid.addWidget(view.suggest_button, 2, 1)
    grid.addWidget(view.accept_button, 2, 2)
    return box


def _files_box(view) -> QGroupBox:
    box = QGroupBox("4 · Files")
    grid = QGridLayout(box)
    view.save_points_button = _button("Save points…", "annotate.save_points", lambda: view.save_points())
    view.load_points_button = _button("Load points…", "annotate.load_points", lambda: view.load_points())
    view.save_model_button = _button("Save model…", "annotate.save_model", lambda: view.save_model())
    view.load_model_button = _button("Load model…", "annotate.load_model", lambda: view.load_model())
    grid.addWidget(view.save_points_button, 0, 0)
    grid.addWidget(view.load_points_button, 0, 1)
    grid.addWidget(view.save_model_button, 1, 0)
    grid.addWidget(view.load_model_button, 1, 1)
    return box


def _scribble_options(view, form: QFormLayout) -> None:
    """Thinning of brush strokes: one pixel per N x N cell, at most M pixels per stroke."""
    scribbles = view.scribbles

    def spin(low, high, value, key, attribute, special=None):
        box = QSpinBox()
        box.setRange(low, high)
        box.setValue(value)
        box.setToolTip(tip(key))
        if special:
            box.setSpecialValueText(special)

        def changed(number):
            setattr(scribbles, attribute, int(number))
            view.schedule_sync()

        box.valueChanged.connect(changed)
        return box

    view.scribble_spacing_spin = spin(1, 256, scribbles.spacing, "annotate.scribble_spacing", "spacing")
    view.scribble_max_spin = spin(
        0, 100000, scribbles.max_per_stroke, "annotate.scribble_max", "max_per_stroke", "no cap"
    )
    form.addRow("Stroke spacing (px)", view.scribble_spacing_spin)
    form.addRow("Pixels per stroke", view.scribble_max_spin)


def _advanced_box(view) -> QWidget:
    from superqt import QCollapsible

    from ..core.trainer import TrainConfig

    view.advanced = QCollapsible("Advanced options")
    view.advanced.setToolTip(tip("annotate.advanced"))
    view.advanced.toggleButton().setToolTip(tip("annotate.advanced_toggle"))
    options = QWidget()
    form = QFormLayout(options)
    view.arch_combo = QComboBox()
    view.arch_combo.addItems(list(ARCHITECTURES))
    view.arch_combo.setToolTip(tip("annotate.arch"))
    view.encoder_combo = QComboBox()
    view.encoder_combo.setEditable(True)
    view.encoder_combo.addItems(list(ENCODERS))
    view.encoder_combo.setToolTip(tip("annotate.encoder"))
    view.iters_spin = QSpinBox()
    view.iters_spin.setRange(1, 1000)
    view.iters_spin.setValue(TrainConfig().iters_per_step)
    view.iters_spin.setToolTip(tip("annotate.iters"))
    view.forest_combo = QComboBox()
    for text, value in (("colour images", "colour"), ("every image", "always"), ("off", "off")):
        view.forest_combo.addItem(text, value)
    view.forest_combo.setToolTip(tip("annotate.forest"))
    view.channel_combo = QComboBox()
    view.channel_combo.setToolTip(tip("annotate.channel_axis"))
    view.channel_combo.addItems(["auto", "none"])
    view.channel_combo.currentIndexChanged.connect(view.training.prepare_input)
    view.interval_spin = QDoubleSpinBox()
    view.interval_spin.setRange(0.2, 30.0)
    view.interval_spin.setSingleStep(0.5)
    view.interval_spin.setValue(view.predict_every_s)
    view.interval_spin.setSuffix(" s")
    view.interval_spin.setToolTip(tip("annotate.interval"))
    form.addRow("Architecture", view.arch_combo)
    form.addRow("Encoder", view.encoder_combo)
    form.addRow("Iterations per point", view.iters_spin)
    form.addRow("Click forest", view.forest_combo)
    form.addRow("Channel axis", view.channel_combo)
    form.addRow("Live update every", view.interval_spin)
    _scribble_options(view, form)
    view.advanced.addWidget(options)
    return view.advanced
