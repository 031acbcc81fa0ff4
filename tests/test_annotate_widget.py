"""The "Annotate & train" widget driven like a user would (pytest-qt, real napari viewer).

Trainings are tiny (128 x 128 image, whole-plane iterations as the recipe does up to 256 px, 1 thread) and every wait has a generous
timeout: other CPU-heavy jobs may share the machine.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from _synth import WIDGET_TRAIN as TINY
from _synth import WIDGET_WAIT as WAIT

from napari_pointseg.core.metrics import miou
from napari_pointseg.core.overlay import label_colour
from napari_pointseg.widgets import annotate_widget as aw
from napari_pointseg.widgets._layer_names import prediction_layer_name


def _problems(notes):
    """The warnings and errors among the notifications (results are "info")."""
    return [note for note in notes if note[0] != "info"]


def _classes_in(widget):
    return set(np.unique(widget.prediction_layer.data).tolist()) - {0}


def test_widget_creates_points_layer_with_features_and_colours(setup):
    viewer, widget, *_ = setup
    layer = widget.points_layer
    assert layer.name == "nuclei points"
    widget.pick_class(2)
    layer.add([[10, 10]])
    widget.pick_class(1)
    layer.add([[20, 20]])
    assert layer.features["label"].tolist() == [2, 1]
    assert layer.features["order"].tolist() == [0, 1]
    np.testing.assert_allclose(layer.face_color[0][:3], label_colour(2), atol=1e-6)
    np.testing.assert_allclose(layer.face_color[1][:3], label_colour(1), atol=1e-6)
    # keys 1-9 on the points layer pick the class for the next click
    viewer.layers.selection.active = layer
    viewer.window._qt_viewer._key_map_handler.press_key("2")
    viewer.window._qt_viewer._key_map_handler.release_key("2")
    assert widget.classes.current_value() == 2
    layer.add([[30, 30]])
    assert layer.features["label"].tolist() == [2, 1, 2]
    widget.remove_last_point()
    assert len(layer.data) == 2 and layer.features["order"].tolist() == [0, 1]
    # buttons that make no sense are disabled
    assert not widget.stop_button.isEnabled()
    assert not widget.save_model_button.isEnabled()
    assert all(b.toolTip() for b in widget.findChildren(type(widget.train_button)))


def test_added_points_with_a_new_label_get_a_class_and_its_colour(setup):
    """Points added by a script with label 3 (the table starts with classes 1 and 2) add class
    3 to the table, as loaded points do, and are drawn in its colour."""
    viewer, widget, *_ = setup
    assert widget.classes.values() == [1, 2]
    widget.add_points([[10, 10], [20, 20]], [1, 3])
    assert widget.classes.values() == [1, 2, 3]
    layer = widget.points_layer
    assert layer.features["label"].tolist() == [1, 3]
    np.testing.assert_allclose(layer.face_color[1][:3], label_colour(3), atol=1e-6)


def test_input_prepared_ahead_of_train_is_used(setup, qtbot):
    """Picking an image prepares its network input in the background; Train reuses it."""
    viewer, widget, image, mask, coords, labels = setup
    qtbot.waitUntil(lambda: widget.input_prepared, timeout=WAIT)
    prepared = widget.training.prepared[1]
    assert prepared.plane(0).shape[-2:] == image.shape
    assert widget.train_button.isEnabled()
    widget.add_points(coords[:8], labels[:8])
    assert widget.start_training()
    qtbot.waitUntil(lambda: widget.trainer is not None, timeout=WAIT)
    assert widget.trainer.image is prepared
    # a channel setting that resolves to the same axis (grey image: none == auto) keeps it
    widget.stop_training()
    qtbot.waitUntil(lambda: not widget.is_training, timeout=WAIT)
    widget.channel_combo.setCurrentText("none")  # same as auto for a grey image: still valid
    assert widget.input_prepared


def test_single_class_gives_clear_message(setup, notes):
    viewer, widget, image, mask, coords, labels = setup
    one = labels == 1
    widget.add_points(coords[one][:3], labels[one][:3])
    assert widget.start_training() is False
    assert not widget.is_training
    assert notes and notes[-1][0] == "error"
    assert "at least 2 classes" in notes[-1][1] and "two classes" in notes[-1][1]
    assert "at least 2 classes" in widget.status.text()


def test_train_reaches_ground_truth(setup, qtbot):
    viewer, widget, image, mask, coords, labels = setup
    # the product's recipe (1 thread), not the fixture's shorter one: with that one this run
    # ended at 0.79-0.81 depending on when the timed predictions fell (each records the points
    # it gets wrong, which moves the trainer's random stream), on both sides of the bar below;
    # with the product's, 0.817-0.819
    widget.train_overrides = {"threads": 1}
    widget.add_points(coords, labels)
    assert widget.start_training()
    assert not widget.train_button.isEnabled() and widget.stop_button.isEnabled()
    qtbot.waitUntil(
        lambda: widget.prediction_layer is not None and len(_classes_in(widget)) >= 2, timeout=WAIT
    )
    layer = widget.prediction_layer
    assert layer.name == "nuclei prediction" and not layer.editable
    np.testing.assert_allclose(layer.colormap.map(np.array([2]))[0][:3], label_colour(2), atol=1e-3)
    qtbot.waitUntil(lambda: widget.last_update is not None and widget.last_update.waiting, timeout=WAIT)
    assert miou(mask, widget.prediction_layer.data) >= 0.8
    status = widget.status.text()
    for part in ("step", "loss", f"points {len(coords)}/{len(coords)}", "it/s", "cpu"):
        assert part in status


def test_click_forest_option(setup, qtbot):
    """Advanced options > Click forest reaches the training: this grey image gets the forest
    only with "every image"; "off" turns it off everywhere."""
    viewer, widget, image, mask, coords, labels = setup
    assert widget.forest_combo.toolTip()
    assert widget.train_settings()[0].forest_on == "colour"
    widget.forest_combo.setCurrentIndex(widget.forest_combo.findData("off"))
    assert widget.train_settings()[0].forest_trees == 0
    widget.forest_combo.setCurrentIndex(widget.forest_combo.findData("always"))
    assert widget.train_settings()[0].forest_on == "always"
    widget.add_points(coords, labels)
    assert widget.start_training()
    qtbot.waitUntil(lambda: widget.last_update is not None and widget.last_update.waiting, timeout=WAIT)
    trainer = widget.training.trainer
    assert trainer.image.spec.forest is not None and trainer.image.forest.fitted
    assert miou(mask, widget.prediction_layer.data) >= 0.7


def test_points_clicked_while_training_are_used(setup, qtbot):
    viewer, widget, image, mask, coords, labels = setup
    widget.add_points(coords[:4], labels[:4])
    widget.start_training()
    qtbot.waitUntil(lambda: widget.trainer is not None and widget.last_update is not None, timeout=WAIT)
    trainer = widget.trainer
    widget.add_points(coords[4:10], labels[4:10])
    qtbot.waitUntil(lambda: widget.last_update.n_active == 10, timeout=WAIT)
    assert widget.trainer is trainer  # no restart
    np.testing.assert_allclose(trainer.points.coords, coords[:10])  # click order kept
    # moving, relabelling and deleting reach the trainer too
    layer = widget.points_layer
    moved = layer.data.copy()
    target = np.clip(coords[5] + 3, 0, image.shape[0] - 1) if coords[5, 0] < 64 else coords[5] - 3
    moved[5] = target
    layer.data = moved
    layer.selected_data = {6}
    widget.relabel_selected(3 - int(labels[6]))
    qtbot.waitUntil(
        lambda: np.allclose(trainer.points.coords[5], target) and trainer.points.labels[6] == 3 - labels[6],
        timeout=WAIT,
    )
    # a point dragged outside the image is ignored, the others still count
    moved = layer.data.copy()
    moved[7] = (-20, -20)
    layer.data = moved
    qtbot.waitUntil(lambda: len(trainer.points) == 9, timeout=WAIT)
    assert "outside the image" in widget.status.text()
    moved[7] = coords[7]
    layer.data = moved
    qtbot.waitUntil(lambda: len(trainer.points) == 10, timeout=WAIT)
    layer.selected_data = {2}
    layer.remove_selected()
    qtbot.waitUntil(lambda: len(trainer.points) == 9, timeout=WAIT)
    np.testing.assert_allclose(trainer.points.coords[2], coords[3])


def test_stop_resume_reset(setup, qtbot):
    viewer, widget, image, mask, coords, labels = setup
    widget.add_points(coords[:6], labels[:6])
    widget.start_training()
    qtbot.waitUntil(lambda: widget.last_update is not None and widget.last_update.step >= 2, timeout=WAIT)
    first = widget.trainer
    widget.stop_training()
    qtbot.waitUntil(lambda: not widget.is_training, timeout=WAIT)
    assert widget.stop_seconds is not None and widget.stop_seconds < 10
    assert widget.train_button.text() == "Resume" and widget.train_button.isEnabled()
    assert not widget.stop_button.isEnabled()
    it = first.iteration
    # a click while stopped: the resumed training has work even if, on a loaded machine, the
    # first run had finished its six points before Stop took effect
    widget.add_points(coords[6:7], labels[6:7])
    widget.start_training()  # resume: same network, continues
    qtbot.waitUntil(lambda: first.iteration > it + 2, timeout=WAIT)
    assert widget.trainer is first
    widget.reset_training()  # fresh network, replays all points in click order
    qtbot.waitUntil(
        lambda: (
            widget.trainer is not None
            and widget.trainer is not first
            and widget.is_training
            and widget.last_update is not None
            and widget.last_update.n_active == 7
        ),
        timeout=WAIT,
    )
    assert widget.trainer.step >= 7  # admitted one by one again


def _thread_counts() -> tuple[int, int]:
    """(Python threads, busy threads of Qt's global pool: where napari workers run)."""
    from qtpy.QtCore import QThreadPool

    return threading.active_count(), QThreadPool.globalInstance().activeThreadCount()


def _idle_baseline(qtbot) -> tuple[int, int]:
    """Thread counts once every worker the widgets started (warm-up included) is done."""
    from qtpy.QtCore import QThreadPool

    from napari_pointseg.widgets._threads import live_workers

    qtbot.waitUntil(lambda: live_workers() == 0, timeout=WAIT)
    # a worker's ``finished`` is handled a moment before its pool thread returns: on a busy
    # machine that thread still counted as active here and hid the training thread later
    QThreadPool.globalInstance().waitForDone(5_000)
    return _thread_counts()


def _back_to(qtbot, baseline, timeout=WAIT) -> None:
    """Wait until no thread is left over compared with ``baseline`` (fails on a leak)."""

    def settled():
        py, pool = _thread_counts()
        assert py <= baseline[0] and pool <= baseline[1], (_thread_counts(), baseline)

    qtbot.waitUntil(settled, timeout=timeout)


def test_close_viewer_while_training(make_napari_viewer, qtbot, nuclei_crop, notes):
    image, mask, coords, labels = nuclei_crop
    viewer = make_napari_viewer()
    viewer.add_image(image, name="nuclei")
    widget = aw.AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.train_overrides = dict(TINY)
    widget.add_points(coords[:6], labels[:6])
    baseline = _idle_baseline(qtbot)
    widget.start_training()
    qtbot.waitUntil(lambda: widget.trainer is not None and widget.last_update is not None, timeout=WAIT)
    trainer = widget.trainer
    assert _thread_counts()[1] > baseline[1]  # the training thread counts
    viewer.close()
    assert trainer.stopped
    # the training thread finishes: the trainer makes no more iterations, no thread is left
    it = trainer.iteration
    _back_to(qtbot, baseline)
    qtbot.wait(300)
    assert trainer.iteration <= it + 1
    assert not _problems(notes)  # closing is not an error


def test_close_viewer_right_after_docking(make_napari_viewer, qtbot):
    """Both widgets docked as the plugin menu does, the viewer closed at once while the
    annotate widget still prepares the image in the background: no error, no thread left."""
    from napari_pointseg.samples.synthetic import make_nuclei

    baseline = _thread_counts()
    viewer = make_napari_viewer()
    viewer.add_image(make_nuclei(48, seed=0)[0], name="img")
    _, annotate = viewer.window.add_plugin_dock_widget("napari-pointseg", "Annotate & train")
    _, dataset = viewer.window.add_plugin_dock_widget("napari-pointseg", "Dataset training")
    assert annotate.preparing or annotate.busy  # work in the background when closing
    viewer.close()
    assert annotate._closed and dataset._closed
    _back_to(qtbot, baseline)


SMALL_TRAIN = dict(iters_per_step=2, min_iters_per_step=1, final_iters=4, threads=1)
SMALL_NET = dict(encoder_depth=3, decoder_channels=[16, 8, 4])


@pytest.fixture
def small(make_napari_viewer, qtbot, notes):
    """(viewer, widget, coords, labels): a 48 x 48 image "img" (+ a second image "other"),
    a tiny network, clicks added, the input prepared; the thread baseline in widget.baseline."""
    from napari_pointseg.samples.clicks import human_like_points
    from napari_pointseg.samples.synthetic import make_nuclei

    image, mask = make_nuclei(128, seed=0)
    image, mask = image[:48, :48], mask[:48, :48].astype(np.int64)
    coords, labels = human_like_points(mask, 0.01, seed=0)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="img")
    viewer.add_image(image[::-1].copy(), name="other")
    widget = aw.AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.select_image("img")
    widget.train_overrides = dict(SMALL_TRAIN)
    widget.model_overrides = dict(SMALL_NET)
    qtbot.waitUntil(lambda: widget.input_prepared and not widget.preparing and not widget.busy, timeout=WAIT)
    widget.add_points(coords, labels)
    widget.baseline = _idle_baseline(qtbot)
    yield viewer, widget, coords, labels
    widget.stop_training()
    qtbot.waitUntil(lambda: not widget.is_training and not widget.busy, timeout=WAIT)


def _prediction_consistent(widget, shape, classes) -> None:
    layer = widget.prediction_layer
    assert layer is not None and layer in widget.viewer.layers
    assert layer.name == prediction_layer_name(widget.image.name)
    assert layer.data.shape == shape
    assert set(np.unique(layer.data).tolist()) <= {0, *classes}


def test_train_stop_reset_100_times(small, qtbot, notes):
    """A hostile user: Train, Stop, Reset, Stop as fast as the events allow, 100 times (the
    button clicks when enabled, the methods always). Ends idle, no error, no thread left, and
    training still works afterwards."""
    viewer, widget, coords, labels = small
    for i in range(100):
        for button in (widget.train_button, widget.stop_button, widget.reset_button):
            if button.isEnabled():
                button.click()
        widget.start_training()
        widget.stop_training()
        widget.reset_training()
        widget.stop_training()  # Stop after Reset: no restart may follow
        qtbot.wait(i % 5)  # let some messages of the ending loops in, at varying points
    qtbot.waitUntil(lambda: not widget.is_training and not widget.busy, timeout=WAIT)
    qtbot.wait(200)
    assert not widget.is_training  # nothing restarted on its own
    assert not _problems(notes), notes
    assert widget.status.text().startswith("stopped")
    assert widget.train_button.isEnabled() and not widget.stop_button.isEnabled()
    _prediction_consistent(widget, (48, 48), {1, 2})
    _back_to(qtbot, widget.baseline)
    assert widget.start_training()
    qtbot.waitUntil(lambda: widget.n_predictions > 0 and len(_classes_in(widget)) >= 1, timeout=WAIT)
    _prediction_consistent(widget, (48, 48), {1, 2})


def test_remove_image_while_training(small, qtbot, notes):
    """Removing the trained image stops its training; the widget moves to the other image and
    nothing of the old network lands in that image's layers."""
    viewer, widget, coords, labels = small
    widget.start_training()
    qtbot.waitUntil(lambda: widget.n_predictions > 0, timeout=WAIT)
    viewer.layers.remove("img")
    assert widget.image is viewer.layers["other"] and widget.trainer is None
    qtbot.waitUntil(lambda: not widget.is_training, timeout=WAIT)
    qtbot.wait(300)
    assert "other prediction" not in viewer.layers  # no update of the old loop shown there
    assert widget.prediction_layer is None and widget.trainer is None
    assert not _problems(notes), notes
    _back_to(qtbot, widget.baseline)


def test_remove_image_while_predicting(small, qtbot, notes):
    """A whole-image prediction still running when its image is removed lands nowhere."""
    viewer, widget, coords, labels = small
    widget.start_training()
    qtbot.waitUntil(lambda: widget.n_predictions > 0, timeout=WAIT)
    widget.stop_training()
    qtbot.waitUntil(lambda: not widget.is_training, timeout=WAIT)
    n = widget.n_predictions
    widget.predict_all()
    assert widget.busy  # the job runs in a worker of its own
    viewer.layers.remove("img")
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT)
    assert widget.n_predictions == n and "other prediction" not in viewer.layers
    assert not _problems(notes), notes
    _back_to(qtbot, widget.baseline)


@pytest.mark.parametrize("layer", ["points", "prediction"])
def test_remove_layer_while_training(small, qtbot, notes, layer):
    """Removing the points layer leaves a training with no points (it waits); removing the
    prediction layer makes the next live update add a new one of the right shape."""
    viewer, widget, coords, labels = small
    widget.start_training()
    qtbot.waitUntil(lambda: widget.n_predictions > 0, timeout=WAIT)
    n = widget.n_predictions
    viewer.layers.remove(f"img {layer}")
    if layer == "points":
        assert widget.points_layer is None
        qtbot.waitUntil(lambda: widget.last_update.n_points == 0 and widget.last_update.waiting, timeout=WAIT)
    else:
        widget.training.control.predict_now = True
        qtbot.waitUntil(lambda: widget.n_predictions > n, timeout=WAIT)
    assert widget.is_training and not _problems(notes), notes
    _prediction_consistent(widget, (48, 48), {1, 2})
    widget.stop_training()
    qtbot.waitUntil(lambda: not widget.is_training, timeout=WAIT)
    _back_to(qtbot, widget.baseline)


CLOSE_SCRIPT = """
import sys
import numpy as np
import napari
from napari_pointseg.samples.clicks import human_like_points
from napari_pointseg.samples.synthetic import make_nuclei

image, mask = make_nuclei(128, seed=0)
image, mask = image[:48, :48], mask[:48, :48].astype(np.int64)
viewer = napari.Viewer(show=True)
viewer.add_image(image, name="img")
_, annotate = viewer.window.add_plugin_dock_widget("napari-pointseg", "Annotate & train")
_, dataset = viewer.window.add_plugin_dock_widget("napari-pointseg", "Dataset training")
if sys.argv[1] == "training":
    annotate.model_overrides = {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}
    annotate.add_points(*human_like_points(mask, 0.01, seed=0))
    assert annotate.start_training()
viewer.close()
print("closed", flush=True)
"""


@pytest.mark.parametrize("mode", ["docked", "training"])
def test_close_at_once_does_not_abort(tmp_path, mode):
    """Docking both widgets and closing the viewer at once, then leaving Python, while the
    widget's background work (torch import, input preparation, training) still runs, used to
    abort the process (exit 134: a worker's signals deleted under its thread). A process
    abort cannot be caught in pytest: run it in a child process."""
    import os
    import subprocess
    import sys

    script = tmp_path / "close_at_once.py"
    script.write_text(CLOSE_SCRIPT)
    env = {**os.environ, "POINTSEG_THREADS": "1", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, str(script), mode], capture_output=True, text=True, timeout=300, env=env
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "closed" in r.stdout
    assert "Traceback" not in r.stderr and "has been deleted" not in r.stderr, r.stderr[-3000:]


def test_bundle_round_trip(setup, qtbot, tmp_path):
    viewer, widget, image, mask, coords, labels = setup
    widget.add_points(coords, labels)
    widget.start_training()
    qtbot.waitUntil(lambda: widget.last_update is not None and widget.last_update.step >= 4, timeout=WAIT)
    widget.stop_training()
    qtbot.waitUntil(lambda: not widget.is_training, timeout=WAIT)
    expected = widget.trainer.predict(0)
    path = tmp_path / "model.safetensors"
    widget.save_model(str(path))
    qtbot.waitUntil(lambda: widget.saved_model_path is not None and not widget.busy, timeout=WAIT)
    assert path.is_file()
    # a second image: the loaded bundle predicts it
    viewer.add_image(image.copy(), name="other")
    widget.select_image("other")
    assert widget.trainer is None
    widget.load_model(str(path))
    qtbot.waitUntil(lambda: widget.bundle is not None and not widget.busy, timeout=WAIT)
    assert widget.model_combo.currentData() == "bundle"
    assert widget.predict_button.isEnabled()
    widget.predict_all()
    qtbot.waitUntil(lambda: widget.prediction_layer is not None and not widget.busy, timeout=WAIT)
    assert widget.prediction_layer.name == "other prediction"
    np.testing.assert_array_equal(widget.prediction_layer.data, expected)
    out = widget.export_prediction(str(tmp_path / "pred.tif"))
    import tifffile

    np.testing.assert_array_equal(tifffile.imread(out), expected)


def test_points_csv_through_widget(setup, tmp_path):
    viewer, widget, image, mask, coords, labels = setup
    widget.add_points(coords[:5], labels[:5])
    widget.save_points(str(tmp_path / "p.csv"))
    widget.remove_last_point()
    assert widget.load_points(str(tmp_path / "p.csv"))
    layer = widget.points_layer
    np.testing.assert_allclose(layer.data, coords[:5])
    assert layer.features["label"].tolist() == labels[:5].tolist()
    assert layer.features["order"].tolist() == list(range(5))


def test_stack_trains_on_annotated_slices(make_napari_viewer, qtbot, notes):
    from napari_pointseg.samples.clicks import human_like_points
    from napari_pointseg.samples.synthetic import make_stack

    stack, mask = make_stack((8, 64, 64), seed=1)
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="stack")
    widget = aw.AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.train_overrides = dict(TINY, final_iters=10)
    coords, labels = human_like_points(mask.astype(np.int64), 0.002, seed=0)
    assert widget.points_layer.ndim == 3
    widget.add_points(coords, labels)
    z = int(coords[0, 0])
    viewer.dims.set_current_step(0, z)
    assert widget.current_plane() == z
    widget.start_training()
    qtbot.waitUntil(
        lambda: (
            widget.prediction_layer is not None
            and len(set(np.unique(widget.prediction_layer.data[z]).tolist()) - {0}) >= 2
        ),
        timeout=WAIT,
    )
    assert widget.prediction_layer.data.shape == stack.shape
    assert widget.predict_button.text() == "Predict all slices"
    widget.stop_training()
    qtbot.waitUntil(lambda: not widget.is_training, timeout=WAIT)
    widget.predict_all()
    qtbot.waitUntil(lambda: not widget.busy and (widget.prediction_layer.data > 0).all(), timeout=WAIT)
    assert not _problems(notes), notes


def test_suggest_and_accept_points(setup, qtbot):
    """Suggestions are distinct, unclicked, among the most uncertain pixels; accepting them
    with a class key turns them into points that reach the running trainer."""
    viewer, widget, image, mask, coords, labels = setup
    widget.uncert_check.setChecked(True)
    widget.add_points(coords[:8], labels[:8])
    widget.start_training()
    qtbot.waitUntil(lambda: widget.last_update is not None and widget.last_update.step >= 4, timeout=WAIT)
    widget.suggest_points(5)  # while training: runs in the training thread between iterations
    qtbot.waitUntil(lambda: widget.suggestions_layer is not None, timeout=WAIT)
    sugg = widget.suggestions_layer
    assert sugg.name == "nuclei suggestions" and len(sugg.data) == 5
    assert not any(np.all(sugg.data[:, None] == coords[None, :8], axis=2).ravel())
    assert "nuclei uncertainty" in viewer.layers
    assert widget.accept_button.isEnabled()  # (the status line moves on: training runs)
    assert len(np.unique(sugg.data, axis=0)) == 5
    assert np.all((sugg.data >= 0) & (sugg.data < np.asarray(image.shape)))
    # margin sampling: each suggestion is among the ~5 % least sure pixels of the map computed
    # from the same prediction (the uncertainty layer); not anywhere in the image
    unc = np.asarray(viewer.layers["nuclei uncertainty"].data)
    at_suggestions = unc[tuple(np.round(sugg.data).astype(int).T)]
    assert np.all(at_suggestions >= np.quantile(unc, 0.94) - 1e-5), (at_suggestions, np.quantile(unc, 0.94))
    assert at_suggestions.min() > np.median(unc)
    sugg.selected_data = {0, 1}
    accepted = sugg.data[[0, 1]].copy()
    viewer.window._qt_viewer._key_map_handler.press_key("2")  # class 2 for the selection
    viewer.window._qt_viewer._key_map_handler.release_key("2")
    assert len(sugg.data) == 3
    layer = widget.points_layer
    np.testing.assert_allclose(layer.data[-2:], accepted)
    assert layer.features["label"].tolist()[-2:] == [2, 2]
    assert layer.features["order"].tolist()[-2:] == [8, 9]
    qtbot.waitUntil(lambda: len(widget.trainer.points) == 10, timeout=WAIT)


def test_training_opens_no_activity_bar_and_stop_keeps_the_network(setup, qtbot, notes):
    """Training opens no progress bar in napari's activity dock (while one is open napari
    animates its "in progress" indicator, which halved the training on 2 cores): the status
    line shows its progress and Stop ends it (network kept, Resume offered); results are info
    notifications. Jobs (Predict image) do get a bar."""
    from napari_pointseg.widgets._progress import open_bars

    viewer, widget, image, mask, coords, labels = setup
    widget.add_points(coords, labels)
    assert widget.start_training()
    qtbot.waitUntil(lambda: widget.last_update is not None and widget.last_update.step >= 1, timeout=WAIT)
    assert not open_bars()  # napari's progress bars (what its activity dock shows)
    assert widget.status.text().startswith("step ") and "it/s" in widget.status.text()
    widget.stop_training()
    assert widget.training.stopping_at is not None and not widget.stop_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.is_training, timeout=WAIT)
    assert widget.trainer is not None and widget.train_button.text() == "Resume"
    assert widget.status.text().startswith("stopped at step")
    assert any(kind == "info" and msg.startswith("training of nuclei stopped at step") for kind, msg in notes)
    # a job (Predict image) has an indeterminate bar without Cancel until its result is shown
    widget.predict_all()
    jobs = list(widget.jobs.activities.values())
    assert len(jobs) == 1 and not jobs[0].cancelable and jobs[0].bar in open_bars()
    assert jobs[0].desc.startswith("prediction (nuclei)")
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT)
    assert jobs[0].closed and not widget.jobs.activities
    assert ("info", "prediction of the whole image done") in notes
    assert not _problems(notes), notes
    assert not [b for b in open_bars() if str(b).startswith(("training", "prediction"))]


def test_shortcuts_are_listed_in_the_help(setup):
    viewer, widget, *_ = setup
    text = widget.keys_button.toolTip()
    for key in ("1</b>-<b>9", "<b>P</b>", "<b>S</b>", "<b>Z</b>", "Delete", "suggestions"):
        assert key in text
    # every digit the widget binds on the points layer is one the help lists
    bound = {str(k) for k in widget.points_layer.keymap}
    assert {str(d) for d in range(1, 10)} <= {b[-1] for b in bound if b[-1].isdigit()}
    widget.keys_button.click()  # shows the same text at once (a tooltip; must not raise)


def test_class_rename_and_colour_reach_points_and_prediction(setup, qtbot):
    viewer, widget, *_ = setup
    widget.add_points([[10, 10], [20, 20]], [1, 2])
    prediction = widget.results.ensure_prediction_layer()
    table = widget.classes.table
    table.item(1, 1).setText("nucleus")  # the user edits the name cell of class 2
    assert widget.classes.name(2) == "nucleus"
    widget.pick_class(2)
    assert "class 2 (nucleus)" in widget.hint.text()
    widget.classes.set_colour(2, (0.0, 0.0, 1.0))  # what the colour dialog does
    np.testing.assert_allclose(prediction.colormap.map(np.array([2]))[0][:3], (0, 0, 1), atol=1e-3)
    np.testing.assert_allclose(widget.points_layer.face_color[1][:3], (0, 0, 1), atol=1e-6)
    np.testing.assert_allclose(widget.points_layer.face_color[0][:3], label_colour(1), atol=1e-6)
    assert table.item(1, 0).background().color().blueF() == pytest.approx(1.0)
