"""Every tooltip of the plugin's widgets, in one table: name -> text.

Widgets look their tooltips up here (`tip`) instead of spelling them inline, so the wording is
reviewed in one place and the same control says the same thing in both widgets. A few texts
are templates filled in with `str.format` (their fields are named in braces).
"""

from __future__ import annotations

TOOLTIPS: dict[str, str] = {
    # -- "Annotate & train": image and hint
    "annotate.image": "The image to annotate and segment (2D grey, RGB, multi-channel or a 3D stack)",
    "annotate.hint": "What to do next",
    # -- classes and points
    "classes.table": (
        "Classes. The selected row is the class of the next click (keys 1-9 select "
        "it).\nDouble-click a name to rename it, double-click the key cell to change "
        "the colour."
    ),
    "classes.add": "Add a class (label value = highest + 1). A running training picks it up after Reset.",
    "classes.colour": "Change the colour of the selected class (points and prediction use it)",
    "classes.key_cell": "label value {value}{key}; double-click to change the colour",
    "classes.key_suffix": ", key {value}",
    "classes.name_cell": "double-click to rename",
    "classes.count_cell": "points of this class",
    "annotate.remove_last": "Delete the most recently clicked point",
    "annotate.relabel": "Give the selected points the current class (or press 1-9 in select mode)",
    "annotate.scribble_spacing": (
        "Thinning of brush strokes: a stroke trains on at most one pixel per N x N cell "
        "(1 = every painted pixel)"
    ),
    "annotate.scribble_max": "At most this many pixels of one stroke train, evenly along it (0 = no cap)",
    "annotate.scribbles": (
        "Paint strokes with the brush instead of clicking: adds (or selects) the Labels layer "
        "'<image> scribbles' in paint mode with the current class. Each stroke joins training "
        "after the clicks made before it, thinned (one pixel per small cell, a cap per "
        "stroke) so that it does not swamp the clicks; erased pixels leave training."
    ),
    # -- training
    "annotate.train": (
        "Train a network on this image from the points, in the background. Keep "
        "clicking: new points join in click order."
    ),
    "annotate.stop": "Stop training after the current iteration (Resume continues).",
    "annotate.shortcuts": (
        "<b>Keyboard shortcuts</b> (on the '&lt;image&gt; points' layer)"
        "<table cellspacing='0' cellpadding='2'>"
        "<tr><td><b>1</b>-<b>9</b></td><td>class of the next click (in select mode: also "
        "gives the selected points that class)</td></tr>"
        "<tr><td><b>P</b></td><td>add mode: click to place points</td></tr>"
        "<tr><td><b>S</b></td><td>select mode: drag to select points</td></tr>"
        "<tr><td><b>Z</b></td><td>pan / zoom mode</td></tr>"
        "<tr><td><b>Delete</b>, <b>Backspace</b></td><td>delete the selected points</td></tr>"
        "</table>"
        "<b>On the 'suggestions' layer</b>"
        "<table cellspacing='0' cellpadding='2'>"
        "<tr><td><b>1</b>-<b>9</b></td><td>accept the selected suggestions (all if none is "
        "selected) as points of that class</td></tr></table>"
        "The digits 2-5 that napari uses for modes pick classes here: use the letters. "
        "Progress and Cancel of long work: napari's activity dock (bottom right)."
    ),
    "annotate.reset": (
        "Discard the network and train a new random one, replaying all points in "
        "click order (also needed after adding a class)"
    ),
    "annotate.device": "auto: CUDA if available, else Apple MPS, else CPU. Takes effect at the next Train / Reset.",
    "annotate.status": "step · loss · points used / clicked · iterations per second · device",
    # -- prediction and suggestions
    "annotate.model": (
        "Which network Predict / Suggest use: the one trained on this image, or a "
        "model bundle loaded from disk"
    ),
    "annotate.predict": "Predict the whole image (every slice of a stack) with the chosen model",
    "annotate.export": "Save the prediction as a TIFF label image",
    "annotate.uncertainty": (
        "Also show where the network is unsure (margin between the two most "
        "likely classes), updated by Predict / Suggest"
    ),
    "annotate.n_suggest": "How many places to suggest",
    "annotate.suggest": (
        "Show the places where the network is least sure (margin sampling with "
        "the PixelPick diversity heuristic) as a 'suggestions' layer"
    ),
    "annotate.accept": "Turn the selected suggestions (all, if none is selected) into points of the current class",
    # -- files
    "annotate.save_points": "Write the points as CSV (order,label,y,x)",
    "annotate.load_points": "Replace the points by a points CSV",
    "annotate.save_model": (
        "Save the trained network, classes, normalisation and points as a .safetensors bundle"
    ),
    "annotate.load_model": "Load a model bundle; it can then predict any open image (choose it under Model)",
    # -- advanced options
    "annotate.advanced": "Network and input options; they apply at the next Train / Reset",
    "annotate.advanced_toggle": "Show / hide the network and input options",
    "annotate.arch": "Network architecture (segmentation-models-pytorch), randomly initialised",
    "annotate.encoder": (
        "Encoder name (any segmentation-models-pytorch encoder; `pointseg models` "
        "lists them). Random weights, no download."
    ),
    "annotate.iters": "Training iterations per step (a step admits the next point)",
    "annotate.forest": (
        "Give the network's full-resolution head the class probabilities of a random forest "
        "fitted on your clicks (every colour channel's features): on colour images (default), "
        "on every image, or off. The network still makes the prediction. Read when training "
        "starts (Train, or Train after Reset)"
    ),
    "annotate.channel_axis": (
        "Which axis of the image holds channels. auto: RGB, or a first / last "
        "axis of size <= 4; none: grey or 3D stack"
    ),
    "annotate.interval": "Live prediction update interval while training",
    # -- "Dataset training"
    "dataset.folders": "DATA/images + DATA/points (clicks) and/or DATA/masks (oracle); matched by file name",
    "dataset.layers": (
        "Every open Image layer; its '<image> points' layer (from Annotate & train) "
        "annotates it; images without points are labelled by the dataset network"
    ),
    "dataset.data": "Folder with images/, points/ and/or masks/",
    "dataset.test": "Folder with images/ and masks/: predictions and test mIoU",
    "dataset.out": "Where pseudo-labels, networks, metrics go",
    "dataset.browse_folder": "Choose the {folder} folder",
    "dataset.browse_file": "Choose a .safetensors / .pth file",
    "dataset.source": "auto: an image's points CSV if it has one, else the oracle reveals pixels of its mask",
    "dataset.rate": (
        "Labelled pixels per image: the oracle's budget, or only the first clicks of a "
        "points file (0: all clicks; oracle 0.1 %)"
    ),
    "dataset.fraction": (
        "Share of the annotatable images to annotate; the network trained on them "
        "labels the rest (self-training)"
    ),
    "dataset.iterations": "Training iterations of the dataset network (mini-batches of crops)",
    "dataset.workers": "Per-image networks in parallel processes (torch threads = cores / workers)",
    "dataset.scheduler": "Run the per-image networks on a Dask cluster at this address",
    "dataset.weights": "Optional LOCAL weights file for the dataset network's encoder (never downloaded)",
    "dataset.grid": "Table-2-style grid (needs a test folder); writes grid.json and grid.png",
    "dataset.run": "Run the pipeline in the background; a rerun skips finished images",
    "dataset.cancel": "Stop after the current step; finished images are kept (Run resumes).",
    "dataset.stage": "Current stage",
    "dataset.progress": "Progress of the current stage",
    "dataset.log": "Skipped images with the reason, resumed work, results",
    "dataset.load": "Open widget 1 with the final bundle (OUT/model.safetensors)",
}


def tip(name: str, **fields) -> str:
    """The tooltip ``name``, its ``{fields}`` filled in (KeyError for an unknown name)."""
    text = TOOLTIPS[name]
    return text.format(**fields) if fields else text
