"""Scribbles: brush strokes on a label image used as ordered point annotations.

ilastik / Convpaint users paint with a brush. A label image (napari Labels layer, or a label
TIFF on the command line) of the image's spatial shape holds the painted pixels: **0 = not
painted**, any other value = the class value of that pixel (the same values as point labels;
in napari they start at 1).

Each *stroke* (one napari paint event, i.e. one press-drag-release of the brush, or on the
command line one connected component) becomes an ordered group of labelled pixels. Strokes
keep the order they were painted in, so "correct order" training still holds. A stroke is
*thinned* before training so that one long stroke does not swamp the clicks:

1. at most one pixel per ``spacing`` x ``spacing`` cell of a fixed grid (the first pixel of
   the stroke that falls into the cell, in paint order);
2. then at most ``max_per_stroke`` of those, evenly spaced along the stroke.

Erasing (painting 0) removes pixels from their stroke; painting over a pixel with another
stroke moves it to the newer stroke. Thinning is recomputed from the pixels a stroke still
owns, so an erased pixel never trains. Changes without a stroke (undo / redo) are found by
comparing the image with what the history knows: erased pixels that come back with their
stroke's label return to that stroke and place; any other new paint is one more stroke.

Stroke order without a paint history (`strokes_from_labels`, the CLI's ``--scribbles``):
the connected components (8-connected in 2D, 26-connected in 3D) of each label value, the
components of one value largest first (ties: the one whose first pixel in raster order comes
first), interleaved across the label values in increasing order: the largest component of the
smallest value, then the largest of the next value, ..., then the second largest of each
value, and so on. Pixels within a component are in raster (row-major) order. Interleaving
gives the first training steps every class, as a user who alternates classes would.

Nothing here imports Qt or napari.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .points import PointSet, as_int64

DEFAULT_SPACING = 6
DEFAULT_MAX_PER_STROKE = 40


@dataclass
class ScribblePoints:
    """Thinned scribble pixels in paint order.

    coords: float64 (N, D) pixel coordinates (``y, x`` last), integral values.
    labels: int64 (N,) class values (never 0).
    stroke: int64 (N,) rank of the stroke each pixel belongs to (0 = painted first).
    after:  int64 (N,) acquisition rank of the last click made before the pixel's stroke was
            painted, on the scale of the clicks' ``order`` (-1: before every click).
    Rows are sorted by (stroke, position along the stroke).
    """

    coords: np.ndarray
    labels: np.ndarray
    stroke: np.ndarray
    after: np.ndarray

    def __len__(self) -> int:
        return len(self.coords)

    @classmethod
    def empty(cls, ndim: int = 2) -> "ScribblePoints":
        """No scribble points, ``ndim`` coordinates."""
        zero = np.zeros(0, np.int64)
        return cls(np.zeros((0, ndim)), zero, zero.copy(), zero.copy())

    def as_points(self) -> PointSet:
        """The scribble points alone as a PointSet, order 0..N-1 in paint order."""
        return PointSet(self.coords.copy(), self.labels.copy(), np.arange(len(self)))


def thin_stroke(pixels: np.ndarray, spacing: int = DEFAULT_SPACING, max_points: int = DEFAULT_MAX_PER_STROKE):
    """Indices of the pixels of one stroke to keep, in stroke order.

    pixels: int (M, D) pixel coordinates in paint order.
    spacing: keep at most one pixel per ``spacing``^D cell of a grid anchored at pixel 0
        (the first one in paint order); 1 keeps every pixel.
    max_points: then keep at most this many, evenly spaced along the stroke (0: no cap).
    Returns int64 (K,) increasing indices into ``pixels``.
    """
    pixels = np.asarray(pixels, np.int64)
    count = len(pixels)
    if count == 0:
        return np.zeros(0, np.int64)
    spacing = int(spacing)
    if spacing < 1:
        raise InputError(f"scribble spacing must be >= 1, got {spacing}")
    if spacing > 1:
        cells = pixels // spacing
        _, first = np.unique(cells, axis=0, return_index=True)
        keep = np.sort(first).astype(np.int64)
    else:
        keep = np.arange(count, dtype=np.int64)
    max_points = int(max_points)
    if max_points < 0:
        raise InputError(f"the scribble cap per stroke must be >= 0, got {max_points}")
    if max_points and len(keep) > max_points:
        picks = np.unique(np.round(np.linspace(0, len(keep) - 1, max_points)).astype(np.int64))
        keep = keep[picks]
    return keep


def strokes_from_labels(labels: np.ndarray) -> list[np.ndarray]:
    """Strokes of a painted label image whose paint order is unknown (see the module
    docstring for the rule): connected components per label value, largest first within a
    value, interleaved across values in increasing order.

    labels: integer array (H, W) or (Z, H, W); 0 = not painted.
    Returns a list of int64 arrays of flat (raveled, C-order) pixel indices, raster order
    within each stroke.
    """
    from scipy import ndimage

    labels = _as_label_image(labels)
    flat = labels.reshape(-1)
    structure = np.ones((3,) * labels.ndim, bool)
    per_value = []
    for value in np.unique(flat[flat != 0]):
        components, count = ndimage.label(labels == value, structure=structure)
        comp_flat = components.reshape(-1)
        painted = np.flatnonzero(comp_flat)  # raster order
        ids = comp_flat[painted]
        by_component = np.argsort(ids, kind="stable")
        bounds = np.searchsorted(ids[by_component], np.arange(1, count + 2))
        groups = [painted[by_component[bounds[i] : bounds[i + 1]]] for i in range(count)]
        groups.sort(key=lambda g: (-len(g), int(g[0])))
        per_value.append(groups)
    strokes = []
    for rank in range(max((len(g) for g in per_value), default=0)):
        strokes += [groups[rank] for groups in per_value if rank < len(groups)]
    return strokes


class ScribbleHistory:
    """The strokes painted on a label image of spatial ``shape``, in paint order.

    Feed it every stroke with `add_stroke` (the pixels the brush touched, in order, read
    against the label image after the stroke) and call `update` for changes that came
    without a stroke (undo / redo, replaced data): they become one more stroke (raster
    order) or, for erased pixels, leave their strokes. `points` turns the strokes into
    thinned, ordered scribble points.
    """

    def __init__(self, shape, dtype=np.int64):
        """shape: the label image's (H, W) or (Z, H, W); dtype: its integer dtype (the history
        keeps one copy of the image in it, plus an int32 stroke index per pixel)."""
        self.shape = tuple(int(n) for n in shape)
        size = int(np.prod(self.shape))
        self._known = np.zeros(size, dtype)  # label image as of the last stroke / update
        # stroke index of every pixel: -1 = none, <= -2 = erased from stroke -2 - owner
        self._owner = np.full(size, -1, np.int32)
        self._strokes: list[tuple[np.ndarray, int]] = []  # (flat pixels in order, after)
        self._values: list[int] = []  # the label of each stroke (0 when it holds several)

    @classmethod
    def from_labels(cls, labels: np.ndarray, after: int = -1) -> "ScribbleHistory":
        """A history for an already painted label image: its strokes by `strokes_from_labels`,
        all anchored ``after`` the click of that rank."""
        labels = _as_label_image(labels)
        history = cls(labels.shape, labels.dtype)
        for pixels in strokes_from_labels(labels):
            history.add_stroke(labels, pixels, after)
        history._known[:] = labels.reshape(-1)
        return history

    @property
    def stroke_count(self) -> int:
        """Strokes that still own at least one painted pixel."""
        return len(np.unique(self._owner[self._owner >= 0]))

    def painted_count(self) -> int:
        """Painted pixels that belong to a stroke."""
        return int((self._owner >= 0).sum())

    def add_stroke(self, labels: np.ndarray, pixels, after: int = -1) -> int:
        """Record one stroke.

        labels: the label image after the stroke (shape ``shape``; 0 = not painted).
        pixels: flat (C-order) indices of the pixels the stroke touched, in paint order
            (repeats and out-of-range indices are dropped).
        after: acquisition rank of the last click made before the stroke (-1: none).
        Touched pixels that are now 0 were erased: they leave their strokes. The others join
        this stroke with their current label. Returns the stroke's index, or -1 when it
        painted nothing.
        """
        flat = self._flat(labels)
        pixels = np.asarray(pixels, np.int64).reshape(-1)
        pixels = pixels[(pixels >= 0) & (pixels < flat.size)]
        _, first = np.unique(pixels, return_index=True)
        pixels = pixels[np.sort(first)]
        values = flat[pixels].astype(np.int64)
        self._known[pixels] = flat[pixels]
        erased = pixels[values == 0]
        owner = self._owner[erased]
        self._owner[erased] = np.where(owner >= 0, -2 - owner, owner)  # remembers the stroke
        painted = pixels[values != 0]
        if len(painted) == 0:
            return -1
        self._strokes.append((painted, int(after)))
        kinds = np.unique(values[values != 0])
        self._values.append(int(kinds[0]) if len(kinds) == 1 else 0)
        index = len(self._strokes) - 1
        self._owner[painted] = index
        return index

    def update(self, labels: np.ndarray, after: int = -1) -> int:
        """Take in changes made without a stroke (undo, redo, new data): pixels that differ
        from what the history knows. A pixel that was erased from a stroke and comes back
        with that stroke's label (undo of an erase, redo of a stroke) returns to its stroke
        and place; other painted ones form one new stroke (raster order); erased ones leave
        their strokes. Returns the number of changed pixels."""
        flat = self._flat(labels)
        changed = np.flatnonzero(flat != self._known)
        if len(changed) == 0:
            return 0
        former = -2 - self._owner[changed]
        values = flat[changed].astype(np.int64)
        stroke_values = np.asarray(self._values + [0], np.int64)
        back = (former >= 0) & (values != 0)
        back[back] = stroke_values[former[back]] == values[back]
        self._owner[changed[back]] = former[back]
        self._known[changed[back]] = flat[changed[back]]
        self.add_stroke(labels, changed[~back], after)
        return len(changed)

    def points(
        self,
        labels: np.ndarray,
        spacing: int = DEFAULT_SPACING,
        max_per_stroke: int = DEFAULT_MAX_PER_STROKE,
    ) -> ScribblePoints:
        """The thinned scribble points of every stroke (see `thin_stroke`), strokes in paint
        order. ``labels`` is the current label image; call `update` first if it may have
        changed without a stroke."""
        flat = self._flat(labels)
        coords, values, stroke, after = [], [], [], []
        rank = 0
        for index, (pixels, anchor) in enumerate(self._strokes):
            alive = pixels[self._owner[pixels] == index]
            alive = alive[flat[alive] != 0]
            if len(alive) == 0:
                continue
            where = np.stack(np.unravel_index(alive, self.shape), axis=1)
            keep = thin_stroke(where, spacing, max_per_stroke)
            coords.append(where[keep])
            values.append(flat[alive[keep]].astype(np.int64))
            stroke.append(np.full(len(keep), rank, np.int64))
            after.append(np.full(len(keep), anchor, np.int64))
            rank += 1
        if not coords:
            return ScribblePoints.empty(len(self.shape))
        return ScribblePoints(
            np.concatenate(coords).astype(np.float64),
            np.concatenate(values).astype(np.int64),
            np.concatenate(stroke),
            np.concatenate(after),
        )

    def _flat(self, labels: np.ndarray) -> np.ndarray:
        """``labels`` raveled without a copy (checked: shape, integer values)."""
        labels = np.asarray(labels)
        if labels.shape != self.shape:
            raise InputError(f"scribbles of shape {labels.shape} do not match {self.shape}")
        if labels.dtype.kind not in "biu":
            labels = as_int64(labels, "scribble label").reshape(labels.shape)
        if not np.can_cast(labels.dtype, self._known.dtype):  # data replaced by a wider type
            self._known = self._known.astype(np.int64)
        return labels.reshape(-1)


def merge_points(clicks: PointSet, scribbles: ScribblePoints) -> PointSet:
    """Clicks and scribble points in one acquisition order, renumbered 0..N-1.

    clicks: the clicked points; their ``order`` is on the scale of ``scribbles.after``.
    A stroke's pixels come right after the click of rank ``after`` (before every click for
    -1), after any click of the same rank, strokes in paint order, pixels in stroke order.
    Coordinates must have the same number of axes (an empty side may have any).
    """
    if len(scribbles) == 0:
        return clicks.renumbered()
    if len(clicks) == 0:
        return scribbles.as_points()
    if clicks.ndim != scribbles.coords.shape[1]:
        raise InputError(
            f"points have {clicks.ndim} coordinates but the scribbles {scribbles.coords.shape[1]}"
        )
    n_clicks, n_scribbles = len(clicks), len(scribbles)
    anchor = np.concatenate([clicks.order, scribbles.after]).astype(np.float64)
    kind = np.concatenate([np.zeros(n_clicks), np.ones(n_scribbles)])
    stroke = np.concatenate([np.zeros(n_clicks), scribbles.stroke])
    position = np.arange(n_clicks + n_scribbles)
    # np.lexsort: the last key is the primary one
    idx = np.lexsort((position, stroke, kind, anchor))
    coords = np.concatenate([clicks.coords, scribbles.coords])[idx]
    labels = np.concatenate([clicks.labels, scribbles.labels])[idx]
    return PointSet(coords, labels, np.arange(len(idx)))


def scribble_points(
    labels: np.ndarray,
    spacing: int = DEFAULT_SPACING,
    max_per_stroke: int = DEFAULT_MAX_PER_STROKE,
) -> PointSet:
    """A painted label image (0 = not painted) as ordered, thinned points, for the CLI: the
    strokes of `strokes_from_labels`, each thinned by `thin_stroke`. InputError when nothing
    is painted."""
    labels = _as_label_image(labels)
    points = ScribbleHistory.from_labels(labels).points(labels, spacing, max_per_stroke)
    if len(points) == 0:
        raise InputError("the scribbles image has no painted (non-zero) pixel")
    return points.as_points()


def _as_label_image(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim not in (2, 3):
        raise InputError(f"scribbles must be a 2D or 3D label image, got shape {labels.shape}")
    if labels.dtype.kind not in "biu":
        labels = as_int64(labels, "scribble label").reshape(labels.shape)
    return labels
