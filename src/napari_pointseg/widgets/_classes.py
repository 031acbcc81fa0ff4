"""The class list of the "Annotate & train" widget: label values, names and colours.

Label values start at 1 (napari shows 0 as "no label"); class ``k`` is picked with key ``k``
(1-9) for the next click. Colours default to `core.overlay.label_colour`, the palette shared
by the points, the prediction layer and the PNG figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QColorDialog,
    QHBoxLayout,
    QHeaderView,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core.overlay import label_colour
from ._tooltips import tip

DEFAULT_NAMES = {1: "background", 2: "foreground"}
_KEY, _NAME, _COUNT = 0, 1, 2


@dataclass
class ClassInfo:
    value: int
    name: str
    colour: tuple[float, float, float]

    @property
    def rgba(self) -> tuple[float, float, float, float]:
        """The colour with full opacity."""
        return (*self.colour, 1.0)


class ClassList(QWidget):
    """A small table: one row per class (key / colour, editable name, number of points)."""

    currentChanged = Signal(int)  # label value of the class for the next click
    classesChanged = Signal()  # a class was added, renamed or recoloured

    def __init__(self, parent=None):
        super().__init__(parent)
        self._classes: list[ClassInfo] = []
        self._updating = False
        self.table = QTableWidget(0, 3, self)
        self.table.setHorizontalHeaderLabels(["key", "class name", "points"])
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        hdr = self.table.horizontalHeader()
        hdr.setSectionResizeMode(_KEY, QHeaderView.ResizeToContents)
        hdr.setSectionResizeMode(_NAME, QHeaderView.Stretch)
        hdr.setSectionResizeMode(_COUNT, QHeaderView.ResizeToContents)
        self.table.setToolTip(tip("classes.table"))
        self.table.setMaximumHeight(150)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.table.itemChanged.connect(self._on_item_changed)
        self.table.cellDoubleClicked.connect(self._on_double_click)

        self.add_button = QPushButton("Add class")
        self.add_button.setToolTip(tip("classes.add"))
        self.add_button.clicked.connect(lambda: self.add_class())
        self.colour_button = QPushButton("Colour…")
        self.colour_button.setToolTip(tip("classes.colour"))
        self.colour_button.clicked.connect(lambda: self.choose_colour(self.current_value()))
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.add_button)
        row.addWidget(self.colour_button)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.table)
        lay.addLayout(row)
        for label in (1, 2):
            self.add_class(DEFAULT_NAMES[label], select=False)
        self.set_current(1)

    # -- model ------------------------------------------------------------------------------
    @property
    def classes(self) -> list[ClassInfo]:
        """The classes, by label value (a copy of the list)."""
        return list(self._classes)

    def values(self) -> list[int]:
        """The label values, ascending."""
        return [entry.value for entry in self._classes]

    def info(self, value: int) -> ClassInfo | None:
        """The class of label ``value``, or None."""
        for entry in self._classes:
            if entry.value == int(value):
                return entry
        return None

    def colours(self) -> dict[int, tuple[float, float, float]]:
        """{label value: RGB} of every class."""
        return {entry.value: entry.colour for entry in self._classes}

    def name(self, value: int) -> str:
        """The name of class ``value`` ("class N" for an unknown one)."""
        entry = self.info(value)
        return entry.name if entry else f"class {value}"

    def current_value(self) -> int:
        """The label value of the selected row: the class of the next click."""
        rows = self.table.selectionModel().selectedRows()
        if rows and rows[0].row() < len(self._classes):
            return self._classes[rows[0].row()].value
        return self._classes[0].value if self._classes else 1

    def add_class(
        self, name: str | None = None, value: int | None = None, colour=None, select: bool = True
    ) -> int:
        """Add (or rename) class ``value`` (default: highest + 1); returns its value."""
        if value is None:
            value = max(self.values(), default=0) + 1
        value = int(value)
        if value < 1:
            raise ValueError("class label values start at 1 (0 means 'no label' in napari)")
        existing = self.info(value)
        if existing is None:
            existing = ClassInfo(
                value,
                name or DEFAULT_NAMES.get(value, f"class {value}"),
                tuple(colour) if colour is not None else label_colour(value),
            )
            self._classes.append(existing)
            self._classes.sort(key=lambda entry: entry.value)
        elif name:
            existing.name = name
        self._rebuild()
        if select:
            self.set_current(value)
        self.classesChanged.emit()
        return value

    def ensure(self, values) -> None:
        """Add classes for label values that are not in the list yet (e.g. loaded points)."""
        new = [int(label) for label in values if int(label) >= 1 and self.info(int(label)) is None]
        for label in sorted(set(new)):
            self.add_class(value=label, select=False)

    def rename(self, value: int, name: str) -> None:
        """Call class ``value`` ``name``."""
        entry = self.info(value)
        if entry and name and entry.name != name:
            entry.name = name
            self._rebuild()
            self.classesChanged.emit()

    def set_colour(self, value: int, colour) -> None:
        """Give class ``value`` the RGB ``colour`` (0-1 floats)."""
        entry = self.info(value)
        if entry:
            entry.colour = tuple(float(channel) for channel in colour[:3])
            self._rebuild()
            self.classesChanged.emit()

    def set_current(self, value: int) -> bool:
        """Select class ``value`` for the next click; False when there is no such class."""
        for i, entry in enumerate(self._classes):
            if entry.value == int(value):
                self.table.selectRow(i)
                return True
        return False

    def set_counts(self, counts: dict[int, int]) -> None:
        """Show how many points each class has ({label value: count})."""
        self._updating = True
        try:
            for i, entry in enumerate(self._classes):
                item = self.table.item(i, _COUNT)
                if item is not None:
                    item.setText(str(int(counts.get(entry.value, 0))))
        finally:
            self._updating = False

    def choose_colour(self, value: int) -> None:
        """Ask the user for a new colour of class ``value`` (colour dialog)."""
        entry = self.info(value)
        if entry is None:
            return
        chosen = QColorDialog.getColor(QColor.fromRgbF(*entry.colour), self, f"Colour of {entry.name}")
        if chosen.isValid():
            self.set_colour(value, (chosen.redF(), chosen.greenF(), chosen.blueF()))

    # -- view -------------------------------------------------------------------------------
    def _rebuild(self) -> None:
        current = self.current_value() if self._classes and self.table.rowCount() else None
        self._updating = True
        try:
            self.table.setRowCount(len(self._classes))
            for i, entry in enumerate(self._classes):
                key = QTableWidgetItem(str(entry.value) if entry.value <= 9 else "")
                key.setFlags(Qt.ItemIsEnabled | Qt.ItemIsSelectable)
                key.setBackground(QColor.fromRgbF(*entry.colour))
                key.setForeground(QColor("black"))
                key.setTextAlignment(Qt.AlignCenter)
                key_note = tip("classes.key_suffix", value=entry.value) if entry.value <= 9 else ""
                key.setToolTip(tip("classes.key_cell", value=entry.value, key=key_note))
                name = QTableWidgetItem(entry.name)
                name.setFlags(Qt.ItemIsEnabled | Qt.ItemIsSelectable | Qt.ItemIsEditable)
                name.setToolTip(tip("classes.name_cell"))
                old = self.table.item(i, _COUNT)
                count = QTableWidgetItem(old.text() if old is not None else "0")
                count.setFlags(Qt.ItemIsEnabled | Qt.ItemIsSelectable)
                count.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                count.setToolTip(tip("classes.count_cell"))
                self.table.setItem(i, _KEY, key)
                self.table.setItem(i, _NAME, name)
                self.table.setItem(i, _COUNT, count)
        finally:
            self._updating = False
        if current is not None:
            self.set_current(current)

    def _on_selection(self) -> None:
        if not self._updating:
            self.currentChanged.emit(self.current_value())

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        if self._updating or item.column() != _NAME or item.row() >= len(self._classes):
            return
        self.rename(self._classes[item.row()].value, item.text().strip())

    def _on_double_click(self, row: int, col: int) -> None:
        if col == _KEY and row < len(self._classes):
            self.choose_colour(self._classes[row].value)
