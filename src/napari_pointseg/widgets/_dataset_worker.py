"""Background side of widget 2 "Dataset training" (no Qt here).

`export_layers` turns open Image layers and their "<image> points" layers into the folder
layout the pipeline reads (so the layer mode and the folder mode run the same code), and
`dataset_loop` is the generator a napari thread_worker runs: it forwards the pipeline's events
and, in layer mode, finally predicts every exported image with the final network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.points import PointSet


@dataclass
class LayerImage:
    """An open image captured in the main thread: layer name, pixels, rgb flag, its clicks."""

    name: str
    data: np.ndarray
    rgb: bool = False
    points: PointSet | None = None


@dataclass
class LayerResults:
    """Final-network predictions of the exported layers: layer name -> label image."""

    predictions: dict = field(default_factory=dict)
    bundle: str = ""


def safe_name(name: str) -> str:
    """A file stem for a layer name (letters, digits, '-', '_')."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "image"


def export_layers(images: list[LayerImage], folder: Path) -> dict[str, str]:
    """Write ``folder/images/NAME.tif`` (+ ``points/NAME.csv`` for annotated ones).

    Returns {file stem: layer name}. RGB layers are written channel-last (read back as RGB).
    """
    import tifffile

    from ..core.files import write_tif_atomic

    mapping = {}
    for im in images:
        stem = safe_name(im.name)
        while stem in mapping:
            stem += "_"
        mapping[stem] = im.name
        data = np.asarray(im.data)
        path = folder / "images" / f"{stem}.tif"
        if im.rgb:
            path.parent.mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(path, data, photometric="rgb")
        else:
            write_tif_atomic(path, data)
        if im.points is not None and len(im.points):
            im.points.renumbered().to_csv(folder / "points" / f"{stem}.csv")
    return mapping


def dataset_loop(opts, cancel, grid=None, layers: list[LayerImage] | None = None):
    """Generator for a napari thread_worker: pipeline events, then (layer mode) LayerResults.

    Errors are yielded as ``Message(text, 'error')`` (the worker itself never raises).

    grid: (fractions, rates) to run `iter_grid` instead of one pipeline run.
    """
    from ._safe_import import import_torch

    import_torch()
    from ..core.errors import InputError
    from ..dataset.events import Cancelled, Done, Message
    from ..dataset.grid import iter_grid
    from ..dataset.pipeline import iter_pipeline

    done = None
    events = None
    try:
        mapping = export_layers(layers, opts.data) if layers else {}
        events = iter_grid(opts, *grid, cancel=cancel) if grid else iter_pipeline(opts, cancel)
        for ev in events:
            if isinstance(ev, Done):
                done = ev
            yield ev
    except Cancelled:
        return  # the user asked for it: not an error
    except InputError as e:
        # errors travel as events: an exception leaving a worker reaches the Qt event loop
        yield Message(str(e), "error")
        return
    except Exception as e:  # noqa: BLE001 - shown as a notification, never a traceback
        yield Message(f"{type(e).__name__}: {e}", "error")
        return
    finally:
        if events is not None:
            events.close()
    if layers and done is not None and not grid:
        try:
            res = predict_layers(done.summary["bundle"], mapping, layers, opts, cancel)
        except (InputError, OSError, RuntimeError) as e:
            yield Message(f"predicting the layers failed: {e}", "error")
            return
        if res is not None:
            yield res


def predict_layers(bundle_path, mapping: dict, layers: list[LayerImage], opts, cancel):
    """Predict every exported layer with the final bundle on the run's device (``opts.device``,
    as the pipeline trained: a GPU run must not predict on the CPU). Returns the
    LayerResults, or None when cancelled."""
    from ..core.bundle import load_bundle, predict_with_bundle
    from ..core.models import choose_device

    b = load_bundle(bundle_path)
    model = b.build(choose_device(opts.device))
    res = LayerResults(bundle=str(bundle_path))
    rgb = {im.name: im.rgb for im in layers}
    for name in mapping.values():
        if cancel.is_set():
            return None
        data = next(im.data for im in layers if im.name == name)
        try:
            res.predictions[name] = predict_with_bundle(
                b, np.asarray(data), opts.channel_axis, rgb=rgb[name] or None, device=opts.device, model=model
            )
        except Exception:  # noqa: BLE001 - an image the network cannot take (logged in the run)
            continue
    return res
