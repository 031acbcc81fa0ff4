"""The bar to beat: an ilastik-style random forest trained on the same points.

skimage's `multiscale_basic_features` (intensity, edges, texture at sigma 1-16, per channel)
and `fit_segmenter` with a 100-tree RandomForestClassifier. Takes well under a second on a
512² image, which is why a network must beat it on accuracy to be worth its minute.

`rf_oracle` gives the forest its own oracle: the network's oracle picks points where the
network is wrong, which flatters the network against a forest trained on the same points; a
user of an ilastik-style tool would correct the forest's own mistakes instead.
"""

from __future__ import annotations

import time

import numpy as np

from ..core.checks import check_2d, check_mask, plane_image
from ..core.errors import InputError
from ..core.metrics import segmentation_metrics
from ..core.oracle_loop import next_oracle_points, oracle_config
from ..core.points import PointSet
from ..core.schedule import next_step_size

BASELINE_TREES = 100  # the click forest (`TrainConfig.forest_trees`) has as many


def rf_features(image: np.ndarray, channel_axis="auto", rgb=None) -> np.ndarray:
    """float32 (H, W, F) multiscale features of a 2D image (grey or channels), sigma 1-16."""
    from skimage.feature import multiscale_basic_features

    cf = plane_image(image, channel_axis, rgb, who="the random-forest baseline").astype(np.float32)
    # per-channel robust scaling: the forest is scale invariant per feature, but the feature
    # functions are not (texture/edge responses depend on the intensity range)
    lo = np.percentile(cf, 1, axis=(1, 2), keepdims=True)
    hi = np.percentile(cf, 99, axis=(1, 2), keepdims=True)
    cf = (cf - lo) / np.maximum(hi - lo, 1e-6)
    feats = multiscale_basic_features(np.moveaxis(cf, 0, -1), channel_axis=-1, sigma_min=1, sigma_max=16)
    return feats.astype(np.float32, copy=False)


def rf_baseline(
    image: np.ndarray,
    points: PointSet,
    channel_axis="auto",
    rgb=None,
    seed: int = 0,
    features: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Random forest on ``points`` -> (prediction (H, W) with the points' label values, seconds).

    image: raw 2D image; points: 2D PointSet (labels are label values, >= 2 classes).
    features: `rf_features` of ``image`` computed earlier (then not counted in the seconds).
    Seconds include feature computation (unless given), fitting and prediction.
    """
    from skimage.future import fit_segmenter, predict_segmenter
    from sklearn.ensemble import RandomForestClassifier

    t0 = time.perf_counter()
    feats = rf_features(image, channel_axis, rgb) if features is None else features
    points.validate(feats.shape[:2], min_classes=2)
    classes = points.classes
    # fit_segmenter wants labels >= 1 with 0 = unlabelled: map label values to 1..C
    labels = np.zeros(feats.shape[:2], np.int64)
    pix = points.pixel_coords()
    labels[pix[:, 0], pix[:, 1]] = np.searchsorted(classes, points.labels) + 1
    clf = RandomForestClassifier(n_estimators=BASELINE_TREES, n_jobs=-1, random_state=seed)
    clf = fit_segmenter(labels, feats, clf)
    pred = predict_segmenter(feats, clf)
    return classes[np.asarray(pred, np.int64) - 1], time.perf_counter() - t0


def forest_checkpoint(
    fraction: float, points: PointSet, pred: np.ndarray, truth: np.ndarray, t0: float, **more
) -> dict:
    """A forest run's state at one fraction of the pixels: ``fraction``, ``points`` (PointSet,
    click order, labels = mask values), ``prediction`` (H, W) mask values, its ``miou``
    against ``truth``, ``seconds`` since ``t0`` (perf_counter), and ``more``."""
    m = segmentation_metrics(truth, pred, labels=np.unique(truth))
    return {
        "fraction": fraction,
        "points": points,
        "prediction": pred,
        "miou": m["miou"],
        "seconds": round(time.perf_counter() - t0, 3),
        **more,
    }


def rf_oracle(
    image: np.ndarray,
    mask: np.ndarray,
    budgets=(0.003,),
    *,
    seed: int = 0,
    features: np.ndarray | None = None,
    channel_axis="auto",
    rgb=None,
) -> list[dict]:
    """Algorithm 1 with the random forest as the predictor: the forest refitted on the
    revealed pixels at every oracle step, the next pixels sampled where it is wrong.

    image: raw 2D image; mask: (H, W) labels (>= 2 values, the classes). The first pixel, the
    step sizes (`oracle_config`'s) and the sampling are those of `run_oracle` with the same
    ``seed``; the step that crosses a budget is cut at it. features: `rf_features` of
    ``image`` computed earlier (then not counted in the seconds).
    Returns one `forest_checkpoint` per budget (ascending), with ``steps``.
    Raises InputError on bad input, as `run_oracle`."""
    budgets = sorted(float(b) for b in budgets)
    if not budgets or not all(0 < b <= 1 for b in budgets):
        raise InputError(f"budgets must be fractions of pixels in (0, 1], got {budgets}")
    t0 = time.perf_counter()
    feats = rf_features(image, channel_axis, rgb) if features is None else features
    check_2d(feats.shape[:2], "the forest's oracle")
    truth = check_mask(mask, feats.shape[:2])
    h, w = truth.shape
    cfg = oracle_config()
    rng = np.random.default_rng(seed)
    pts = np.array([[rng.integers(h), rng.integers(w)]], np.int64)
    revealed = np.zeros(truth.shape, bool)
    revealed[pts[0, 0], pts[0, 1]] = True
    marks = [max(1, int(np.floor(b * truth.size))) for b in budgets]
    out: list[dict] = []
    steps = 0
    while True:
        points = PointSet(pts.astype(np.float64), truth[pts[:, 0], pts[:, 1]])
        if len(np.unique(points.labels)) >= 2:
            pred, _ = rf_baseline(image, points, seed=seed, features=feats)
        else:
            pred = np.full(truth.shape, points.labels[0], truth.dtype)  # one class seen so far
        steps += 1
        n = len(pts)
        while len(out) < len(marks) and n >= marks[len(out)]:
            out.append(forest_checkpoint(budgets[len(out)], points, pred, truth, t0, steps=steps))
        if len(out) == len(marks):
            return out
        k = min(next_step_size(n, cfg.points_per_step, cfg.step_growth), marks[len(out)] - n)
        new = next_oracle_points(pred, truth, k, rng, revealed)
        if len(new) == 0:  # every pixel revealed
            return out
        revealed[new[:, 0], new[:, 1]] = True
        pts = np.concatenate([pts, new])
