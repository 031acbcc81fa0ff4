"""napari sample-data contributions (see napari.yaml): image, ground truth and example points.

Each function returns napari LayerData tuples ``(data, metadata, layer_type)``; the ground truth
is hidden by default; ground truth and points are coloured by class with the project palette
(`core.overlay.label_colour`); the points carry ``label`` / ``order`` features like the widget's
layer.
"""

from __future__ import annotations

import numpy as np

from ..samples.files import load_sample
from ._layer_names import ground_truth_layer_name, points_layer_name

_CELL_CHANNELS = ["cells nuclear stain", "cells cytoplasm stain"]


def _image_layer(name: str, sample) -> tuple:
    if name == "cells":
        meta = {"name": _CELL_CHANNELS, "channel_axis": 0, "colormap": ["magenta", "green"]}
    elif sample.rgb:
        meta = {"name": name, "rgb": True}
    else:
        meta = {"name": name, "colormap": "gray"}
    return sample.image, meta, "image"


def _points_layer(name: str, points, size: float) -> tuple:
    from ..core.overlay import label_colour

    classes = np.unique(points.labels)
    meta = {
        "name": points_layer_name(name),
        "features": {"label": points.labels.copy(), "order": points.order.copy()},
        "face_color": "label",
        # a mapping, not a list: napari hands a list out in order of first appearance
        "face_color_cycle": {int(v): (*label_colour(int(v)), 1.0) for v in classes},
        "size": size,
    }
    return points.coords.copy(), meta, "points"


def _truth_layer(name: str, mask) -> tuple:
    from ..core.overlay import label_colour

    colours = {None: (0.0, 0.0, 0.0, 0.0)}
    colours.update({int(v): (*label_colour(int(v)), 1.0) for v in np.unique(mask)})
    meta = {"name": ground_truth_layer_name(name), "opacity": 0.4, "visible": False, "colormap": colours}
    return mask, meta, "labels"


def _sample_layers(name: str, point_size: float = 7.0) -> list[tuple]:
    sample = load_sample(name)
    return [
        _image_layer(name, sample),
        _truth_layer(name, sample.mask),
        _points_layer(name, sample.points, point_size),
    ]


def sample_nuclei() -> list[tuple]:
    """Fluorescence nuclei, uint16 (512, 512); classes 1 = background, 2 = nucleus."""
    return _sample_layers("nuclei")


def sample_cells() -> list[tuple]:
    """Two-channel cells, uint16 (2, 384, 384) split into two image layers;
    classes 1 = background, 2 = cytoplasm, 3 = nucleus."""
    return _sample_layers("cells")


def sample_tissue() -> list[tuple]:
    """H&E-like RGB tissue, uint8 (512, 512, 3); classes 1 = background/lumen, 2 = stroma,
    3 = nuclei."""
    return _sample_layers("tissue")


def sample_stack() -> list[tuple]:
    """3D nuclei stack, uint16 (24, 256, 256), points on a few z slices;
    classes 1 = background, 2 = nucleus."""
    return _sample_layers("stack", point_size=6.0)
