"""napari reader / writer contributions for point-seg points CSV files.

The file format is `napari_pointseg.core.points.PointSet`'s CSV: a header ``order,label,y,x``
(``z`` or more leading axes for nD data), one row per point, ``order`` = click rank. Reading
gives a Points layer whose ``features`` hold ``label`` and ``order`` and whose points are
coloured by class (the same palette as the prediction layer and the PNG figures).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.overlay import label_colour
from ..core.points import PointSet

__all__ = ["get_reader", "read_points", "write_points", "points_layer_kwargs", "class_colour_cycle"]


def class_colour_cycle(labels, overrides: dict | None = None) -> dict[int, tuple]:
    """{label value: RGBA} for ``labels``: `label_colour` unless ``overrides`` gives one."""
    overrides = overrides or {}
    out = {}
    for v in sorted({int(v) for v in np.asarray(labels).reshape(-1)}):
        rgb = overrides.get(v, label_colour(v))
        out[v] = (*[float(c) for c in rgb[:3]], 1.0)
    return out


def points_layer_kwargs(points: PointSet, name: str = "points", size: float = 7.0) -> dict:
    """Keyword arguments for a napari Points layer showing ``points`` coloured by class."""
    cycle = class_colour_cycle(points.labels)
    return {
        "name": name,
        "ndim": points.ndim,
        "features": {"label": points.labels.astype(np.int64), "order": points.order.astype(np.int64)},
        "face_color": "label",
        "face_color_cycle": cycle or {1: (*label_colour(1), 1.0)},
        "border_color": "white",
        "border_width": 0.1,
        "size": size,
    }


def _looks_like_points_csv(path: str) -> bool:
    try:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError):
        return False
    header = {h.strip().lower() for h in header}
    return {"label", "y", "x"} <= header


def get_reader(path):
    """npe2 reader hook: a function for a points CSV (header with label, y, x), else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = str(path)
    if not path.lower().endswith(".csv") or not _looks_like_points_csv(path):
        return None
    return read_points


def read_points(path) -> list[tuple]:
    """Read a points CSV into napari layer data ``[(data, kwargs, "points")]``."""
    if isinstance(path, list):
        return [layer for p in path for layer in read_points(p)]
    pts = PointSet.from_csv(path)
    kwargs = points_layer_kwargs(pts, name=Path(path).stem)
    kwargs["metadata"] = {"napari_pointseg": {"source": str(path)}}
    return [(pts.coords.copy(), kwargs, "points")]


def write_points(path: str, data, attributes: dict) -> list[str]:
    """npe2 single-layer writer: a Points layer with a ``label`` feature -> points CSV.

    Points without a label are skipped; ``order`` (click rank) is kept, renumbered 0..N-1.
    Raises InputError (shown by napari) when the layer has no ``label`` feature.
    """
    features = attributes.get("features")
    if features is None or "label" not in getattr(features, "columns", features):
        props = attributes.get("properties") or {}
        if "label" in props:
            features = props
        else:
            raise InputError(
                "this Points layer has no 'label' feature: give each point a class "
                "(the 'Annotate & train' widget does) before saving it as a points CSV"
            )
    pts = PointSet.from_napari(np.asarray(data), features).renumbered()
    path = str(path)
    if not path.lower().endswith(".csv"):
        path += ".csv"
    pts.to_csv(path)
    return [path]
