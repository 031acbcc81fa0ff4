"""Screenshot of "Predict image" on a large dask-backed layer, tiles appearing -> docs/bigimage.png.

Under Xvfb: ``xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshot_bigimage.py``.
The image is the synthetic H&E-like RGB of `benchmarks/bench_bigimage.py`, built lazily as a
dask array (one 512² block per tile of the generator: never in memory whole); the bundle is
``--bundle`` or one trained briefly as the benchmark does. The window is saved when about
``--fraction`` of the tiles are shown.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def lazy_image(size: int):
    """A dask array (size, size, 3) uint8 of the benchmark's synthetic tiles."""
    import dask.array as da
    from bench_bigimage import TILE, _tile_content

    n = -(-size // TILE)

    def block(block_info=None):
        (y0, _), (x0, _), _ = block_info[None]["array-location"]
        return _tile_content(y0 // TILE, x0 // TILE, TILE)[0]

    return da.map_blocks(block, dtype=np.uint8, chunks=((TILE,) * n, (TILE,) * n, (3,)))


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "bigimage.png"))
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--tile", type=int, default=512)
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--fraction", type=float, default=0.45)
    ap.add_argument("--max-seconds", type=float, default=900)
    args = ap.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_pointseg.widgets.annotate_widget import AnnotateWidget

    bundle = args.bundle
    if bundle is None:
        from bench_bigimage import make_bundle

        bundle = str(make_bundle(Path("/tmp") / "pointseg_screenshot_model"))
    viewer = napari.Viewer(title="napari-pointseg: Predict image on a large layer", show=True)
    viewer.window._qt_window.resize(1500, 950)
    viewer.add_image(lazy_image(args.size), name="slide", rgb=True)
    widget = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Annotate & train", area="right")
    app = QApplication.instance()

    def spin(seconds, until=lambda: False):
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end and not until():
            app.processEvents()
            time.sleep(0.01)

    widget.load_model(bundle)
    spin(120, lambda: widget.bundle is not None and not widget.busy)
    widget.results.big_tile = args.tile
    widget.predict_all()
    big = widget.results.big
    spin(args.max_seconds, lambda: big.n_tiles and big.done >= args.fraction * big.n_tiles)
    viewer.reset_view()
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    spin(1.0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.window.screenshot(str(out), canvas_only=False)
    print(f"{out}: {big.done} / {big.n_tiles} tiles shown")
    if big.worker is not None:
        big.worker.quit()
    spin(30, lambda: not widget.busy)
    viewer.close()
    return out


if __name__ == "__main__":
    main()
