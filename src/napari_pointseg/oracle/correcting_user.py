"""A simulated correcting user: how a person clicks in the widget, with the mask as their eyes.

The user starts with ``first_per_class`` clicks per class at random pixels of that class,
presses Train, then repeatedly looks at the live prediction and clicks the centres of the
``per_round`` largest wrongly predicted regions (a region: a 4-connected set of wrong pixels
of one true class; its centre: the pixel farthest from the region's border), while the same
network keeps training from its current weights on the points in click order (the widget's
correct order). It stops once ``budget`` of the pixels are clicked or nothing is wrong.

This is the second yardstick beside the oracle (Algorithm 1): the oracle samples inside the
largest error weighted by distance, the user clicks region centres a few at a time.

Label convention: label values are the mask's values; the prediction uses the same values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

from ..core.checks import check_2d, check_mask
from ..core.errors import InputError
from ..core.metrics import segmentation_metrics
from ..core.oracle_loop import check_oracle_inputs, curve_row, loop_trainer, reveal_points
from ..core.points import PointSet
from ..core.train_setup import TrainSetup
from ..core.trainer import SparseTrainer
from .baseline import forest_checkpoint, rf_baseline, rf_features


def first_clicks(truth: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """int64 (m, 2) yx: ``per_class`` random pixels of every class, in a random order."""
    picks = []
    for c in np.unique(truth):
        ys, xs = np.nonzero(truth == c)
        sel = rng.choice(len(ys), size=min(per_class, len(ys)), replace=False)
        picks.append(np.stack([ys[sel], xs[sel]], 1))
    pts = np.concatenate(picks).astype(np.int64)
    return pts[rng.permutation(len(pts))]


def region_centres(pred: np.ndarray, truth: np.ndarray, n: int, clicked: np.ndarray) -> np.ndarray:
    """int64 (m, 2) yx, m <= n: the centres of the ``n`` largest wrong regions, largest first.

    pred, truth: (H, W) label values. A region is a 4-connected component of wrong pixels
    sharing one true label; its centre is its unclicked pixel farthest from the region's border
    (``clicked``: bool (H, W)). Regions whose every pixel is clicked are passed over.
    """
    wrong = pred != truth
    if not wrong.any():
        return np.zeros((0, 2), np.int64)
    regions = []
    for c in np.unique(truth[wrong]):
        lab, k = ndi.label(wrong & (truth == c))
        if k == 0:
            continue
        sizes = np.bincount(lab.ravel())[1:]
        for i, sl in enumerate(ndi.find_objects(lab)):
            regions.append((int(sizes[i]), sl, lab, i + 1))
    regions.sort(key=lambda r: -r[0])
    out = []
    for _, sl, lab, idx in regions:
        if len(out) >= n:
            break
        ys = slice(max(sl[0].start - 1, 0), sl[0].stop + 1)
        xs = slice(max(sl[1].start - 1, 0), sl[1].stop + 1)
        inside = lab[ys, xs] == idx
        d = ndi.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
        d[clicked[ys, xs] | ~inside] = -1
        j = int(np.argmax(d))
        if d.flat[j] < 0:
            continue
        y, x = np.unravel_index(j, d.shape)
        out.append((ys.start + y, xs.start + x))
    return np.asarray(out, np.int64).reshape(-1, 2)


@dataclass
class UserResult:
    """What `run_correcting_user` returns.

    points: all clicks in click order (labels = mask values). checkpoints: one dict per
    requested fraction (fraction, n_points, miou, per_class_iou, pixel_accuracy, honoured,
    seconds, points = the clicks up to then, prediction). curve: one row per round (round,
    n_points, fraction_labeled, miou, seconds). trainer: the SparseTrainer at the end.
    """

    points: PointSet
    checkpoints: list[dict]
    curve: list[dict]
    trainer: SparseTrainer = field(repr=False)


def honoured_fraction(pred: np.ndarray, points: PointSet) -> float:
    """Share of ``points`` (2D) whose predicted label value equals their own label."""
    if len(points) == 0:
        return 1.0
    pix = points.pixel_coords()
    return float(np.mean(pred[pix[:, 0], pix[:, 1]] == points.labels))


def run_correcting_user(
    image: np.ndarray,
    mask: np.ndarray,
    setup: TrainSetup | None = None,
    *,
    budget: float = 0.003,
    checkpoints=(0.0005, 0.001, 0.003),
    first_per_class: int = 5,
    per_round: int = 5,
    seed: int = 0,
    callback: Callable[[dict], None] | None = None,
) -> UserResult:
    """Simulate a user correcting the live prediction (module docstring) on one 2D image.

    image: raw 2D image (grey or channels); mask: (H, W) integer label values (>= 2 classes).
    setup: how the image is read, the network, the recipe and the device (default: defaults).
    budget: stop after this fraction of pixels is clicked. checkpoints: fractions at which the
    state is recorded (each after the round that reaches it, once the trainer has caught up
    and run its ``final_iters``, as the widget does when the user pauses).
    Raises InputError on bad input (shapes, one class, budget out of range, 3D).
    """
    t0 = time.perf_counter()
    setup = setup or TrainSetup()
    prep = setup.prepare(image)
    truth = check_oracle_inputs(prep, mask, budget, 1.0)
    classes = np.unique(truth)
    rng = np.random.default_rng(seed)
    cfg = replace(setup.config, order="correct")
    final_iters = cfg.final_iters
    n_budget = max(1, int(np.floor(budget * truth.size)))
    marks = sorted(max(1, int(np.floor(f * truth.size))) for f in checkpoints)
    if not marks or marks[-1] > n_budget:
        raise InputError("checkpoints must be fractions up to the budget")

    first = first_clicks(truth, first_per_class, rng)
    clicked = np.zeros(truth.shape, bool)
    clicked[first[:, 0], first[:, 1]] = True
    points = PointSet(first.astype(np.float64), truth[first[:, 0], first[:, 1]])
    trainer = loop_trainer(prep, points, classes, cfg, setup)
    curve: list[dict] = []
    done: list[dict] = []
    rnd = 0
    n = len(points)  # clicks so far (trainer.points catches up inside run())
    while True:
        at_mark = [m for m in marks if n >= m and m not in {d["mark"] for d in done}]
        last = n >= n_budget
        trainer.config.final_iters = final_iters if (at_mark or last) else 0
        trainer.final_done = False
        for _ in trainer.run():
            pass
        pred = trainer.predict(0)
        m = segmentation_metrics(truth, pred, labels=classes)
        rnd += 1
        row = curve_row("round", rnd, n, truth.size, m["miou"], t0, trainer.iteration)
        curve.append(row)
        if callback is not None:
            callback(row)
        done += [_checkpoint(mark, truth.size, m, pred, trainer, row) for mark in at_mark]
        if last:
            break
        new = region_centres(pred, truth, min(per_round, n_budget - n), clicked)
        if len(new) == 0:
            break  # nothing wrong any more
        reveal_points(trainer, new, truth, clicked)
        n += len(new)
    # marks never reached (nothing left to correct): the final state stands for them
    done += [
        _checkpoint(mark, truth.size, m, pred, trainer, row)
        for mark in marks
        if mark not in {d["mark"] for d in done}
    ]
    trainer.config.final_iters = final_iters
    done.sort(key=lambda d: d["mark"])
    return UserResult(trainer.points, done, curve, trainer)


def _checkpoint(mark: int, n_pixels: int, m: dict, pred: np.ndarray, trainer, row: dict) -> dict:
    """The state recorded at one checkpoint (see `UserResult`)."""
    return {
        "mark": mark,
        "fraction": mark / n_pixels,
        "n_points": len(trainer.points),
        "miou": m["miou"],
        "per_class_iou": m["per_class_iou"],
        "pixel_accuracy": m["pixel_accuracy"],
        "honoured": honoured_fraction(pred, trainer.points),
        "seconds": row["seconds"],
        "iterations": trainer.iteration,
        "points": trainer.points.copy(),
        "prediction": pred,
    }


def max_drop_after(curve: list[dict], level: float = 0.8) -> float:
    """Largest fall of mIoU between consecutive rounds once the curve has reached ``level``
    (0.0 when it never falls or never gets there)."""
    worst, seen = 0.0, False
    for prev, cur in zip(curve, curve[1:]):
        seen = seen or prev["miou"] >= level
        if seen:
            worst = max(worst, prev["miou"] - cur["miou"])
    return worst


def rf_correcting_user(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    checkpoints=(0.0005, 0.001),
    first_per_class: int = 5,
    per_round: int = 5,
    seed: int = 0,
    features: np.ndarray | None = None,
) -> list[dict]:
    """The same simulated user correcting the random forest instead: the same first clicks
    (per ``seed``), then each round the centres of the ``per_round`` largest regions the
    forest (refitted on every click so far) gets wrong, up to the last checkpoint.

    image: raw 2D image; mask: (H, W) label values (>= 2 classes). features: `rf_features`
    of ``image`` computed earlier (then not counted in the seconds).
    Returns one `baseline.forest_checkpoint` per checkpoint (ascending), with ``rounds``.
    Raises InputError on bad input."""
    fractions = sorted(float(f) for f in checkpoints)
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise InputError(f"checkpoints must be fractions of pixels in (0, 1], got {fractions}")
    t0 = time.perf_counter()
    feats = rf_features(image) if features is None else features
    check_2d(feats.shape[:2], "the simulated user")
    truth = check_mask(mask, feats.shape[:2])
    marks = [max(1, int(np.floor(f * truth.size))) for f in fractions]
    rng = np.random.default_rng(seed)
    pts = first_clicks(truth, first_per_class, rng)
    clicked = np.zeros(truth.shape, bool)
    clicked[pts[:, 0], pts[:, 1]] = True
    out: list[dict] = []
    rounds = 0
    while True:
        points = PointSet(pts.astype(np.float64), truth[pts[:, 0], pts[:, 1]])
        pred, _ = rf_baseline(image, points, seed=seed, features=feats)
        rounds += 1
        new = region_centres(pred, truth, min(per_round, marks[-1] - len(pts)), clicked)
        # a checkpoint once it is reached, or when nothing is left to correct
        while len(out) < len(marks) and (len(pts) >= marks[len(out)] or len(new) == 0):
            out.append(forest_checkpoint(fractions[len(out)], points, pred, truth, t0, rounds=rounds))
        if len(out) == len(marks):
            return out
        clicked[new[:, 0], new[:, 1]] = True
        pts = np.concatenate([pts, new])
