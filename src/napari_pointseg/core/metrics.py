"""Segmentation metrics on label images (values are label values, not class indices)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, labels) -> np.ndarray:
    """int64 (K, K): rows = true label, columns = predicted label, over ``labels`` (K values).

    Pixels whose true or predicted value is not in ``labels`` are ignored.
    """
    labels = np.asarray(labels)
    truth = np.asarray(truth).ravel()
    pred = np.asarray(pred).ravel()
    if truth.shape != pred.shape:
        raise ValueError(f"truth and prediction differ in size: {truth.size} vs {pred.size}")
    lut_size = int(max(labels.max(), truth.max(initial=0), pred.max(initial=0))) + 1
    offset = int(min(labels.min(), truth.min(initial=0), pred.min(initial=0)))
    lut = np.full(lut_size - offset, -1, dtype=np.int64)
    lut[labels - offset] = np.arange(len(labels))
    t = lut[truth - offset]
    p = lut[pred - offset]
    ok = (t >= 0) & (p >= 0)
    k = len(labels)
    return np.bincount(t[ok] * k + p[ok], minlength=k * k).reshape(k, k)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU (float64, K); NaN for a class absent from truth and prediction."""
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


def segmentation_metrics(truth: np.ndarray, pred: np.ndarray, labels=None) -> dict:
    """``{'miou', 'pixel_accuracy', 'per_class_iou': {label: iou}}``; mIoU is a fraction.

    ``labels`` defaults to the values present in ``truth``. mIoU averages the classes that
    occur in truth or prediction (NaN classes are skipped).
    """
    truth = np.asarray(truth)
    if labels is None:
        labels = np.unique(truth)
    labels = np.asarray(labels, dtype=np.int64)
    cm = confusion_matrix(truth.astype(np.int64), np.asarray(pred).astype(np.int64), labels)
    iou = iou_from_confusion(cm)
    total = cm.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.any(np.isfinite(iou)) else 0.0,
        "pixel_accuracy": float(np.trace(cm) / total) if total else 0.0,
        "per_class_iou": {str(int(lab)): (None if np.isnan(v) else float(v))
                          for lab, v in zip(labels, iou)},
    }


def miou(truth: np.ndarray, pred: np.ndarray, labels=None) -> float:
    """Mean IoU (fraction in [0, 1])."""
    return segmentation_metrics(truth, pred, labels)["miou"]
