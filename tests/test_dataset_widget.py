"""Widget 2 "Dataset training" (run under Xvfb: xvfb-run -a python -m pytest ...)."""

from __future__ import annotations

import numpy as np
import pytest
from test_dataset import TINY_DATASET, TINY_IMAGE, TINY_SPEC

pytest.importorskip("napari")

TIMEOUT_MS = 240_000
OVERRIDES = dict(
    image_config=TINY_IMAGE, dataset_config={**TINY_DATASET}, spec=TINY_SPEC, device="cpu", threads=1
)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """train/ with 2 clicked images, test/ with 1 image + mask."""
    import shutil

    from napari_pointseg.samples.files import make_dataset

    root = tmp_path_factory.mktemp("dsw")
    make_dataset(root / "train", n_images=2, size=64, seed=5)
    make_dataset(root / "test", n_images=1, size=64, seed=6)
    shutil.rmtree(root / "test" / "points")
    return root


@pytest.fixture
def widget(make_napari_viewer, monkeypatch):
    from napari_pointseg.widgets import _messages
    from napari_pointseg.widgets import dataset_widget as mod

    notes = []
    monkeypatch.setattr(_messages, "notify", lambda kind, msg: notes.append((kind, msg)))
    viewer = make_napari_viewer()
    w = mod.DatasetWidget(viewer)
    w.overrides = {k: (dict(v) if isinstance(v, dict) else v) for k, v in OVERRIDES.items()}
    w.notes = notes
    return viewer, w


def test_folder_run_opens_results_and_bundle(widget, two, tmp_path, qtbot):
    viewer, w = widget
    w.data_edit.setText(str(two / "train"))
    w.test_edit.setText(str(two / "test"))
    w.out_edit.setText(str(tmp_path / "out"))
    assert w.run_button.isEnabled() and not w.cancel_button.isEnabled()
    assert w.run_button.toolTip() and w.cancel_button.toolTip()
    from napari_pointseg.widgets._progress import open_bars

    w.run()
    assert w.is_running and not w.run_button.isEnabled() and w.cancel_button.isEnabled()
    # napari's progress bars animate an indicator that slowed a run 1.5-1.6x: the widget has its own
    assert not open_bars()
    qtbot.waitUntil(lambda: not w.is_running, timeout=TIMEOUT_MS)
    assert w.summary is not None, w.log.toPlainText()
    assert 0 <= w.summary["miou"] <= 1
    assert w.stage_label.text() == "finished" and w.progress_bar.value() == w.progress_bar.maximum()
    assert [m for k, m in w.notes if k == "info" and m.startswith("Dataset training done: 2 annotated")]
    names = [ly.name for ly in viewer.layers]
    assert "img_000" in names and "img_000 prediction" in names
    assert w.run_button.isEnabled() and w.load_button.isEnabled()
    from napari_pointseg.core.bundle import load_bundle, predict_with_bundle

    b = load_bundle(w.bundle_path)  # what widget 1's "Load model" does
    pred = predict_with_bundle(b, viewer.layers["img_000"].data, device="cpu")
    assert pred.shape == (64, 64)


def test_layer_mode_predicts_open_images(widget, two, tmp_path, qtbot):
    import tifffile

    from napari_pointseg.core.points import PointSet

    viewer, w = widget
    for i in range(2):
        img = tifffile.imread(two / "train" / "images" / f"img_00{i}.tif")
        viewer.add_image(img, name=f"cells {i}")
    pts = PointSet.from_csv(two / "train" / "points" / "img_000.csv")
    viewer.add_points(pts.coords, name="cells 0 points", features={"label": pts.labels, "order": pts.order})
    w.layers_radio.setChecked(True)
    assert not w.data_edit.isEnabled()
    w.out_edit.setText(str(tmp_path / "out"))
    w.run()
    qtbot.waitUntil(lambda: not w.is_running, timeout=TIMEOUT_MS)
    assert w.summary is not None, w.log.toPlainText()
    assert w.summary["n_annotated"] == 1 and w.summary["n_self_labelled"] == 1
    qtbot.waitUntil(lambda: "cells 1 dataset prediction" in viewer.layers, timeout=30_000)
    pred = viewer.layers["cells 0 dataset prediction"].data
    assert pred.shape == (64, 64) and set(np.unique(pred)) <= {1, 2}


def test_cancel_stops_and_reenables(widget, two, tmp_path, qtbot):
    viewer, w = widget
    w.data_edit.setText(str(two / "train"))
    w.out_edit.setText(str(tmp_path / "out"))
    w.overrides["dataset_config"]["iterations"] = 100_000
    w.run()
    qtbot.waitUntil(lambda: "dataset network" in w.stage_label.text(), timeout=TIMEOUT_MS)
    assert w.progress_bar.maximum() > 1  # a counting bar per stage
    w.cancel_button.click()
    assert w._cancel.is_set() and w.stage_label.text() == "cancelling…"
    qtbot.waitUntil(lambda: not w.is_running, timeout=60_000)
    assert ("info", "Dataset training cancelled: finished images are kept, Run resumes") in w.notes
    assert w.stage_label.text() == "cancelled" and w.summary is None
    assert w.run_button.isEnabled() and not w.cancel_button.isEnabled()
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert (tmp_path / "out" / "pseudo" / "img_000.json").is_file()  # stage 1 kept


def test_bad_input_is_a_notification(widget, tmp_path, qtbot):
    viewer, w = widget
    w.run()  # no folders
    assert not w.is_running and w.notes and w.notes[-1][0] == "error"
    w.data_edit.setText(str(tmp_path / "missing"))
    w.out_edit.setText(str(tmp_path / "out"))
    w.run()
    qtbot.waitUntil(lambda: not w.is_running, timeout=60_000)
    assert w.notes[-1][0] == "error" and "not found" in w.notes[-1][1]


def test_uncertainty_layers_are_not_offered_as_images(widget):
    """The annotate widget's "<image> uncertainty" Image layers are outputs, not inputs."""
    viewer, w = widget
    img = np.zeros((32, 32), np.uint16)
    viewer.add_image(img, name="cells")
    viewer.add_image(np.zeros((32, 32), np.float32), name="cells uncertainty")
    assert [im.name for im in w._layer_images()] == ["cells"]


def test_layer_predictions_use_the_chosen_device(monkeypatch, tmp_path):
    """Layer-mode predictions run on the run's device (they used to be forced to the CPU)."""
    import threading
    from types import SimpleNamespace

    import napari_pointseg.core.bundle as bundle_mod
    import napari_pointseg.core.models as models_mod
    from napari_pointseg.widgets._dataset_worker import LayerImage, predict_layers

    seen = {}

    class FakeBundle:
        def build(self, device):
            seen["build"] = device
            return "net"

    def fake_predict(b, data, channel_axis, rgb=None, device="auto", model=None):
        seen["predict"] = (device, model)
        return np.ones(data.shape, np.int64)

    monkeypatch.setattr(bundle_mod, "load_bundle", lambda path: FakeBundle())
    monkeypatch.setattr(bundle_mod, "predict_with_bundle", fake_predict)
    monkeypatch.setattr(models_mod, "choose_device", lambda name: f"resolved {name}")
    layers = [LayerImage("cells", np.zeros((8, 8), np.uint16))]
    opts = SimpleNamespace(device="cuda", channel_axis="auto")
    res = predict_layers(tmp_path / "model.safetensors", {"cells": "cells"}, layers, opts, threading.Event())
    assert seen == {"build": "resolved cuda", "predict": ("cuda", "net")}
    assert res.predictions["cells"].shape == (8, 8)


def test_close_viewer_during_a_run_cancels_it(widget, two, tmp_path, qtbot):
    """Closing the viewer (a dock widget gets no closeEvent then) cancels the run; its thread
    ends, and its late events touch nothing."""
    from qtpy.QtCore import QThreadPool

    from napari_pointseg.widgets._threads import live_workers

    viewer, w = widget
    qtbot.waitUntil(lambda: live_workers() == 0, timeout=60_000)
    pool_before = QThreadPool.globalInstance().activeThreadCount()
    w.data_edit.setText(str(two / "train"))
    w.out_edit.setText(str(tmp_path / "out"))
    w.overrides["dataset_config"]["iterations"] = 100_000
    w.run()
    qtbot.waitUntil(lambda: w.stage_label.text() != "idle", timeout=TIMEOUT_MS)
    viewer.close()
    assert w._cancel.is_set()
    qtbot.waitUntil(lambda: live_workers() == 0, timeout=60_000)
    assert QThreadPool.globalInstance().activeThreadCount() <= pool_before
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert not [n for n in w.notes if n[0] == "error"], w.notes


def test_bench_dataset_widget_plain_run_uses_the_widget_options(bench_module, tmp_path):
    """benchmarks/bench_dataset_widget.py's reference run: the PipelineOptions the widget run
    pickled, through the same generator without Qt, into its own output folder."""
    import pickle

    from napari_pointseg.dataset.pipeline import PipelineOptions

    bench = bench_module("bench_dataset_widget")
    bench.make_data(tmp_path, n_train=1, size=64)
    assert not (tmp_path / "test" / "points").exists() and (tmp_path / "test" / "masks").is_dir()
    options = PipelineOptions(
        data=tmp_path / "train", out=tmp_path / "widget_out", test=tmp_path / "test", **OVERRIDES
    )
    (tmp_path / "options.pickle").write_bytes(pickle.dumps(options))
    res = bench.run_plain(tmp_path / "options.pickle", tmp_path / "plain_out")
    assert res["seconds"] > 0 and 0 <= res["miou"] <= 1
    assert (tmp_path / "plain_out" / "model.safetensors").is_file()
    assert not (tmp_path / "widget_out").exists()
