"""Screenshot of the "Annotate & train" widget in use -> docs/widget.png.

Opens napari in a real window (on a headless Linux machine run it under Xvfb:
``xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshot_widget.py``), loads the
nuclei sample, clicks human-like points, trains briefly and saves the whole window.

``--scribbles`` (-> docs/scribbles.png): paints brush strokes on the "nuclei scribbles" Labels
layer instead (a few long background strokes, a short stroke across some nuclei, through
napari's own paint code, one stroke per press-drag-release) plus a handful of clicks, trains
on both and shows the strokes over the prediction.
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
    ap.add_argument("--out", default=None, help="default docs/widget.png (docs/scribbles.png)")
    ap.add_argument("--scribbles", action="store_true", help="paint strokes instead of most clicks")
    ap.add_argument("--size", type=int, default=256, help="crop of the sample shown")
    ap.add_argument("--max-seconds", type=float, default=240)
    args = ap.parse_args(argv)
    args.out = args.out or str(ROOT / "docs" / ("scribbles.png" if args.scribbles else "widget.png"))

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_pointseg.widgets.annotate_widget import AnnotateWidget

    try:
        from napari_pointseg.samples.files import load_sample

        image, mask, points = load_sample("nuclei")[:3]
        s = args.size
        image, mask = np.asarray(image)[:s, :s], np.asarray(mask)[:s, :s]
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

    if args.scribbles:
        widget.add_points(coords[:6], labels[:6])
        paint_strokes(widget, mask, np.random.default_rng(0))
        coords, labels, n0 = coords[6:12], labels[6:12], 0
    else:
        n0 = max(6, len(coords) * 2 // 3)
        widget.add_points(coords[:n0], labels[:n0])
    widget.start_training()
    spin(args.max_seconds / 2, lambda: widget.n_predictions > 0)
    widget.add_points(coords[n0:], labels[n0:])  # clicks while training
    spin(args.max_seconds, lambda: widget.last_update is not None and widget.last_update.waiting)
    widget.pick_class(2)
    if args.scribbles:
        scribbles = widget.scribbles.layer
        viewer.layers.move(viewer.layers.index(scribbles), len(viewer.layers))
        scribbles.opacity = 1.0
        widget.prediction_layer.contour = 2  # outlines: the strokes stay visible on top
        widget.paint_scribbles()
    else:
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


def paint_strokes(widget, mask, rng) -> None:
    """Brush strokes like a user's: long ones through the background (class 1), a short one
    across each of some nuclei (class 2), each painted with napari's brush as one stroke."""
    from scipy import ndimage as ndi

    widget.paint_scribbles()
    layer = widget.scribbles.layer
    layer.brush_size = 3
    far = ndi.distance_transform_edt(mask == 1) > 4
    nuclei, count = ndi.label(mask == 2)
    strokes = []
    for _ in range(6):  # background: straight runs of 30-70 px that stay off the nuclei
        y, x = np.argwhere(far)[rng.integers(far.sum())]
        angle, length = rng.uniform(0, np.pi), rng.integers(30, 70)
        t = np.arange(-length // 2, length // 2)
        path = np.stack([y + t * np.sin(angle), x + t * np.cos(angle)], axis=1).round().astype(int)
        path = path[np.all((path >= 0) & (path < mask.shape), axis=1)]
        strokes.append((1, path[far[tuple(path.T)]]))
    for label in rng.permutation(np.arange(1, count + 1))[: max(4, count // 3)]:
        ys, xs = np.nonzero(nuclei == label)
        if len(ys) < 30:
            continue
        inner = ndi.binary_erosion(nuclei == label, iterations=2)
        y = int(round(ys.mean()))
        row = np.arange(xs.min(), xs.max() + 1)
        path = np.stack([np.full(len(row), y), row], axis=1)
        strokes.append((2, path[inner[y, row]]))
    for value, path in strokes:
        widget.pick_class(value)
        with layer.block_history():  # press, drag, release: one paint event
            for y, x in path:
                layer.paint((int(y), int(x)), value, refresh=False)
        layer.refresh()


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
