"""Scribbles in "Annotate & train": brush strokes on the "<image> scribbles" Labels layer train
with the clicks, in acquisition order (pytest-qt, real napari viewer, tiny training)."""

from __future__ import annotations

import numpy as np
from _synth import WIDGET_WAIT as WAIT
from scipy import ndimage as ndi

from napari_pointseg.core.metrics import miou
from napari_pointseg.widgets import _messages
from napari_pointseg.widgets import annotate_widget as aw


def stroke_path(mask, value, length, seed):
    """``length`` pixels well inside class ``value``, in a walk-like order (sorted by x)."""
    inside = np.argwhere(ndi.binary_erosion(mask == value, iterations=2))
    rng = np.random.default_rng(seed)
    start = inside[rng.integers(len(inside))]
    near = inside[np.argsort(np.abs(inside - start).sum(axis=1))[:length]]
    return near[np.argsort(near[:, 1], kind="stable")]


def paint(layer, path, value, brush=3):
    """One brush stroke (press, drag, release) as napari's paint tool makes it."""
    layer.brush_size = brush
    with layer.block_history():
        for y, x in path:
            layer.paint((int(y), int(x)), value, refresh=False)
    layer.refresh()


def test_strokes_train_with_clicks_in_order_and_erasing_removes_them(setup, qtbot):
    viewer, widget, image, mask, coords, labels = setup
    widget.add_points(coords[:2], labels[:2])
    widget.pick_class(1)
    widget.paint_scribbles()
    layer = widget.scribbles.layer
    assert layer is not None and layer.name == "nuclei scribbles" and layer.data.shape == image.shape
    assert layer.mode == "paint" and layer.selected_label == 1
    widget.pick_class(2)
    assert layer.selected_label == 2  # the class list drives the brush
    background, nuclei = stroke_path(mask, 1, 60, 0), stroke_path(mask, 2, 30, 1)
    paint(layer, background, 1)
    paint(layer, nuclei, 2)
    widget.add_points(coords[2:3], labels[2:3])  # a click after the strokes
    points = widget.current_points()
    scribbled = len(points) - 3
    assert scribbled > 4 and points.order.tolist() == list(range(len(points)))
    np.testing.assert_allclose(points.coords[:2], coords[:2])  # clicks made first come first
    np.testing.assert_allclose(points.coords[-1], coords[2])  # the click made last comes last
    stroke_labels = points.labels[2:-1]
    assert stroke_labels[0] == 1 and stroke_labels[-1] == 2 and np.all(np.diff(stroke_labels) >= 0)
    # every scribble point is a painted pixel of its class; thinned to far fewer than painted
    pix = points.pixel_coords()[2:-1]
    assert np.all(layer.data[tuple(pix.T)] == stroke_labels)
    assert np.all(mask[tuple(pix.T)] == stroke_labels)
    assert scribbled < (layer.data > 0).sum() / 4
    # the class counts include the scribble points
    assert widget.classes.info(1) is not None

    assert widget.start_training()
    qtbot.waitUntil(lambda: widget.trainer is not None and widget.last_update is not None, timeout=WAIT)
    trainer = widget.trainer
    qtbot.waitUntil(lambda: len(trainer.points) == len(points), timeout=WAIT)
    np.testing.assert_allclose(trainer.points.coords, points.coords)
    # erase the nuclei stroke: its pixels leave training, the running trainer is kept
    paint(layer, nuclei, 0, brush=5)
    qtbot.waitUntil(
        lambda: len(trainer.points) == len(points) - int((points.labels[2:-1] == 2).sum()), timeout=WAIT
    )
    assert widget.trainer is trainer and not np.any(trainer.points.labels[2:-1] == 2)
    # undo (napari sends no paint event for it) brings them back
    layer.undo()
    qtbot.waitUntil(lambda: len(trainer.points) == len(points), timeout=WAIT)
    # more strokes while training: they join after everything made before them
    for seed in range(2, 8):
        value = 1 + seed % 2
        widget.pick_class(value)
        paint(layer, stroke_path(mask, value, 40, seed), value)
    more = widget.current_points()
    np.testing.assert_allclose(more.coords[: len(points)], points.coords)
    qtbot.waitUntil(lambda: len(trainer.points) == len(more), timeout=WAIT)
    qtbot.waitUntil(lambda: widget.last_update is not None and widget.last_update.waiting, timeout=WAIT)
    assert widget.trainer is trainer
    assert miou(mask, widget.prediction_layer.data) >= 0.6
    assert f"points {len(more)}/{len(more)}" in widget.status.text()  # clicks + strokes


def test_painted_layer_adopted_and_removed(setup, qtbot):
    viewer, widget, image, mask, coords, labels = setup
    painted = np.zeros(image.shape, np.uint8)
    painted[tuple(stroke_path(mask, 1, 40, 2).T)] = 1
    painted[tuple(stroke_path(mask, 2, 20, 3).T)] = 2
    viewer.add_labels(painted, name="other")
    viewer.add_image(image, name="copy")
    viewer.add_labels(painted, name="copy scribbles")  # already painted, no stroke history
    widget.select_image("copy")
    assert widget.scribbles.layer is viewer.layers["copy scribbles"]
    points = widget.current_points()
    assert set(points.labels.tolist()) == {1, 2} and len(points) >= 4
    assert points.labels[0] == 1 and points.labels[int(np.argmax(points.labels == 2))] == 2
    widget.scribble_spacing_spin.setValue(1)  # Advanced options: every painted pixel, 2 per stroke
    widget.scribble_max_spin.setValue(2)
    every_pixel = len(widget.scribbles.history.points(painted, 1, 0).labels)
    assert (
        every_pixel == (painted > 0).sum()
        and len(widget.current_points()) == 2 * widget.scribbles.history.stroke_count
    )
    viewer.layers.remove("copy scribbles")
    assert widget.scribbles.layer is None and len(widget.current_points()) == 0
    # a Labels layer of another shape is not used
    viewer.add_labels(np.zeros((5, 5), np.uint8), name="nuclei scribbles")
    widget.select_image("nuclei")
    assert widget.scribbles.layer is None and "not used for training" in widget.status.text()


def test_strokes_on_a_stack_keep_their_plane(make_napari_viewer, monkeypatch):
    monkeypatch.setattr(_messages, "notify", lambda kind, msg: None)
    viewer = make_napari_viewer()
    viewer.add_image(np.random.default_rng(0).random((6, 32, 32)).astype(np.float32), name="stack")
    widget = aw.AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Annotate & train")
    widget.pick_class(1)
    layer = widget.paint_scribbles() or widget.scribbles.layer
    assert layer.data.shape == (6, 32, 32)
    layer.n_edit_dimensions = 2
    with layer.block_history():
        for x in range(5, 25):
            layer.paint((2, 10, x), 1, refresh=False)
    widget.pick_class(2)
    with layer.block_history():
        for x in range(5, 25):
            layer.paint((3, 20, x), 2, refresh=False)
    points = widget.current_points()
    assert points.ndim == 3 and set(points.coords[points.labels == 1, 0].tolist()) == {2}
    assert set(points.coords[points.labels == 2, 0].tolist()) == {3}
    assert points.labels[0] == 1 and points.labels[-1] == 2
    widget.shutdown()
