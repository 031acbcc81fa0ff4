"""One-image jobs shared by the CLI, the widgets and the experiments.

`make_trainer` checks the inputs (shapes, classes, channels) and builds a SparseTrainer
(masks: `checks.check_mask`);
`write_labels`, `metrics_for` and `write_json` produce the files every interface writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import InputError
from .files import atomic_write, write_tif_atomic
from .inputs import PreparedImage
from .metrics import segmentation_metrics
from .models import ModelSpec, validate_spec
from .points import PointSet
from .train_setup import TrainSetup
from .trainer import SparseTrainer


def make_trainer(
    image: np.ndarray,
    points: PointSet,
    setup: TrainSetup | None = None,
    *,
    classes=None,
    min_classes: int = 2,
    prepared: PreparedImage | None = None,
) -> SparseTrainer:
    """Validate and build a trainer.

    image: raw array (2D grey, 2D + channels, 3D stack, 3D + channels).
    points: coordinates in the image's spatial axes; labels = label values.
    setup: how the image is read and what network, recipe and device train (default: the
        library defaults).
    classes: label values of the network outputs (default: the point labels).
    prepared: the PreparedImage of ``image`` made earlier (same channel_axis / rgb), e.g. by
        the widget while the user was clicking; ``image`` is then not read again.
    Raises InputError for any inconsistency, before a network is built.
    """
    setup = setup or TrainSetup()
    spec = setup.spec
    validate_spec(ModelSpec(**{**spec.to_dict(), "classes": max(spec.classes, 2)}))
    prep = prepared or setup.prepare(image)
    points.validate(prep.spatial_shape, min_classes=min_classes)
    return SparseTrainer(prep, points, classes=classes, config=setup.config, spec=spec, device=setup.device)


def write_labels(path: str | Path, labels: np.ndarray) -> Path:
    """Write a label image as a zlib-compressed TIFF, atomically, in the smallest integer dtype
    that holds every value exactly (up to 64 bits: label 5000000000 stays 5000000000).
    InputError for non-integer values or values no TIFF integer type holds."""
    labels = np.asarray(labels)
    return write_tif_atomic(path, labels.astype(label_dtype(labels)))


def label_dtype(labels: np.ndarray) -> np.dtype:
    """The smallest of uint8/16/32/64 or int16/32/64 that holds every value of ``labels``
    exactly. InputError when none does (or the values are not integers)."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "biu":
        raise InputError(f"label values must be integers, got dtype {labels.dtype}")
    if labels.size == 0:
        return np.dtype(np.uint8)
    lo, hi = int(labels.min()), int(labels.max())
    candidates = (np.uint8, np.uint16, np.uint32, np.uint64) if lo >= 0 else (np.int16, np.int32, np.int64)
    for dt in candidates:
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    raise InputError(f"label values {lo}..{hi} do not fit a 64-bit integer image")


def metrics_for(
    truth: np.ndarray, pred: np.ndarray, points: PointSet | None, seconds: float, **extra
) -> dict:
    """The metrics JSON of the design: miou, pixel_accuracy, per_class_iou, n_points,
    fraction_labeled, seconds, plus ``extra``. ``truth`` and ``pred`` hold label values."""
    if truth.shape != pred.shape:
        raise InputError(f"mask shape {truth.shape} differs from prediction shape {pred.shape}")
    m = segmentation_metrics(truth, pred)
    n = 0 if points is None else len(points)
    m.update({"n_points": n, "fraction_labeled": n / truth.size, "seconds": round(float(seconds), 3)})
    m.update(extra)
    return m


def write_json(path: str | Path, data: dict) -> Path:
    """Pretty JSON, written atomically."""
    path = Path(path)
    text = json.dumps(data, indent=2, default=_jsonable)  # before the temp file: no leftover on a TypeError
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return path


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
