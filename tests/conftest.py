"""Shared pytest fixtures (generic: usable by any test module)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def nuclei_crop():
    """A small fluorescence nuclei image with ground truth and human-like clicks.

    Returns ``(image uint16 (128, 128), mask int64 values {1, 2}, coords (N, 2), labels (N,))``,
    clicks in acquisition order. A crop of the packaged sample when it is available, else the
    same synthetic generator at a small size.
    """
    from napari_pointseg.samples.clicks import human_like_points

    image = mask = None
    try:
        from napari_pointseg.samples.files import load_sample

        image, mask, _ = load_sample("nuclei")[:3]
        image, mask = np.asarray(image)[:128, :128], np.asarray(mask)[:128, :128]
    except Exception:  # noqa: BLE001 - sample files not generated yet: synthesise
        from napari_pointseg.samples.synthetic import make_nuclei

        image, mask = make_nuclei(256, seed=0)
        image, mask = image[:128, :128], mask[:128, :128]
    mask = mask.astype(np.int64)
    coords, labels = human_like_points(mask, 0.002, seed=0)
    return image, mask, coords, labels


@pytest.fixture
def bench_module(monkeypatch):
    """Load a script of ``benchmarks/`` by name (``bench_module("bench_real")``), with that
    folder on ``sys.path`` as when the script runs (the scripts import each other)."""
    import importlib.util
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def notes(monkeypatch):
    """Messages the widgets show as napari notifications, as (kind, text)."""
    from napari_pointseg.widgets import _messages

    seen = []
    monkeypatch.setattr(_messages, "notify", lambda kind, msg: seen.append((kind, msg)))
    return seen


@pytest.fixture
def setup(make_napari_viewer, qtbot, nuclei_crop, notes):
    """(viewer, widget, image, mask, coords, labels): the annotate widget docked on the nuclei
    crop, training with `_synth.WIDGET_TRAIN`; stopped and idle again after the test."""
    from _synth import WIDGET_TRAIN, WIDGET_WAIT

    from napari_pointseg.widgets import annotate_widget as aw

    image, mask, coords, labels = nuclei_crop
    viewer = make_napari_viewer()
    viewer.add_image(image, name="nuclei")
    widget = aw.AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Annotate & train")
    widget.train_overrides = dict(WIDGET_TRAIN)
    yield viewer, widget, image, mask, coords, labels
    widget.stop_training()
    qtbot.waitUntil(
        lambda: not widget.is_training and not widget.busy and not widget.preparing, timeout=WIDGET_WAIT
    )
