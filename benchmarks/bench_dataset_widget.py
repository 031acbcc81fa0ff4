"""The "Dataset training" widget in a real napari window vs the same pipeline in a plain process.

    xvfb-run -a python benchmarks/bench_dataset_widget.py [--n-train 3] [--size 256] [--repeats 1]

Writes a synthetic nuclei data set (``samples.files.make_dataset``: ``--n-train`` clicked
training images, one test image with its mask), then, in turn and each in its own process:

- widget: napari opens a window with the widget docked, the folders are typed in, Run; the
  clock runs from Run until the widget says the run is over (the event loop keeps running, as
  for a user watching the progress bar);
- plain: the same pipeline options (the widget's, pickled by the widget run) through the same
  generator (`_dataset_worker.dataset_loop`) in a process without Qt.

Reports both times, their ratio and the test mIoU of both (the same, unless the runs diverge);
prints a table and writes ``benchmarks/results/bench_dataset_widget.json``. The two must stay
close: anything the window does while a run trains (repaints, progress updates) costs the
training CPU time on a 2-core machine. Run it alone.
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine_info

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "bench_dataset_widget.json"


def make_data(root: Path, n_train: int, size: int) -> None:
    """train/ with ``n_train`` clicked images, test/ with one image and its mask."""
    import shutil

    from napari_pointseg.samples.files import make_dataset

    make_dataset(root / "train", n_images=n_train, size=size, seed=5)
    make_dataset(root / "test", n_images=1, size=size, seed=6)
    shutil.rmtree(root / "test" / "points")


def run_widget(root: Path, out: Path, options_file: Path) -> dict:
    """One run of the widget in a shown napari window; pickles its PipelineOptions."""
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_pointseg.widgets.dataset_widget import DatasetWidget

    viewer = napari.Viewer(show=True)
    widget = DatasetWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.data_edit.setText(str(root / "train"))
    widget.test_edit.setText(str(root / "test"))
    widget.out_edit.setText(str(out))
    options_file.write_bytes(pickle.dumps(widget._options()))
    app = QApplication.instance()
    t0 = time.perf_counter()
    widget.run()
    while widget.is_running:
        app.processEvents()
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    summary = widget.summary or {}
    viewer.close()
    return {"seconds": round(seconds, 1), "miou": summary.get("miou")}


def run_plain(options_file: Path, out: Path) -> dict:
    """The widget's options through the same generator, without Qt."""
    import threading
    from dataclasses import replace

    from napari_pointseg.dataset.events import Done, Message
    from napari_pointseg.widgets._dataset_worker import dataset_loop

    opts = replace(pickle.loads(options_file.read_bytes()), out=out)
    summary = {}
    t0 = time.perf_counter()
    for event in dataset_loop(opts, threading.Event()):
        if isinstance(event, Message) and event.level == "error":
            raise SystemExit(event.text)
        if isinstance(event, Done):
            summary = event.summary
    return {"seconds": round(time.perf_counter() - t0, 1), "miou": summary.get("miou")}


def child(mode: str, root: Path, out: Path, options_file: Path) -> dict:
    """Run ``mode`` in a fresh process; its result dict."""
    cmd = [sys.executable, __file__, "--child", mode, "--work", str(root), "--child-out", str(out)]
    cmd += ["--options-file", str(options_file)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"{mode} run failed:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=3, help="clicked training images")
    ap.add_argument("--size", type=int, default=256, help="image side (px)")
    ap.add_argument("--repeats", type=int, default=1, help="pairs of runs (widget, then plain)")
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--options-file", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        out, options_file = Path(args.child_out), Path(args.options_file)
        if args.child == "widget":
            print(json.dumps(run_widget(Path(args.work), out, options_file)))
        else:
            print(json.dumps(run_plain(options_file, out)))
        return 0

    root = Path(args.work or tempfile.mkdtemp(prefix="bench_dataset_widget_"))
    if not (root / "train").is_dir():
        make_data(root, args.n_train, args.size)
    options_file = root / "options.pickle"
    rows = []
    for r in range(args.repeats):
        row = {"repeat": r}
        for mode in ("widget", "plain"):
            row[mode] = child(mode, root, root / f"out_{mode}_{r}", options_file)
            print(f"repeat {r} {mode}: {row[mode]['seconds']} s, test mIoU {row[mode]['miou']}", flush=True)
        row["ratio"] = round(row["widget"]["seconds"] / row["plain"]["seconds"], 2)
        rows.append(row)

    print(f"\n{args.n_train} training images of {args.size}², 1 test image; widget in a shown window")
    print("| repeat | widget s | plain s | widget / plain | test mIoU widget / plain |")
    print("|---|---|---|---|---|")
    for row in rows:
        w, p = row["widget"], row["plain"]
        print(
            f"| {row['repeat']} | {w['seconds']} | {p['seconds']} | {row['ratio']} | {w['miou']:.4f} / {p['miou']:.4f} |"
        )
    result = {"args": vars(args), "rows": rows, "machine": machine_info()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
