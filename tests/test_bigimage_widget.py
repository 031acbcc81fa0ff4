""" "Predict image" on a large (dask-backed / multiscale) layer: tile by tile in the background,
tiles shown as they finish, the layer never loaded whole (pytest-qt, real napari viewer)."""

from __future__ import annotations

import numpy as np
import pytest
from _synth import TINY_SPEC, blobs, fast_config, random_points

from napari_pointseg.core import tiled_predict as tp
from napari_pointseg.core.bundle import load_bundle, save_trainer
from napari_pointseg.core.features import FilterBank
from napari_pointseg.core.session import make_trainer
from napari_pointseg.core.train_setup import TrainSetup
from napari_pointseg.widgets import _messages
from napari_pointseg.widgets import annotate_widget as aw
from napari_pointseg.widgets._bigimage import is_big_layer

WAIT = 120_000  # ms


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    image, mask = blobs(128, 2, noise=0.1)
    setup = TrainSetup(spec=TINY_SPEC, config=fast_config(), device="cpu", filter_bank=FilterBank((1.0, 2.0)))
    tr = make_trainer(image, random_points(mask, 40, 2), setup=setup).train_all()
    return save_trainer(tmp_path_factory.mktemp("b") / "model", tr)


def _widget_with_bundle(make_napari_viewer, qtbot, bundle_path, image):
    """A viewer with ``image`` as a dask-backed layer "big" and the annotate widget holding the
    bundle, idle, with tiles of 64 px."""
    import dask.array as da

    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(image, chunks=64), name="big")
    widget = aw.AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Annotate & train")
    widget.load_model(str(bundle_path))
    qtbot.waitUntil(lambda: widget.bundle is not None and not widget.busy, timeout=WAIT)
    widget.results.big_tile = 64
    return widget


def test_predict_image_on_dask_layer_goes_tile_by_tile(bundle_path, make_napari_viewer, qtbot, monkeypatch):
    monkeypatch.setattr(_messages, "notify", lambda kind, msg: None)
    image, _ = blobs(256, 3, noise=0.1)
    widget = _widget_with_bundle(make_napari_viewer, qtbot, bundle_path, image)
    assert is_big_layer(widget.image, widget.image_geometry())
    assert not widget.preparing and not widget.training.prepared  # nothing loaded ahead
    shown = []
    widget.predict_all()
    big = widget.results.big
    assert big is not None
    qtbot.waitUntil(lambda: big.done > 0 and not shown.append(big.done), timeout=WAIT)
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT)
    assert big.n_tiles == 16 and big.done == 16
    assert shown[0] < 16  # the first tiles were in the layer before the last one was done
    layer = widget.prediction_layer
    assert layer.name == "big prediction" and layer.data.shape == (256, 256)
    expected = tp.predict_tiled(load_bundle(bundle_path), image, tile=64, device="cpu")
    assert (np.asarray(layer.data) == expected).mean() >= 0.999  # bf16 in another thread: ~same
    assert widget.results.n_predictions == 1


def test_multiscale_zarr_layer_is_predicted_from_level0_in_tiles(
    bundle_path, make_napari_viewer, qtbot, monkeypatch
):
    monkeypatch.setattr(_messages, "notify", lambda kind, msg: None)
    import zarr

    image, _ = blobs(128, 4, noise=0.1)
    level0 = zarr.create_array(store={}, shape=image.shape, chunks=(32, 32), dtype=image.dtype)
    level0[:] = image
    viewer = make_napari_viewer()
    viewer.add_image([level0, image[::2, ::2]], name="pyramid", multiscale=True)
    widget = aw.AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Annotate & train")
    widget.load_model(str(bundle_path))
    qtbot.waitUntil(lambda: widget.bundle is not None and not widget.busy, timeout=WAIT)
    widget.results.big_tile = 64
    widget.predict_all()
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT)
    big = widget.results.big
    assert big.n_tiles == 4 and big.done == 4
    assert widget.prediction_layer.data.shape == (128, 128)
    assert set(np.unique(widget.prediction_layer.data)) <= {1, 2}
    assert not widget.training.prepared  # the layer was never prepared (loaded) whole


def test_network_trained_on_a_dask_layer_predicts_it_tile_by_tile(make_napari_viewer, qtbot, monkeypatch):
    """No bundle: the network trained on the (lazy) layer is used once training is stopped."""
    import dask.array as da

    seen = []
    monkeypatch.setattr(_messages, "notify", lambda kind, msg: seen.append((kind, msg)))
    image, mask = blobs(128, 5, noise=0.1)
    viewer = make_napari_viewer()
    viewer.add_image(da.from_array(image, chunks=64), name="lazy")
    widget = aw.AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Annotate & train")
    widget.train_overrides = dict(iters_per_step=4, min_iters_per_step=2, final_iters=20, threads=1)
    pts = random_points(mask, 30, 5)
    widget.add_points(pts.coords, pts.labels)
    widget.start_training()
    qtbot.waitUntil(lambda: widget.trainer is not None and widget.is_training, timeout=WAIT)
    widget.predict_all()  # refused while training: the network is in use
    assert any("stop training" in msg for _, msg in seen), seen
    assert widget.results.big.n_tiles == 0
    qtbot.waitUntil(lambda: widget.last_update is not None and widget.last_update.waiting, timeout=WAIT)
    widget.stop_training()
    qtbot.waitUntil(lambda: not widget.is_training and not widget.busy, timeout=WAIT)
    widget.results.big_tile = 64
    widget.predict_all()
    qtbot.waitUntil(lambda: widget.results.big is not None and not widget.busy, timeout=WAIT)
    big = widget.results.big
    assert big.n_tiles == 4 and big.done == 4
    expected = widget.trainer.predict(0)
    assert (np.asarray(widget.prediction_layer.data) == expected).mean() >= 0.98


def test_large_image_prediction_counts_tiles_in_the_activity_dock_and_cancels(
    bundle_path, make_napari_viewer, qtbot, monkeypatch
):
    """The tiled prediction has a counting napari progress bar whose Cancel stops the worker:
    the tiles done stay in the layer, the bar closes and the widget is idle again."""
    from napari_pointseg.widgets._progress import open_bars

    notes = []
    monkeypatch.setattr(_messages, "notify", lambda kind, msg: notes.append((kind, msg)))
    image, _ = blobs(512, 3, noise=0.1)
    widget = _widget_with_bundle(make_napari_viewer, qtbot, bundle_path, image)
    widget.predict_all()
    big = widget.results.big
    qtbot.waitUntil(lambda: big.done >= 2, timeout=WAIT)
    bar = big.activity.bar
    assert bar in open_bars() and big.activity.cancelable
    assert bar.total == big.n_tiles == 64 and big.activity.value == big.done
    big.activity.cancel()  # what the dock's Cancel button does
    qtbot.waitUntil(lambda: not widget.busy, timeout=WAIT)
    assert big.activity.closed and bar not in open_bars()
    assert 2 <= big.done < 64 and widget.results.n_predictions == 0
    assert any("cancelled" in msg for kind, msg in notes if kind == "info")
