"""Screenshot of widget 2 "Dataset training" after a small run -> docs/dataset_widget.png.

Run in a real (virtual) window: ``xvfb-run -a python scripts/screenshot_dataset_widget.py``.
Makes a tiny synthetic data set, runs the pipeline from the widget with a short recipe, and
saves the whole napari window (canvas with the results + the dock widget).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "dataset_widget.png"


def _close_notifications(viewer, keep: str = "Dataset training done") -> None:
    """Hide napari's toast notifications before the screenshot, except the run's result."""
    try:
        from napari._qt.dialogs.qt_notification import NapariQtNotification
    except ImportError:  # private module moved: keep the toast
        return
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        if not toast.message.text().startswith(keep):
            toast.close()


def main() -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_pointseg.samples.files import make_dataset
    from napari_pointseg.widgets.dataset_widget import DatasetWidget

    root = Path(tempfile.mkdtemp(prefix="pointseg_shot_"))
    make_dataset(root / "train", n_images=4, size=128, seed=11)
    make_dataset(root / "test", n_images=2, size=128, seed=12)
    shutil.rmtree(root / "test" / "points")
    (root / "train" / "points" / "img_003.csv").unlink()  # one image for the oracle

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    w = DatasetWidget(viewer)
    viewer.window.add_dock_widget(w, name="Dataset training", area="right")
    w.data_edit.setText(str(root / "train"))
    w.test_edit.setText(str(root / "test"))
    w.out_edit.setText(str(root / "out"))
    w.fraction_spin.setValue(75)
    w.iter_spin.setValue(400)
    w.overrides = dict(
        image_config=dict(
            iters_per_step=2, min_iters_per_step=1, final_iters=10, crop_size=64, step_growth=0.3
        ),
        spec=dict(encoder_depth=3, decoder_channels=[32, 16, 8]),
        threads=1,
        dataset_config=dict(crop_size=96, batch_size=4),
    )
    w.run()
    app = QApplication.instance()
    t0 = time.time()
    while w.is_running and time.time() - t0 < 900:
        app.processEvents()
        time.sleep(0.05)
    for _ in range(20):
        app.processEvents()
        time.sleep(0.05)
    if w.summary is None:
        print("the run did not finish:", w.log.toPlainText(), file=sys.stderr)
        return 1
    for ly in viewer.layers:
        if ly.name != "img_000" and ly.name != "img_000 prediction":
            ly.visible = False
    viewer.reset_view()
    _close_notifications(viewer)
    for _ in range(10):
        app.processEvents()
        time.sleep(0.05)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(OUT), canvas_only=False)
    print(f"test mIoU {w.summary['miou']:.3f}; screenshot {OUT}")
    viewer.close()
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
