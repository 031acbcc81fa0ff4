"""Stage 1: one fresh network per annotated image -> pseudo-label + confidence for every pixel.

`pseudo_label_job` is a picklable top-level function (process pools and Dask ship it to
workers). Per image it writes, each file atomically (temp file + rename), into ``out_dir``::

    NAME_labels.tif      label values (like the mask), uint8/uint16
    NAME_confidence.tif  float32 [0, 1]: the network's max softmax probability (S4AL eq. 5 weight)
    NAME_points.csv      the points the network learnt from (order,label,y,x), full weight later
    NAME.json            the record, written LAST: its presence with a matching ``key`` means
                         "complete", so a killed run redoes only unfinished images

Sources: ``points`` (a human's clicks, admitted in click order, optionally cut to the first
``rate * pixels`` clicks), ``oracle`` (Algorithm 1 on the mask with budget ``rate``) and
``mask`` (the true mask, confidence 1: the full-supervision reference).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.files import write_tif_atomic
from .events import Cancelled
from .layout import Item

# 2: the forest teacher (thirtieth session) changed the per-image networks of colour images
JOB_VERSION = 2


@dataclass
class PseudoLabelOptions:
    """How stage 1 treats every image (picklable, part of the resume key).

    source: 'auto' (points if a CSV exists, else oracle on the mask), 'points', 'oracle' or
        'mask' (true masks, the full-supervision reference).
    rate: at most this fraction of labelled pixels per image (oracle budget; for points the
        first ``rate * H * W`` clicks); None = all clicks (points) / 0.001 (oracle).
    target: oracle stops once its mIoU on the mask reaches this.
    spec / config: ModelSpec / TrainConfig as dicts ({} = library defaults).
    threads: torch CPU threads in the worker (None = torch default).
    """

    source: str = "auto"
    rate: float | None = None
    target: float = 0.995
    seed: int = 0
    channel_axis: object = "auto"
    spec: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    device: str = "cpu"
    threads: int | None = None
    filter_sigmas: tuple | None = None  # None: the default filter bank

    def setup(self):
        """The TrainSetup of every per-image network (seed and threads from these options)."""
        from ..core.features import FilterBank
        from ..core.models import ModelSpec
        from ..core.train_setup import TrainSetup
        from ..core.trainer import TrainConfig

        return TrainSetup(
            channel_axis=self.channel_axis,
            spec=ModelSpec.from_dict(self.spec) if self.spec else ModelSpec(),
            config=TrainConfig.from_dict({**self.config, "seed": self.seed, "threads": self.threads}),
            device=self.device,
            filter_bank=FilterBank() if self.filter_sigmas is None else FilterBank(tuple(self.filter_sigmas)),
        )

    def key(self, item: Item) -> str:
        """Hash of everything that determines this image's outputs (options + input files)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("threads", "device")}
        d["version"] = JOB_VERSION
        d["inputs"] = [_stat(p) for p in (item.image, item.points, item.mask)]
        if item.plane is not None:  # (2D images keep their keys: their runs still resume)
            d["plane"] = item.plane
        return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stat(p: Path | None):
    if p is None:
        return None
    s = Path(p).stat()
    return [Path(p).name, s.st_size, s.st_mtime_ns]


def output_paths(out_dir: str | Path, name: str) -> dict[str, Path]:
    """The files of one image: keys labels, confidence, points, record."""
    d = Path(out_dir)
    return {
        "labels": d / f"{name}_labels.tif",
        "confidence": d / f"{name}_confidence.tif",
        "points": d / f"{name}_points.csv",
        "record": d / f"{name}.json",
    }


def load_record(out_dir: str | Path, name: str, key: str | None = None) -> dict | None:
    """The record of a complete image (all files present, key matching if given), else None."""
    paths = output_paths(out_dir, name)
    try:
        rec = json.loads(paths["record"].read_text())
    except (OSError, ValueError):
        return None
    if key is not None and rec.get("key") != key:
        return None
    if not (paths["labels"].is_file() and paths["confidence"].is_file()):
        return None
    return rec


def _read_inputs(item: Item, opts: PseudoLabelOptions, source: str):
    """(image, channels-first image, mask or None), validated. InputError on a bad input.

    A plane item (``item.plane`` set) gives its plane of the stack, channels first (C, H, W),
    and the same plane of the mask stack.
    """
    from ..core.checks import check_mask, plane_image
    from ..core.images import read_image, read_mask

    if item.plane is None:
        image = read_image(item.image)
        cf = plane_image(image, opts.channel_axis, who="the dataset pipeline")
    else:
        from .stacks import read_plane

        image = cf = read_plane(item, opts.channel_axis)
    labelled_by_mask = source in ("oracle", "mask")
    if labelled_by_mask and item.mask is None:
        raise InputError("no mask for the oracle / full-mask source")
    mask = None
    if item.mask is not None:
        m = read_mask(item.mask)
        if item.plane is not None:
            if m.ndim != 3 or not 0 <= item.plane < m.shape[0]:
                raise InputError(f"mask shape {m.shape} has no plane {item.plane}")
            m = m[item.plane]
        mask = check_mask(m, cf.shape[1:], min_classes=2 if labelled_by_mask else 0)
    return image, cf, mask


def _from_points(item: Item, image, opts: PseudoLabelOptions, cancel):
    from ..core.points import PointSet
    from ..core.session import make_trainer

    points = PointSet.from_csv(item.points)
    if item.plane is not None:
        from .stacks import plane_points

        points = plane_points(points, item.plane)
    if opts.rate is not None:
        hw = int(np.prod(_spatial(image, opts)))
        n = max(2, int(np.floor(opts.rate * hw)))
        points = points.head(min(n, len(points)))
    trainer = make_trainer(image, points, opts.setup())
    for _ in trainer.run():
        if cancel is not None and cancel.is_set():
            trainer.stop()
            raise Cancelled()
    proba = trainer.predict_proba(0)
    return points, trainer.classes[np.argmax(proba, 0)], proba


def _spatial(image, opts) -> tuple[int, int]:
    from ..core.images import to_channels_first

    return to_channels_first(image, opts.channel_axis).shape[1:]


def _from_oracle(image, mask, opts: PseudoLabelOptions, cancel):
    from ..core.oracle_loop import run_oracle

    def check(_row):
        if cancel is not None and cancel.is_set():
            raise Cancelled()

    res = run_oracle(
        image,
        mask,
        opts.setup(),
        budget=opts.rate or 0.001,
        target=opts.target,
        seed=opts.seed,
        callback=check,
    )
    return res.points, np.asarray(res.prediction), np.asarray(res.proba)


def pseudo_label_job(item: Item, out_dir: str | Path, opts: PseudoLabelOptions, cancel=None) -> dict:
    """Make (or find, if complete) the pseudo-label of one image. Never raises for bad input.

    Returns ``{'name', 'status', 'reason', 'record', 'seconds'}`` with status 'done',
    'cached' (complete outputs found), 'skipped' (bad input, reason says why) or 'failed'
    (unexpected error, reason holds it). ``cancel``: a threading.Event (in-process runs only).
    A plane item of a 3D stack (`stacks.expand_stacks`) is pseudo-labelled as a 2D image: the
    plane, its points (``z`` rounded to the plane) or its mask plane; its record adds
    ``stack`` and ``plane``.
    """
    t0 = time.perf_counter()
    out = {"name": item.name, "status": "done", "reason": "", "record": None, "seconds": 0.0}
    source = item.source(opts.source) if opts.source != "mask" else ("mask" if item.mask else None)
    if source is None:
        need = "mask" if opts.source in ("oracle", "mask") else "points CSV or mask"
        return {**out, "status": "skipped", "reason": f"no {need}"}
    try:
        key = opts.key(item)
        rec = load_record(out_dir, item.name, key)
        if rec is not None:
            return {**out, "status": "cached", "record": rec}
        if opts.threads:
            from ..core.models import setup_torch

            setup_torch(opts.threads)
        image, cf, mask = _read_inputs(item, opts, source)
        if item.plane is not None:
            opts = replace(opts, channel_axis=0)  # the plane is channels first (C, H, W)
        if source == "points":
            points, labels, proba = _from_points(item, image, opts, cancel)
            conf = proba.max(0).astype(np.float32)
        elif source == "oracle":
            points, labels, proba = _from_oracle(image, mask, opts, cancel)
            conf = proba.max(0).astype(np.float32)
        else:
            points, labels, conf = None, mask, np.ones(mask.shape, np.float32)
        rec = _write_outputs(
            item, out_dir, key, source, cf, mask, points, labels, conf, time.perf_counter() - t0
        )
        return {**out, "record": rec, "seconds": rec["seconds"]}
    except Cancelled:
        raise
    except InputError as e:
        return {**out, "status": "skipped", "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - one bad image must not end a run of thousands
        return {**out, "status": "failed", "reason": f"{type(e).__name__}: {e}"}


def _write_outputs(item, out_dir, key, source, cf, mask, points, labels, conf, seconds) -> dict:
    from ..core.metrics import segmentation_metrics
    from ..core.session import write_json, write_labels

    paths = output_paths(out_dir, item.name)
    labels = np.asarray(labels)
    write_labels(paths["labels"], labels)
    write_tif_atomic(paths["confidence"], conf.astype(np.float32))
    if points is not None:
        points.to_csv(paths["points"])
    elif paths["points"].exists():
        paths["points"].unlink()
    n_points = 0 if points is None else len(points)
    rec = {
        "name": item.name,
        "key": key,
        "source": source,
        "image": str(item.image),
        "shape": list(labels.shape),
        "n_channels": int(cf.shape[0]),
        "classes": sorted(int(c) for c in np.unique(labels))
        if points is None
        else sorted(set(int(c) for c in np.unique(labels)) | set(points.classes.tolist())),
        "n_points": n_points,
        "fraction_labeled": n_points / labels.size if points is not None else 1.0,
        "mean_confidence": float(conf.mean()),
        "seconds": round(float(seconds), 3),
    }
    if item.plane is not None:
        rec["stack"], rec["plane"] = item.stack, int(item.plane)
    if mask is not None:
        m = segmentation_metrics(mask, labels)
        rec["pseudo_label_miou"] = m["miou"]
        rec["pseudo_label_per_class_iou"] = m["per_class_iou"]
    write_json(paths["record"], rec)  # last: marks the image complete
    return rec
