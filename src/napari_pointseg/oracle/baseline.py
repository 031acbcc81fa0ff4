"""The bar to beat: an ilastik-style random forest trained on the same points.

skimage's `multiscale_basic_features` (intensity, edges, texture at sigma 1-16, per channel)
and `fit_segmenter` with a 100-tree RandomForestClassifier. Takes well under a second on a
512² image, which is why a network must beat it on accuracy to be worth its minute.
"""

from __future__ import annotations

import time

import numpy as np

from ..core.checks import plane_image
from ..core.points import PointSet

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
