"""Algorithm 1 of "How low can we go?" (PixelLabeling): an oracle that reveals pixel labels.

Product code, not only an experiment: the dataset pipeline labels images that have a mask
with `run_oracle`; ``oracle/`` (experiments, samplers, baseline, tables) builds on it, and
`run_active` runs any other point picker in the same loop.

The oracle has the ground-truth mask. Starting from one random labelled pixel it repeats:
train the network on the revealed pixels (continuing from the current weights, points admitted
in the order they were revealed: the "correct order"), predict the whole image, build the
weight map of eq. 5-6 (largest misclassified connected component, weighted by the distance to
the nearest pixel outside it) and reveal ``k`` more pixels sampled from it; until the revealed
fraction reaches ``budget`` or the mIoU reaches ``target``.

Only 2D images (grey or multichannel): a 3D stack raises InputError; run the oracle on each
plane (``run_oracle(stack[z], mask[z])``) if you need one.

Label convention: label values are the mask's values; the prediction uses the same values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
from scipy import ndimage as ndi

from .checks import check_2d, check_mask
from .errors import InputError
from .inputs import PreparedImage
from .metrics import segmentation_metrics
from .points import PointSet
from .schedule import next_step_size, with_iters_per_step
from .train_setup import TrainSetup
from .trainer import SparseTrainer, TrainConfig

# Oracle defaults (measured, see docs/training.md): k grows with the revealed count so that the
# number of oracle steps (each costs one full-image prediction) stays ~40 for 0.3 % of 512².
ORACLE_POINTS_PER_STEP = 1
ORACLE_STEP_GROWTH = 0.1


# ---------------------------------------------------------------------------------------------
# weight map (eq. 5-6) and sampling
# ---------------------------------------------------------------------------------------------


def _error_map(pred: np.ndarray, truth: np.ndarray, restrict_to_worst_class: bool) -> np.ndarray:
    """bool (H, W) misclassified pixels (eq. 5), optionally only those whose TRUE label is the
    class with the lowest IoU (the paper's first criterion)."""
    r = np.asarray(pred) != np.asarray(truth)
    if restrict_to_worst_class and r.any():
        m = segmentation_metrics(truth, pred)
        ious = {int(k): (v if v is not None else 1.0) for k, v in m["per_class_iou"].items()}
        # worst class among the classes that still have errors
        wrong = set(np.unique(np.asarray(truth)[r]).tolist())
        worst = min(wrong, key=lambda c: ious.get(int(c), 1.0))
        r &= np.asarray(truth) == worst
    return r


def _distance_inside(region: np.ndarray) -> np.ndarray:
    """float64 distance of each pixel of ``region`` to the nearest pixel outside it (0 outside).

    If the region is the whole image there is no pixel outside it: the distance to the image
    border is used instead.
    """
    if region.all():
        return ndi.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    return ndi.distance_transform_edt(region)


def weight_map(pred: np.ndarray, truth: np.ndarray, restrict_to_worst_class: bool = False) -> np.ndarray:
    """The oracle's sampling weights (eq. 5-6).

    pred, truth: (H, W) label images (same label values). R is the largest 4-connected
    component of misclassified pixels (restricted to the worst-IoU class's true pixels with
    ``restrict_to_worst_class``); ``w = distance to the nearest pixel outside R`` inside R,
    0 elsewhere. Returns float64 (H, W) summing to 1, or all zeros if nothing is wrong.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise InputError(f"weight_map needs two 2D arrays of one shape, got {pred.shape} and {truth.shape}")
    r = _error_map(pred, truth, restrict_to_worst_class)
    w = np.zeros(r.shape, np.float64)
    if not r.any():
        return w
    lab, n = ndi.label(r)
    sizes = np.bincount(lab.ravel())[1:]
    region = lab == (int(np.argmax(sizes)) + 1)
    w = _distance_inside(region)
    return w / w.sum()


def blob_weights(
    pred: np.ndarray, truth: np.ndarray, n_blobs: int, restrict_to_worst_class: bool = False
) -> list[np.ndarray]:
    """Eq. 6 weight maps of the ``n_blobs`` largest misclassified components, largest first.

    The multi-point generalisation of `weight_map` the oracle uses when it reveals k > 1
    pixels per step: one pixel per blob (k largest blobs) instead of k pixels from one blob,
    which would cluster them. Each map is float64 (H, W) summing to 1.
    """
    r = _error_map(pred, truth, restrict_to_worst_class)
    if not r.any():
        return []
    lab, n = ndi.label(r)
    sizes = np.bincount(lab.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")[:n_blobs]
    objs = ndi.find_objects(lab)
    maps = []
    for i in order:
        sl = objs[i]
        # distance inside the blob only needs the blob's bounding box (plus a margin of 1 so
        # that "outside" pixels exist): much cheaper than a full-image transform per blob
        ys = slice(max(sl[0].start - 1, 0), sl[0].stop + 1)
        xs = slice(max(sl[1].start - 1, 0), sl[1].stop + 1)
        sub = lab[ys, xs] == (i + 1)
        d = _distance_inside(sub) if not sub.all() else np.ones(sub.shape)
        w = np.zeros(r.shape, np.float64)
        w[ys, xs] = d
        maps.append(w / w.sum())
    return maps


def sample_from_weights(
    w: np.ndarray, k: int, rng: np.random.Generator, exclude: np.ndarray | None = None
) -> np.ndarray:
    """Weighted sampling of ``k`` distinct pixels without replacement.

    w: non-negative (H, W) weights (need not sum to 1). exclude: bool (H, W) mask of pixels
    never to return (already revealed), or an (N, 2) int array of their yx coordinates.
    Returns int64 (m, 2) yx with m = min(k, number of non-excluded pixels of positive weight).
    """
    w = np.asarray(w, np.float64)
    flat = w.ravel().copy()
    if exclude is not None:
        ex = np.asarray(exclude)
        if ex.dtype == bool:
            flat[ex.ravel()] = 0.0
        elif ex.size:
            ex = ex.reshape(-1, 2).astype(np.int64)
            flat[np.ravel_multi_index((ex[:, 0], ex[:, 1]), w.shape)] = 0.0
    flat[~np.isfinite(flat) | (flat < 0)] = 0.0
    support = np.flatnonzero(flat > 0)
    m = min(int(k), len(support))
    if m <= 0:
        return np.zeros((0, 2), np.int64)
    p = flat[support] / flat[support].sum()
    picks = rng.choice(support, size=m, replace=False, p=p)
    return np.stack(np.unravel_index(picks, w.shape), axis=1).astype(np.int64)


def next_oracle_points(pred, truth, k, rng, revealed_mask, restrict=False, spread: bool = True) -> np.ndarray:
    """The oracle's next ``k`` pixels, int64 (m, 2) yx, given any predictor's ``pred`` (H, W)
    label values, the ``truth`` (H, W) and bool ``revealed_mask`` (H, W): eq. 6 (one blob) or,
    with ``spread``, one per blob over the k largest misclassified blobs (``restrict``: only
    blobs of the worst class); topped up from other wrong, then any unrevealed pixels."""
    if not spread or k == 1:
        w = weight_map(pred, truth, restrict)
        pts = sample_from_weights(w, k, rng, revealed_mask)
    else:
        maps = blob_weights(pred, truth, k, restrict)
        pts = []
        taken = revealed_mask.copy()
        # k blobs -> one point each; fewer blobs -> the rest again from the largest ones
        for j in range(k):
            if not maps:
                break
            p = sample_from_weights(maps[j % len(maps)], 1, rng, taken)
            if len(p):
                taken[p[0, 0], p[0, 1]] = True
                pts.append(p[0])
        pts = np.asarray(pts, np.int64).reshape(-1, 2)
    if len(pts) < k:
        # the error blobs are (nearly) all revealed already: any other wrong pixel, else any
        # unrevealed pixel, so that the budget is still spent
        taken = revealed_mask.copy()
        if len(pts):
            taken[pts[:, 0], pts[:, 1]] = True
        wrong = (np.asarray(pred) != np.asarray(truth)).astype(np.float64)
        more = sample_from_weights(wrong, k - len(pts), rng, taken)
        if len(pts) + len(more) < k:
            if len(more):
                taken[more[:, 0], more[:, 1]] = True
            more = np.concatenate(
                [more, sample_from_weights(np.ones(wrong.shape), k - len(pts) - len(more), rng, taken)]
            )
        pts = np.concatenate([pts, more]).astype(np.int64)
    return pts


# ---------------------------------------------------------------------------------------------
# the oracle loop
# ---------------------------------------------------------------------------------------------


@dataclass
class OracleResult:
    """What `run_oracle` returns.

    points: revealed pixels in reveal order (labels = mask values). prediction: (H, W) label
    values. proba: float32 (K, H, W), class i <-> trainer.classes[i]. metrics: miou,
    pixel_accuracy, per_class_iou, n_points, fraction_labeled, seconds, steps, curve (one row
    per oracle step: step, n_points, fraction_labeled, miou, seconds). trainer: the trained
    SparseTrainer (its weights, classes, config).
    """

    points: PointSet
    prediction: np.ndarray
    proba: np.ndarray
    metrics: dict
    trainer: SparseTrainer = field(repr=False)


def check_oracle_inputs(
    image_prep: PreparedImage, mask: np.ndarray, budget: float, target: float
) -> np.ndarray:
    """The oracle's (and the simulated correcting user's) input checks: budget and target in
    (0, 1], a 2D image, a mask of its shape with >= 2 classes. Returns the mask as int64;
    InputError otherwise."""
    if not (0 < budget <= 1):
        raise InputError(f"budget must be a fraction of pixels in (0, 1], got {budget}")
    if not (0 < target <= 1):
        raise InputError(f"target mIoU must be in (0, 1], got {target}")
    check_2d(image_prep.spatial_shape, "the oracle")
    return check_mask(mask, image_prep.spatial_shape)


def oracle_config(
    config: TrainConfig | None = None, points_per_step: int | None = None, iters_per_step: int | None = None
) -> TrainConfig:
    """The training config the oracle uses: ``config`` (default TrainConfig()) in correct order
    with the oracle's step sizes unless given. Replaying the oracle's points with this config
    (any order) reproduces its step structure and iteration budget."""
    cfg = config or TrainConfig()
    # no consistency term: it steadies what a user watches between clicks, and the oracle's
    # rounds (15 % more points each, all where the prediction is wrong) must move it; with it,
    # 3 of the first 12 development images ended far from their clicks (docs/training.md)
    # nor the forest teacher (measured with the simulated user and first Trains only)
    upd = {"order": "correct", "consistency_weight": 0.0, "forest_teacher": 0.0}
    if points_per_step is not None:
        if points_per_step < 1:
            raise InputError(f"points per step must be >= 1, got {points_per_step}")
        # a fixed k: every oracle step reveals exactly k pixels
        upd.update(points_per_step=int(points_per_step), step_growth=0.0)
    if iters_per_step is not None:
        if iters_per_step < 1:
            raise InputError(f"iterations per step must be >= 1, got {iters_per_step}")
        cfg = with_iters_per_step(cfg, iters_per_step)
    return replace(cfg, **upd)


def loop_trainer(prep: PreparedImage, points: PointSet, classes, cfg: TrainConfig, setup: TrainSetup):
    """The SparseTrainer of an active loop (oracle or simulated user) on ``prep``.

    points: the first revealed points; classes: the label values of the mask; cfg: the loop's
    config (its ``final_iters`` is held back: the loop grants it only after the last reveal,
    since in between the next step trains anyway); setup: its spec and device. Returns the
    trainer.
    """
    return SparseTrainer(
        prep,
        points,
        classes=classes,
        config=replace(cfg, final_iters=0),
        spec=setup.spec,
        device=setup.device,
    )


def curve_row(
    counter: str, count: int, n_points: int, n_pixels: int, miou: float, t0: float, iterations: int
) -> dict:
    """One row of an active loop's learning curve (also what its ``callback`` gets).

    counter / count: the name and number of the step ("step" for the oracle, "round" for the
    simulated user); n_points: points revealed; n_pixels: pixels in the image; miou: the mIoU
    now; t0: the loop's ``time.perf_counter()`` start; iterations: training iterations so far.
    Returns ``{counter, n_points, fraction_labeled, miou, seconds, iterations}``.
    """
    return {
        counter: count,
        "n_points": n_points,
        "fraction_labeled": n_points / n_pixels,
        "miou": miou,
        "seconds": round(time.perf_counter() - t0, 3),
        "iterations": iterations,
    }


def reveal_points(trainer, new: np.ndarray, truth: np.ndarray, revealed: np.ndarray) -> None:
    """Reveal the pixels ``new`` ((m, 2) int yx): mark them in the bool map ``revealed`` and
    give the trainer their labels from ``truth``."""
    revealed[new[:, 0], new[:, 1]] = True
    trainer.add_points(new.astype(np.float64), truth[new[:, 0], new[:, 1]])


def run_oracle(
    image: np.ndarray,
    mask: np.ndarray,
    setup: TrainSetup | None = None,
    *,
    budget: float = 0.001,
    target: float = 0.995,
    points_per_step: int | None = None,
    iters_per_step: int | None = None,
    seed: int = 0,
    restrict_to_worst_class: bool = False,
    callback: Callable[[dict], None] | None = None,
    spread: bool = True,
) -> OracleResult:
    """Run Algorithm 1 on one 2D image.

    image: raw 2D image (grey (H, W), or with channels: see ``setup.channel_axis`` / ``rgb``).
    mask: (H, W) integer label image; its values are the classes (>= 2).
    setup: how the image is read, the network, the recipe and the device (default: library
        defaults); the loop's step sizes come from ``setup.config`` unless given here.
    budget: stop once this fraction of pixels is revealed (0 < budget <= 1).
    target: stop once the mIoU reaches it (0 < target <= 1).
    points_per_step: a fixed k per oracle step (default: k grows with the revealed count,
        ``config.points_per_step`` / ``config.step_growth``). iters_per_step: at most this
        many training iterations per step (default ``config.iters_per_step``).
    spread: with k > 1, one pixel from each of the k largest misclassified blobs (False: all
        k from the largest blob, the literal eq. 6).
    callback: called with each curve row (step, n_points, fraction_labeled, miou, seconds).
    Raises InputError on bad input (shapes, one class, budget/target out of range, 3D).
    """

    def picker(pred, proba, truth, k, rng, revealed):
        return next_oracle_points(pred, truth, k, rng, revealed, restrict_to_worst_class, spread)

    return run_active(
        image,
        mask,
        picker,
        setup,
        budget=budget,
        target=target,
        points_per_step=points_per_step,
        iters_per_step=iters_per_step,
        seed=seed,
        callback=callback,
    )


def run_active(
    image: np.ndarray,
    mask: np.ndarray,
    picker,
    setup: TrainSetup | None = None,
    *,
    budget: float,
    target: float = 0.995,
    points_per_step: int | None = None,
    iters_per_step: int | None = None,
    seed: int = 0,
    callback: Callable[[dict], None] | None = None,
) -> OracleResult:
    """The active-learning loop of Algorithm 1 with a pluggable point picker.

    ``picker(pred, proba, truth, k, rng, revealed) -> (m, 2) int yx`` chooses the next pixels
    (pred: (H, W) label values, proba: (K, H, W), truth: (H, W), revealed: bool (H, W)); the
    loop reveals their labels from ``mask``. Other arguments as in `run_oracle`.
    """
    t0 = time.perf_counter()
    setup = setup or TrainSetup()
    prep = setup.prepare(image)
    truth = check_oracle_inputs(prep, mask, budget, target)
    classes = np.unique(truth)
    h, w = truth.shape
    n_budget = max(1, int(np.floor(budget * truth.size)))
    cfg = oracle_config(setup.config, points_per_step, iters_per_step)
    final_iters = cfg.final_iters
    rng = np.random.default_rng(seed)

    first = np.array([[rng.integers(h), rng.integers(w)]], np.int64)
    points = PointSet(first.astype(np.float64), truth[first[:, 0], first[:, 1]])
    revealed = np.zeros(truth.shape, bool)
    revealed[first[0, 0], first[0, 1]] = True
    trainer = loop_trainer(prep, points, classes, cfg, setup)
    curve: list[dict] = []
    step = 0
    n_revealed = len(points)  # trainer.points lags: new points join it inside run()
    while True:
        last_round = n_revealed >= n_budget
        trainer.config.final_iters = final_iters if last_round else 0
        for _ in trainer.run():
            pass
        proba = trainer.predict_proba(0)
        pred = classes[np.argmax(proba, 0)]
        m = segmentation_metrics(truth, pred, labels=classes)
        step += 1
        n = len(trainer.points)
        row = curve_row("step", step, n, truth.size, m["miou"], t0, trainer.iteration)
        curve.append(row)
        if callback is not None:
            callback(row)
        if m["miou"] >= target or last_round:
            break
        k = min(next_step_size(n, cfg.points_per_step, cfg.step_growth), n_budget - n)
        new = np.asarray(picker(pred, proba, truth, k, rng, revealed), np.int64).reshape(-1, 2)
        if len(new) == 0:
            break  # every pixel revealed
        reveal_points(trainer, new, truth, revealed)
        n_revealed += len(new)
    trainer.config.final_iters = final_iters
    seconds = time.perf_counter() - t0
    pts = trainer.points
    metrics = dict(m)
    metrics.update(
        {
            "n_points": len(pts),
            "fraction_labeled": len(pts) / truth.size,
            "seconds": round(seconds, 3),
            "steps": step,
            "iterations": trainer.iteration,
            "curve": curve,
        }
    )
    return OracleResult(pts, pred, proba.astype(np.float32, copy=False), metrics, trainer)
