"""Screenshot of the "Annotate & train" widget in use -> docs/widget.png.

Opens napari in a real window (on a headless Linux machine run it under Xvfb:
``xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshot_widget.py``), loads the
nuclei sample, clicks human-like points, trains briefly and saves the whole window.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "widget.png"))
    ap.add_argument("--size", type=int, default=256, help="crop of the sample shown")
    ap.add_argument("--max-seconds", type=float, default=240)
    args = ap.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_pointseg.widgets.annotate_widget import AnnotateWidget

    try:
        from napari_pointseg.samples.files import load_sample

        image, mask, points = load_sample("nuclei")[:3]
        s = args.size
        image = np.asarray(image)[:s, :s]
        sel = np.all(points.coords < s, axis=1)
        coords, labels = points.coords[sel], points.labels[sel]
    except Exception:  # noqa: BLE001 - sample files not generated: same generator
        from napari_pointseg.samples.clicks import human_like_points
        from napari_pointseg.samples.synthetic import make_nuclei

        image, mask = make_nuclei(args.size, seed=0)
        coords, labels = human_like_points(mask, 0.0015, seed=0)

    viewer = napari.Viewer(title="napari-pointseg: Annotate & train", show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.add_image(image, name="nuclei", colormap="gray")
    widget = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Annotate & train", area="right")
    widget.classes.rename(2, "nucleus")
    widget.train_overrides = {"crop_size": 96, "batch_size": 3}
    app = QApplication.instance()

    def spin(seconds, until=lambda: False):
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end and not until():
            app.processEvents()
            time.sleep(0.005)

    n0 = max(6, len(coords) * 2 // 3)
    widget.add_points(coords[:n0], labels[:n0])
    widget.start_training()
    spin(args.max_seconds / 2, lambda: widget.n_predictions > 0)
    widget.add_points(coords[n0:], labels[n0:])  # clicks while training
    spin(args.max_seconds, lambda: widget.last_update is not None and widget.last_update.waiting)
    widget.pick_class(2)
    viewer.layers.selection.active = widget.points_layer
    widget.points_layer.mode = "add"
    viewer.reset_view()
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()  # a notification would cover the image
    try:  # the activity dock with the training's progress bar and its Cancel (napari-private)
        viewer.window._qt_window._activity_dialog.show()
    except AttributeError:
        pass
    spin(1.0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.window.screenshot(str(out), canvas_only=False)
    widget.stop_training()
    spin(10, lambda: not widget.is_training)
    print(f"wrote {out} ({widget.status.text()})")
    widget.shutdown()
    viewer.close()
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
