"""Ordered point sets: where a user (or the oracle) clicked, which class, in which order.

A point set holds N points of D spatial coordinates (D = 2: ``y, x``; D = 3: ``z, y, x``;
more leading axes are allowed), an integer class label per point and the acquisition order.
The order is what the trainer replays ("correct order"), so it is kept explicitly rather than
implied by the row position.

CSV format (one header line, one row per point)::

    order,label,y,x            # 2D
    order,label,z,y,x          # 3D
    order,label,t,z,y,x        # 4D

Label values are kept exactly as given: a prediction is written with the same values.
"""

from __future__ import annotations

import csv
import decimal
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .files import atomic_write

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_AXIS_NAMES = {2: ("y", "x"), 3: ("z", "y", "x"), 4: ("t", "z", "y", "x")}


def axis_names(ndim: int) -> tuple[str, ...]:
    """Column names for ``ndim`` spatial coordinates (``y, x`` last)."""
    if ndim in _AXIS_NAMES:
        return _AXIS_NAMES[ndim]
    return tuple(f"axis{i}" for i in range(ndim - 2)) + ("y", "x")


@dataclass
class PointSet:
    """Points in acquisition order.

    coords: float64 (N, D) array, pixel coordinates (row-major, ``y, x`` last).
    labels: int64 (N,) class label values as the user gave them.
    order:  int64 (N,) acquisition rank; rows are kept sorted by it.
    """

    coords: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    order: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.coords = np.asarray(self.coords, dtype=np.float64)
        if self.coords.ndim != 2:
            self.coords = self.coords.reshape(-1, 2)
        self.labels = as_int64(self.labels, "label").reshape(-1)
        if len(self.labels) != len(self.coords):
            raise InputError(f"{len(self.coords)} point coordinates but {len(self.labels)} labels")
        if self.order is None:
            self.order = np.arange(len(self.coords), dtype=np.int64)
        self.order = as_int64(self.order, "order").reshape(-1)
        if len(self.order) != len(self.coords):
            raise InputError("point order has a different length than the points")
        idx = np.argsort(self.order, kind="stable")
        self.coords, self.labels, self.order = self.coords[idx], self.labels[idx], self.order[idx]

    # -- basic properties -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.coords)

    @property
    def ndim(self) -> int:
        """Number of spatial coordinates per point."""
        return self.coords.shape[1]

    @property
    def classes(self) -> np.ndarray:
        """Sorted unique label values (int64)."""
        return np.unique(self.labels)

    def pixel_coords(self) -> np.ndarray:
        """Coordinates rounded to the nearest pixel, int64 (N, D)."""
        return np.rint(self.coords).astype(np.int64)

    def copy(self) -> "PointSet":
        return PointSet(self.coords.copy(), self.labels.copy(), self.order.copy())

    def head(self, n: int) -> "PointSet":
        """The first ``n`` points in acquisition order."""
        return PointSet(self.coords[:n], self.labels[:n], self.order[:n])

    def append(self, coords, labels) -> "PointSet":
        """A new set with ``coords`` (M, D) / ``labels`` (M,) added after the existing points."""
        coords = np.asarray(coords, dtype=np.float64).reshape(
            -1, self.ndim if len(self) else np.asarray(coords).shape[-1]
        )
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        start = int(self.order.max()) + 1 if len(self) else 0
        return PointSet(
            np.concatenate([self.coords.reshape(-1, coords.shape[1]), coords]),
            np.concatenate([self.labels, labels]),
            np.concatenate([self.order, np.arange(start, start + len(coords))]),
        )

    def renumbered(self) -> "PointSet":
        """Same points with order 0..N-1 (gaps from deleted points removed)."""
        return PointSet(self.coords.copy(), self.labels.copy(), np.arange(len(self)))

    # -- validation -------------------------------------------------------------------------
    def validate(self, spatial_shape: tuple[int, ...], min_classes: int = 2) -> None:
        """Raise InputError unless every point lies inside ``spatial_shape`` and there are at
        least ``min_classes`` distinct labels."""
        if len(self) == 0:
            raise InputError("no points given")
        if self.ndim != len(spatial_shape):
            raise InputError(
                f"points have {self.ndim} coordinates but the image has "
                f"{len(spatial_shape)} spatial axes {tuple(spatial_shape)}"
            )
        # compare the rounded floats, not an int cast: 1e300 or NaN would wrap around (with a
        # numpy warning) instead of being "outside"
        pix = np.rint(self.coords)
        bad = ~np.all((pix >= 0) & (pix < np.asarray(spatial_shape)), axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            where = ", ".join(_fmt(v) for v in self.coords[i])
            raise InputError(
                f"{int(bad.sum())} point(s) lie outside the image of shape {tuple(int(n) for n in spatial_shape)}, "
                f"e.g. order {int(self.order[i])} at ({where})"
            )
        if len(self.classes) < min_classes:
            raise InputError(
                f"points cover {len(self.classes)} class(es) {self.classes.tolist()}; "
                f"at least {min_classes} classes are needed to train"
            )

    # -- CSV --------------------------------------------------------------------------------
    def to_csv(self, path: str | Path) -> None:
        """Write ``order,label,<axes>`` rows in acquisition order (atomically)."""
        names = axis_names(self.ndim)
        with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["order", "label", *names])
            for o, lab, c in zip(self.order, self.labels, self.coords):
                w.writerow([int(o), int(lab), *[_fmt(v) for v in c]])

    @classmethod
    def from_csv(cls, path: str | Path) -> "PointSet":
        """Read a points CSV (see module docstring). Raises InputError on malformed files."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"points file not found: {path}")
        try:
            # utf-8-sig: Excel writes a byte-order mark that would otherwise spoil the header
            with open(path, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.reader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise InputError(f"cannot read points file {path}: {e}") from None
        rows = [r for r in rows if any(c.strip() for c in r)]
        if not rows:
            raise InputError(f"points file {path} is empty")
        header = [h.strip().lower() for h in rows[0]]
        if "label" not in header or "y" not in header or "x" not in header:
            raise InputError(f"points file {path}: header must contain label,y,x (got {','.join(rows[0])})")
        label_i = header.index("label")
        order_i = header.index("order") if "order" in header else None
        coord_cols = [i for i, h in enumerate(header) if i not in (label_i, order_i)]
        coords, labels, order = [], [], []
        for lineno, r in enumerate(rows[1:], start=2):
            if len(r) != len(header):
                raise InputError(
                    f"points file {path}, line {lineno}: expected {len(header)} fields, got {len(r)}"
                )
            try:
                labels.append(_parse_int(r[label_i], "label"))
                coords.append([float(r[i]) for i in coord_cols])
                if order_i is not None:
                    order.append(_parse_int(r[order_i], "order"))
            except ValueError as e:
                raise InputError(f"points file {path}, line {lineno}: {e}") from None
        if not coords:
            raise InputError(f"points file {path} has a header but no points")
        coords = np.asarray(coords, dtype=np.float64)
        if not np.all(np.isfinite(coords)):
            raise InputError(f"points file {path} has non-finite coordinates")
        if order and len(set(order)) != len(order):
            raise InputError(f"points file {path}: duplicate values in the order column")
        return cls(coords, np.asarray(labels), np.asarray(order) if order else None)

    # -- napari -----------------------------------------------------------------------------
    @classmethod
    def from_napari(
        cls,
        data: np.ndarray,
        features=None,
        label_column: str = "label",
        order_column: str = "order",
        spatial_ndim: int | None = None,
    ) -> "PointSet":
        """From napari Points ``data`` (N, D) and ``features`` (a DataFrame or dict of columns).

        Points without a label (NaN or missing) are dropped. If ``order`` is missing, the row
        order is taken as click order. With ``spatial_ndim`` only the last axes are kept.
        """
        data = np.asarray(data, dtype=np.float64)
        if data.ndim != 2:
            data = data.reshape(0, spatial_ndim or 2)
        n = len(data)
        feats = {} if features is None else features
        labels = _column(feats, label_column, n)
        order = _column(feats, order_column, n)
        if labels is None:
            raise InputError(f"points have no '{label_column}' feature")
        labels = np.asarray(labels, dtype=np.float64)
        keep = np.isfinite(labels)
        if order is None:
            order = np.arange(n, dtype=np.float64)
        order = np.asarray(order, dtype=np.float64)
        order = np.where(np.isfinite(order), order, np.arange(n) + 1e9)
        if spatial_ndim is not None:
            data = data[:, -spatial_ndim:]
        return cls(
            data[keep],
            labels[keep],  # as_int64 in __post_init__: exact or InputError
            np.argsort(np.argsort(order[keep], kind="stable"), kind="stable"),
        )


def _column(features, name: str, n: int):
    try:
        col = features[name]
    except (KeyError, TypeError, IndexError):
        return None
    col = np.asarray(col)
    return col if len(col) == n else None


def _fmt(v: float) -> str:
    """A plain number for CSVs and messages (never ``np.float64(...)``)."""
    v = float(v)
    return str(int(v)) if v.is_integer() else f"{v:.3f}" if np.isfinite(v) and abs(v) < 1e15 else repr(v)


def _parse_int(text: str, what: str) -> int:
    """An integer field of a CSV, exactly (no float rounding): ``7``, ``7.0``, ``7e0``.
    ValueError (one line) for fractions, inf / NaN, or values outside the int64 range."""
    text = text.strip()
    try:
        d = decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise ValueError(f"{what} '{text}' is not a number") from None
    if not d.is_finite() or d != d.to_integral_value():
        raise ValueError(f"{what} '{text}' is not an integer")
    if d.adjusted() > 30:  # keeps int() below from building a huge integer (1e999999)
        raise ValueError(f"{what} {text} is outside the 64-bit integer range")
    v = int(d)
    if not _INT64_MIN <= v <= _INT64_MAX:
        raise ValueError(f"{what} {text} is outside the 64-bit integer range")
    return v


def as_int64(values, what: str = "label") -> np.ndarray:
    """``values`` as int64, exactly, or InputError: no silent wrap-around (5000000000 stays
    5000000000; 1e30, inf, NaN or 2.5 are refused)."""
    a = np.asarray(values)
    if a.dtype == np.int64:
        return a
    if a.size == 0:
        return a.astype(np.int64)
    if a.dtype.kind in "biu":
        if a.dtype.kind == "u" and int(a.max()) > _INT64_MAX:
            raise InputError(f"{what} value {int(a.max())} is outside the 64-bit integer range")
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)):
            raise InputError(f"{what} values must be finite integers (got inf or NaN)")
        if not np.all(a == np.round(a)):
            raise InputError(f"{what} values must be integers")
        # 2**63 is exactly representable; anything at or above it does not fit
        if a.min() < -(2.0**63) or a.max() >= 2.0**63:
            raise InputError(f"{what} values must lie in the 64-bit integer range")
        return a.astype(np.int64)
    try:  # object / strings: Python integers of any size
        return np.asarray([_parse_int(str(v), what) for v in a.reshape(-1)], np.int64).reshape(a.shape)
    except ValueError as e:
        raise InputError(str(e)) from None
