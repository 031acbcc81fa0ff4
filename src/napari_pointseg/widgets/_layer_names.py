"""The names of the layers the widgets make or look for, each spelled by one function.

A user's image "cells" gets "cells points" (clicks), "cells prediction", "cells suggestions"
and "cells uncertainty" from "Annotate & train"; the sample data adds "cells ground truth";
"Dataset training" adds "cells dataset prediction" and "cells pseudo-label". Other modules
(and the tests) call these functions instead of formatting the names themselves.
"""

from __future__ import annotations

UNCERTAINTY_SUFFIX = " uncertainty"


def points_layer_name(image: str) -> str:
    """The Points layer holding the clicks on ``image``."""
    return f"{image} points"


def scribbles_layer_name(image: str) -> str:
    """The Labels layer a user paints strokes on for ``image`` (0 = not painted)."""
    return f"{image} scribbles"


def prediction_layer_name(image: str) -> str:
    """The Labels layer of the live / whole-image prediction of ``image``."""
    return f"{image} prediction"


def suggestions_layer_name(image: str) -> str:
    """The Points layer of suggested places to click on ``image``."""
    return f"{image} suggestions"


def uncertainty_layer_name(image: str) -> str:
    """The Image layer of the network's uncertainty on ``image`` (an output, not an input)."""
    return f"{image}{UNCERTAINTY_SUFFIX}"


def ground_truth_layer_name(image: str) -> str:
    """The Labels layer of a sample image's ground truth."""
    return f"{image} ground truth"


def dataset_prediction_layer_name(image: str) -> str:
    """The Labels layer of the dataset network's prediction of an open layer ``image``."""
    return f"{image} dataset prediction"


def pseudo_label_layer_name(image: str) -> str:
    """The Labels layer of a dataset run's pseudo-labels of ``image``."""
    return f"{image} pseudo-label"


def is_input_image(layer) -> bool:
    """True for an Image layer a user would segment; False for the uncertainty maps that
    "Annotate & train" adds as Image layers (they are outputs, not images to learn from)."""
    from napari.layers import Image

    return isinstance(layer, Image) and not layer.name.endswith(UNCERTAINTY_SUFFIX)


def find_layer(viewer, name: str):
    """The layer called ``name`` in ``viewer``, or None."""
    return viewer.layers[name] if name in viewer.layers else None
