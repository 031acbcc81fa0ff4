"""Segmentation metrics on label images (values are label values, not class indices).

Every pixel counts: a value that occurs only in the prediction (a label the mask never uses)
is a class of its own with IoU 0, so it lowers the mIoU and the pixel accuracy instead of
dropping out of the confusion matrix.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, labels) -> np.ndarray:
    """int64 (K, K): rows = true label, columns = predicted label, over ``labels`` (K values).

    Pixels whose true or predicted value is not in ``labels`` are ignored (callers that want
    every pixel pass the union of both label sets, as `segmentation_metrics` does).
    """
    labels = np.asarray(labels, dtype=np.int64)
    truth = np.asarray(truth).ravel()
    pred = np.asarray(pred).ravel()
    if truth.shape != pred.shape:
        raise ValueError(f"truth and prediction differ in size: {truth.size} vs {pred.size}")
    k = len(labels)
    if k == 0:
        return np.zeros((0, 0), np.int64)
    # searchsorted, not a lookup table indexed by value: label 5000000000 must not allocate
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    t = _index_of(truth, sorted_labels, order)
    p = _index_of(pred, sorted_labels, order)
    ok = (t >= 0) & (p >= 0)
    return np.bincount(t[ok] * k + p[ok], minlength=k * k).reshape(k, k)


def _index_of(values: np.ndarray, sorted_labels: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Index into the caller's ``labels`` of each value (-1 where absent)."""
    values = values.astype(np.int64, copy=False)
    pos = np.clip(np.searchsorted(sorted_labels, values), 0, len(sorted_labels) - 1)
    return np.where(sorted_labels[pos] == values, order[pos], -1)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU (float64, K); NaN for a class absent from truth and prediction."""
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


def segmentation_metrics(truth: np.ndarray, pred: np.ndarray, labels=None) -> dict:
    """``{'miou', 'pixel_accuracy', 'per_class_iou': {label: iou}}``; mIoU is a fraction.

    The classes are ``labels`` (default: none) plus every value present in ``truth`` or
    ``pred``, so every pixel is counted. mIoU averages the classes that occur in truth or
    prediction (NaN classes, listed in ``labels`` but absent from both, are skipped).
    """
    truth = np.asarray(truth).astype(np.int64, copy=False)
    pred = np.asarray(pred).astype(np.int64, copy=False)
    present = np.union1d(np.unique(truth), np.unique(pred))
    labels = present if labels is None else np.union1d(np.asarray(labels, dtype=np.int64), present)
    cm = confusion_matrix(truth, pred, labels)
    iou = iou_from_confusion(cm)
    total = cm.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.any(np.isfinite(iou)) else 0.0,
        "pixel_accuracy": float(np.trace(cm) / total) if total else 0.0,
        "per_class_iou": {str(int(lab)): (None if np.isnan(v) else float(v)) for lab, v in zip(labels, iou)},
    }


def miou(truth: np.ndarray, pred: np.ndarray, labels=None) -> float:
    """Mean IoU (fraction in [0, 1])."""
    return segmentation_metrics(truth, pred, labels)["miou"]
