"""Widget 2 "Dataset training" with 3D stacks (run under Xvfb: xvfb-run -a python -m pytest ...)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from test_dataset_3d import POINT_PLANES, Z, stacks  # noqa: F401 - the fixture
from test_dataset_widget import TIMEOUT_MS, widget  # noqa: F401 - the fixture

pytest.importorskip("napari")


def test_folder_with_a_stack_opens_stack_results(widget, stacks, tmp_path, qtbot):  # noqa: F811
    viewer, w = widget
    root, _ = stacks
    w.data_edit.setText(str(root / "train"))
    w.test_edit.setText(str(root / "test"))
    w.out_edit.setText(str(tmp_path / "out"))
    w.run()
    qtbot.waitUntil(lambda: not w.is_running, timeout=TIMEOUT_MS)
    assert w.summary is not None, w.log.toPlainText()
    assert sorted(w.summary["pseudo_labels"]) == ["img_000", "vol_z001", "vol_z004"]
    assert 0 <= w.summary["miou"] <= 1
    assert viewer.layers["tvol"].data.shape == (Z, 64, 64)
    assert viewer.layers["tvol prediction"].data.shape == (Z, 64, 64)


def test_folder_without_test_shows_planes(widget, stacks, tmp_path, qtbot):  # noqa: F811
    """Without a test folder the pseudo-labels open: a stack's plane next to its label."""
    viewer, w = widget
    root, _ = stacks
    w.data_edit.setText(str(root / "train"))
    w.out_edit.setText(str(tmp_path / "out"))
    w.run()
    qtbot.waitUntil(lambda: not w.is_running, timeout=TIMEOUT_MS)
    assert w.summary is not None, w.log.toPlainText()
    assert viewer.layers["vol_z001"].data.shape == (64, 64)
    assert "cannot open" not in w.log.toPlainText()


def test_layer_mode_with_a_stack_and_3d_points(widget, stacks, tmp_path, qtbot):  # noqa: F811
    from napari_pointseg.core.points import PointSet

    viewer, w = widget
    root, _ = stacks
    vol = tifffile.imread(root / "train" / "images" / "vol.tif")
    pts = PointSet.from_csv(root / "train" / "points" / "vol.csv")
    viewer.add_image(vol, name="vol")
    viewer.add_points(pts.coords, name="vol points", features={"label": pts.labels, "order": pts.order})
    w.layers_radio.setChecked(True)
    w.out_edit.setText(str(tmp_path / "out"))
    w.run()
    qtbot.waitUntil(lambda: not w.is_running, timeout=TIMEOUT_MS)
    assert w.summary is not None, w.log.toPlainText()
    assert w.summary["n_annotated"] == len(POINT_PLANES)
    assert sorted(w.summary["pseudo_labels"]) == [f"vol_z{z:03d}" for z in POINT_PLANES]
    qtbot.waitUntil(lambda: "vol dataset prediction" in viewer.layers, timeout=30_000)
    pred = viewer.layers["vol dataset prediction"].data
    assert pred.shape == (Z, 64, 64) and set(np.unique(pred)) <= {1, 2}
