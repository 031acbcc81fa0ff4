"""Benchmark the "Annotate & train" widget in a real napari window (run under Xvfb on Linux).

    xvfb-run -a python benchmarks/bench_widget.py [--seconds 20] [--size 512]
        [--sample nuclei|cells|tissue] [--config '{"forest_trees": 50}']

Drives the real widget on a 512 x 512 sample (nuclei: grey; tissue: RGB, so it trains with the
click forest) with the product defaults (or ``--config`` TrainConfig overrides) and reports

- first_update_s: from the first batch of clicks (Train pressed with them) to the first
  prediction layer update (targets <= 3 s),
- stall_p95_ms: 95th percentile of event-loop stalls while training, measured by a QTimer
  probe every 10 ms (stall = probe interval - 10 ms; target <= 100 ms), plus max / p50,
- stop_s: from pressing Stop until the training thread has finished (target <= 1 s),
- click_answer_s: for each later batch of clicks, from the click to the first prediction
  layer update trained with it (the trainer had admitted that many points), median and max;
  a prediction one iteration after a click counts here but rarely shows it yet, so
- click_shown_s: for each later batch that the overlay before it contradicted, from the click
  to the first live prediction that shows every point of the batch with its label, median
  and max (target <= 2 s: the issue's "a new click taken into account within ~2 s"), and
  how many such batches were shown before the end (one never shown fails the target),
- iterations per second, prediction updates per second, the mIoU reached and the largest
  mIoU drop between consecutive live predictions (the overlay the user watches), overall and
  once the overlay has passed 0.8 (the issue asks for none above 0.05 there).

While training, the script keeps "clicking": a new batch of points every 2 s (`--click-every`), as a user would.
Writes benchmarks/results/bench_widget.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from machine import machine_info

TARGETS = {"first_update_s": 3.0, "stall_p95_ms": 100.0, "stop_s": 1.0, "click_shown_max_s": 2.0}


def load_data(size: int, sample: str = "nuclei"):
    """(image, mask, click coords, click labels, source, rgb) of a sample cropped to ``size``."""
    try:
        from napari_pointseg.samples.files import load_sample

        s = load_sample(sample)
        image, mask, points, axis, rgb = (
            np.asarray(s.image),
            np.asarray(s.mask)[:size, :size],
            s.points,
            s.channel_axis,
            s.rgb,
        )
        image = (
            np.moveaxis(np.moveaxis(image, axis, 0)[:, :size, :size], 0, axis)
            if axis is not None
            else image[:size, :size]
        )
        sel = np.all(points.coords < size, axis=1)
        coords, labels, source = points.coords[sel], points.labels[sel], f"sample_files {sample}"
        return image, mask.astype(np.int64), coords, labels, source, rgb
    except Exception:  # noqa: BLE001 - sample files not there: the same generator
        if sample != "nuclei":
            raise
        from napari_pointseg.samples.clicks import human_like_points
        from napari_pointseg.samples.synthetic import make_nuclei

        image, mask = make_nuclei(size, seed=0)
        coords, labels = human_like_points(mask, 0.0015, seed=0)
        source = "synthetic make_nuclei(seed=0)"
    return image, mask.astype(np.int64), coords, labels, source, False


def iterations_since_new_points(history: list[dict], iterations: list[int]) -> list[int | None]:
    """For each live prediction (made after iteration ``iterations[i]``), how many iterations
    had trained since the trainer last admitted new points (None: no record)."""
    admitted_at, last_n = [], None
    for h in history:
        if h["n_active"] != last_n:
            admitted_at.append(h["iteration"])
            last_n = h["n_active"]
    out: list[int | None] = []
    for it in iterations:
        before = [a for a in admitted_at if a <= it]
        out.append(it - before[-1] + 1 if before else None)
    return out


def drop_after(live: list[float], level: float) -> float | None:
    """The largest fall of the mIoU between consecutive overlays from the first one at or above
    ``level`` on (0.0 when it never fell), or None when none reached ``level``."""
    start = next((i for i, v in enumerate(live) if v >= level), None)
    if start is None:
        return None
    return round(float(max([a - b for a, b in zip(live[start:], live[start + 1 :])] + [0.0])), 4)


def clicks_shown(overlays, times, batches, coords, labels) -> tuple[list[float], int]:
    """Seconds from each batch of clicks that the overlay before it contradicted (some point's
    label is not what the overlay shows there) to the first later overlay that shows every
    point of the batch with its label; and how many such batches no overlay showed so.
    ``batches``: (click time, first, end) index ranges into ``coords`` / ``labels``."""
    delays, never = [], 0
    for t, a, b in batches:
        yx, lab = coords[a:b].astype(int), labels[a:b]
        before = [o for o, to in zip(overlays, times) if to <= t]
        if not before or np.all(before[-1][yx[:, 0], yx[:, 1]] == lab):
            continue  # nothing to correct: the overlay showed these labels already
        later = [to for o, to in zip(overlays, times) if to > t and np.all(o[yx[:, 0], yx[:, 1]] == lab)]
        if later:
            delays.append(later[0] - t)
        else:
            never += 1
    return delays, never


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="training time to probe")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument(
        "--cold",
        action="store_true",
        help="press Train 2 s after opening the widget, while torch may still be importing",
    )
    ap.add_argument("--first-batch", type=int, default=6, help="points in the first click batch")
    ap.add_argument("--batch", type=int, default=3, help="points per later click batch")
    ap.add_argument("--click-every", type=float, default=2.0, help="seconds between click batches")
    ap.add_argument("--sample", default="nuclei", choices=("nuclei", "cells", "tissue"))
    ap.add_argument("--config", default="{}", help="TrainConfig overrides as JSON")
    ap.add_argument(
        "--hide-window",
        action="store_true",
        help="never show the napari window: what napari's main thread costs the training thread",
    )
    ap.add_argument("--out", default=str(Path(__file__).with_name("results") / "bench_widget.json"))
    args = ap.parse_args(argv)

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_pointseg.core.metrics import miou
    from napari_pointseg.widgets.annotate_widget import AnnotateWidget

    image, mask, coords, labels, source, rgb = load_data(args.size, args.sample)
    viewer = napari.Viewer(show=not args.hide_window)
    viewer.window._qt_window.resize(1400, 900)
    viewer.add_image(image, name=args.sample, rgb=rgb)
    widget = AnnotateWidget(viewer)
    widget.train_overrides = json.loads(args.config)
    viewer.window.add_dock_widget(widget, name="Annotate & train")
    app = QApplication.instance()

    def spin(seconds, until=lambda: False):
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end and not until():
            app.processEvents()
            time.sleep(0.002)
        return until()

    # The widget imports torch in the background when it opens (cold: ~8 s here), then
    # prepares the chosen image's network input and warms up the kernels (~1-2 s). A user
    # spends longer than that placing a first batch of points, so by default the clock starts
    # once both are done; --cold starts it 1 s after opening (the import still running).
    t_open = time.perf_counter()
    imported = lambda: "segmentation_models_pytorch" in __import__("sys").modules  # noqa: E731
    spin(1.0 if args.cold else 60.0, imported)
    warm_up_s = time.perf_counter() - t_open if imported() else None
    if not args.cold:
        spin(60.0, lambda: widget.input_prepared)
    prepared_s = time.perf_counter() - t_open if widget.input_prepared else None
    spin(1.0)  # let the window settle

    # event-loop probe
    ticks: list[float] = []
    probe = QTimer()
    probe.setInterval(10)
    probe.timeout.connect(lambda: ticks.append(time.perf_counter()))

    first = args.first_batch
    widget.add_points(coords[:first], labels[:first])
    t0 = time.perf_counter()
    assert widget.start_training(), widget.status.text()
    probe.start()
    spin(120, lambda: widget.n_predictions > 0)
    first_update = time.perf_counter() - t0
    n0 = widget.n_predictions
    it_start = widget.trainer.iteration if widget.trainer is not None else 0
    t_train = time.perf_counter()
    next_click = t_train + args.click_every
    added = first
    stall_from = len(ticks)
    waiting: list[tuple[float, int]] = []  # (click time, points clicked by then) not yet answered
    answers: list[float] = []
    shown = widget.n_predictions
    overlays = []  # each live prediction the user saw (scored after the run)
    shown_at: list[tuple[float, int]] = []  # ... when (s since Train) and after which iteration
    batches: list[tuple[float, int, int]] = []  # (click time, first, end) of each later batch
    while time.perf_counter() - t_train < args.seconds:
        app.processEvents()
        time.sleep(0.002)
        if widget.n_predictions != shown:
            shown = widget.n_predictions
            overlays.append(np.array(widget.prediction_layer.data, copy=True))
            update = widget.last_update
            now = time.perf_counter()
            shown_at.append((now - t_train, update.iteration if update is not None else 0))
            n_in = update.n_active if update is not None else 0
            answers += [now - t for t, n in waiting if n <= n_in]
            waiting = [(t, n) for t, n in waiting if n > n_in]
        # no clicks in the last 3 s: every batch gets the time to be answered
        late = time.perf_counter() - t_train > args.seconds - 3.0
        if time.perf_counter() >= next_click and added < len(coords) and not late:
            widget.add_points(coords[added : added + args.batch], labels[added : added + args.batch])
            added += args.batch
            waiting.append((time.perf_counter(), added))
            batches.append((time.perf_counter(), added - args.batch, min(added, len(coords))))
            next_click += args.click_every
    seconds = time.perf_counter() - t_train
    iters = widget.trainer.iteration - it_start
    updates = widget.n_predictions - n0
    t_stop = time.perf_counter()
    widget.stop_training()
    spin(30, lambda: not widget.is_training)
    stop_s = time.perf_counter() - t_stop
    probe.stop()
    gaps = np.diff(np.asarray(ticks[stall_from:]))
    stalls_ms = np.maximum(gaps * 1000 - 10.0, 0)
    pred = np.asarray(widget.prediction_layer.data)
    live = [round(float(miou(mask, p)), 4) for p in overlays]
    since = iterations_since_new_points(widget.trainer.history, [it for _, it in shown_at])
    shown_delays, never = clicks_shown(overlays, [t_train + t for t, _ in shown_at], batches, coords, labels)
    drops = -np.diff(live) if len(live) > 1 else np.zeros(1)
    result = {
        "image": f"{source} {image.shape} {image.dtype}",
        "first_update_s": round(first_update, 3),
        "cold": bool(args.cold),
        "window_shown": not args.hide_window,
        "warm_up_import_s": None if warm_up_s is None else round(warm_up_s, 2),
        "input_prepared_s": None if prepared_s is None else round(prepared_s, 2),
        "stall_p50_ms": round(float(np.percentile(stalls_ms, 50)), 1),
        "stall_p95_ms": round(float(np.percentile(stalls_ms, 95)), 1),
        "stall_max_ms": round(float(stalls_ms.max()), 1),
        "stop_s": round(stop_s, 3),
        "click_answer_median_s": round(float(np.median(answers)), 2) if answers else None,
        "click_answer_max_s": round(float(max(answers)), 2) if answers else None,
        "clicks_answered": f"{len(answers)} / {len(answers) + len(waiting)}",
        "click_shown_median_s": round(float(np.median(shown_delays)), 2) if shown_delays else None,
        "click_shown_max_s": round(float(max(shown_delays)), 2) if shown_delays else None,
        "clicks_shown": f"{len(shown_delays)} / {len(shown_delays) + never}",
        "click_shown_s": [round(d, 2) for d in shown_delays],
        "config": json.loads(args.config),
        "clicks": {"first_batch": args.first_batch, "batch": args.batch, "every_s": args.click_every},
        "iters_per_s": round(iters / seconds, 2),
        "prediction_updates_per_s": round(updates / seconds, 2),
        "live_miou": live,
        "live_max_drop": round(float(max(drops.max(), 0.0)), 4),
        "live_max_drop_after_08": drop_after(live, 0.8),
        "live_seconds": [round(t, 2) for t, _ in shown_at],
        "live_iters_since_new_points": since,
        "points_clicked": int(min(added, len(coords))),
        "points_used": int(widget.last_update.n_active) if widget.last_update else 0,
        "miou_at_stop": round(miou(mask, pred), 4),
        "train_seconds": round(seconds, 1),
        "device": widget.last_update.device if widget.last_update else "?",
        "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "machine": machine_info(),
        "targets": TARGETS,
    }
    result["pass"] = {k: result[k] is not None and result[k] <= v for k, v in TARGETS.items()}
    result["pass"]["click_shown_max_s"] &= not never  # a corrected batch never shown fails
    if result["live_max_drop_after_08"] is not None:
        result["pass"]["live_max_drop_after_08"] = result["live_max_drop_after_08"] <= 0.05
    widget.shutdown()
    viewer.close()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    rows = [
        (
            "first prediction update",
            f"{result['first_update_s']:.2f} s",
            "<= 3 s",
            result["pass"]["first_update_s"],
        ),
        (
            "event-loop stall p95",
            f"{result['stall_p95_ms']:.0f} ms",
            "<= 100 ms",
            result["pass"]["stall_p95_ms"],
        ),
        (
            "event-loop stall p50 / max",
            f"{result['stall_p50_ms']:.0f} / {result['stall_max_ms']:.0f} ms",
            "",
            None,
        ),
        ("stop takes effect", f"{result['stop_s']:.2f} s", "<= 1 s", result["pass"]["stop_s"]),
        (
            "click answered (median / max)",
            f"{result['click_answer_median_s']} / {result['click_answer_max_s']} s",
            "",
            None,
        ),
        ("click batches answered", result["clicks_answered"], "", None),
        (
            "click shown (median / max)",
            f"{result['click_shown_median_s']} / {result['click_shown_max_s']} s",
            "<= 2 s",
            result["pass"]["click_shown_max_s"],
        ),
        ("corrections shown", result["clicks_shown"], "", None),
        ("iterations per second", f"{result['iters_per_s']:.1f}", "", None),
        ("prediction updates per second", f"{result['prediction_updates_per_s']:.2f}", "", None),
        ("points used / clicked", f"{result['points_used']} / {result['points_clicked']}", "", None),
        ("mIoU at stop", f"{result['miou_at_stop']:.3f}", "", None),
        ("largest mIoU drop between live updates", f"{result['live_max_drop']:.3f}", "", None),
        (
            "... once past 0.8",
            "never past 0.8"
            if result["live_max_drop_after_08"] is None
            else f"{result['live_max_drop_after_08']:.3f}",
            "<= 0.05",
            result["pass"].get("live_max_drop_after_08"),
        ),
        ("torch import at widget open", f"{result['warm_up_import_s']} s", "", None),
        ("clock started", "1 s after open (--cold)" if result["cold"] else "after the import", "", None),
    ]
    print(
        f"bench_widget: {result['image']}, {result['train_seconds']} s of training on "
        f"{result['device']} ({result['cpu_count']} cores, load {result['load_avg_1min']})"
    )
    print(f"| {'measure':<30} | {'value':>14} | {'target':>9} | ok  |")
    print(f"|{'-' * 32}|{'-' * 16}|{'-' * 11}|-----|")
    for name, val, tgt, ok in rows:
        print(f"| {name:<30} | {val:>14} | {tgt:>9} | {'' if ok is None else 'yes' if ok else 'NO':<3} |")
    print(f"JSON: {out}")
    return result


if __name__ == "__main__":
    main()
