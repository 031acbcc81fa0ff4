"""The dataset-level pipeline of "How low can we go?" section 4, as a generator of events.

Stages (outputs under ``out``)::

    1 pseudo-labels   pseudo/NAME_{labels,confidence}.tif, NAME_points.csv, NAME.json
                      (one fresh network per annotated image, `pseudo_labels.py`)
    2 dataset network stage2.safetensors: from scratch on every pseudo-labelled image
    3 self-training   (only if some images are not annotated: ``fraction`` < 1 or images with
                      neither points nor mask) self_labels/NAME_*.tif from the stage-2
                      network, then final.safetensors trained from scratch on all images
    4 test            test_predictions/NAME.tif, metrics.json (test mIoU, per class, per image)
    model.safetensors the final network (a core/bundle.py bundle: `pointseg predict`, widget 1)

A 3D stack is treated as its planes (`stacks.py`): stage 1 makes one job per annotated plane
(``pseudo/STACK_zNNN_*``), stages 2-3 train on planes, stage 4 predicts whole stacks plane by
plane (``test_predictions/NAME.tif`` is a (Z, H, W) stack) and counts every voxel.

Re-running with the same options resumes: complete stage-1 images are skipped, and a stage-2 /
final bundle whose recorded inputs match is reused instead of retrained.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from ..core.errors import InputError
from ..core.files import atomic_write, remove_temp_files, write_tif_atomic
from .events import Advance, Cancelled, Done, Message, Stage
from .layout import Item, Skip, scan_folder
from .pseudo_labels import PseudoLabelOptions, output_paths, pseudo_label_job
from .runner import run_jobs
from .stacks import checked_cf, expand_stacks, plane_name
from .train import DatasetTrainConfig, DatasetTrainer, Sample


@dataclass
class PipelineOptions:
    """Everything one run needs (see `pointseg dataset --help`).

    fraction: share of the annotatable images that are annotated (Table 2 rows); the rest are
        labelled by the stage-2 network (self-training). rate: labelled pixels per image
        (Table 2 columns; see PseudoLabelOptions). image_config: TrainConfig dict of the
        per-image networks; dataset_config: DatasetTrainConfig dict; spec: ModelSpec dict.
    """

    data: Path
    out: Path
    test: Path | None = None
    source: str = "auto"
    rate: float | None = None
    fraction: float = 1.0
    target: float = 0.995
    seed: int = 0
    channel_axis: object = "auto"
    spec: dict = field(default_factory=dict)
    image_config: dict = field(default_factory=dict)
    dataset_config: dict = field(default_factory=dict)
    encoder_weights: str | None = None
    workers: int = 1
    scheduler: object = None
    device: str = "auto"
    pseudo_dir: Path | None = None  # share stage-1 outputs between runs (the grid does)
    filter_sigmas: tuple | None = None  # None: the default filter bank; (): raw channels only
    threads: int | None = None  # torch threads of in-process stage-1 jobs (pools: cores // N)

    def __post_init__(self):
        self.data, self.out = Path(self.data), Path(self.out)
        self.test = Path(self.test) if self.test else None
        if not 0 < self.fraction <= 1:
            raise InputError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.rate is not None and not 0 < self.rate <= 1:
            raise InputError(f"sampling rate must be in (0, 1], got {self.rate}")
        if self.workers < 1:
            raise InputError("--workers must be >= 1")

    def job_options(self) -> PseudoLabelOptions:
        """The stage-1 options: the fields both classes have, the per-image recipe as config,
        and the CPU for jobs in a pool (one GPU cannot serve N workers)."""
        same = {f.name: getattr(self, f.name) for f in fields(PseudoLabelOptions) if hasattr(self, f.name)}
        dev = "cpu" if (self.workers > 1 or self.scheduler) else self.device
        return PseudoLabelOptions(**{**same, "config": self.image_config, "device": dev})

    def filter_bank(self):
        from ..core.features import FilterBank

        return FilterBank() if self.filter_sigmas is None else FilterBank(tuple(self.filter_sigmas))


def split_items(items: list[Item], fraction: float, seed: int, source: str) -> tuple[list[Item], list[Item]]:
    """(annotated, unannotated). Annotated: a seeded ``fraction`` of the images that have points
    or a mask (at least one); the subsets are nested (fraction 0.3 is inside 0.5) so that grid
    cells share their stage-1 work. Images without annotation are always unannotated."""
    src = "oracle" if source == "mask" else source
    can = [it for it in items if it.source(src) is not None]
    rest = [it for it in items if it.source(src) is None]
    if not can:
        return [], rest
    perm = np.random.default_rng(seed).permutation(len(can))
    k = min(len(can), max(1, int(round(fraction * len(can)))))
    chosen = set(perm[:k].tolist())
    ann = [it for i, it in enumerate(can) if i in chosen]
    return ann, sorted(rest + [it for i, it in enumerate(can) if i not in chosen], key=lambda i: i.name)


def iter_pipeline(opts: PipelineOptions, cancel=None) -> Iterator[object]:
    """Run the pipeline; yields Stage / Advance / Message events and finally Done.

    cancel: a threading.Event; when set the run stops at the next check (finished images stay
    on disk). Raises InputError when nothing sensible can go on (no images, no usable
    annotation, one class only...).
    """
    t_start = time.perf_counter()
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    listing = scan_folder(opts.data)
    skipped: list[Skip] = list(listing.skipped)
    for s in listing.skipped:
        yield Message(f"skipping {s.name}: {s.reason}", "warning")
    annotated, unannotated = split_items(listing.items, opts.fraction, opts.seed, opts.source)
    if not annotated:
        raise InputError(
            f"no image in {opts.data} has a points CSV or a mask to learn from "
            f"(source '{opts.source}'); see `pointseg dataset --help` for the layout"
        )
    seconds: dict[str, float] = {}

    # -- stage 1 ---------------------------------------------------------------------------
    pseudo_dir = Path(opts.pseudo_dir) if opts.pseudo_dir else out / "pseudo"
    remove_temp_files(out, pseudo_dir)
    t0 = time.perf_counter()
    records, computed = [], []
    # a 3D stack becomes one job per annotated plane (stacks.py); 2D images stay as they are
    job_items, stack_skips = expand_stacks(annotated, opts.source, opts.channel_axis)
    for s in stack_skips:
        skipped.append(s)
        yield Message(f"skipping {s.name}: {s.reason}", "warning")
    yield Stage("pseudo-labels", len(job_items))
    jobs = run_jobs(
        pseudo_label_job,
        job_items,
        pseudo_dir,
        opts.job_options(),
        workers=opts.workers,
        scheduler=opts.scheduler,
        cancel=cancel,
    )
    try:
        for r in jobs:
            if r["status"] in ("done", "cached"):
                records.append(r["record"])
                if r["status"] == "done":
                    computed.append(r["seconds"])
                else:
                    yield Message(f"{r['name']}: complete outputs found, skipped (resume)")
            else:
                skipped.append(Skip(r["name"], r["reason"]))
                yield Message(f"skipping {r['name']}: {r['reason']}", "warning")
            yield Advance(1, r["name"])
            _check(cancel)
    finally:
        jobs.close()
    _check(cancel)  # the runner ends early when cancelled: not "no image could be labelled"
    seconds["pseudo_labels"] = time.perf_counter() - t0
    records, bad = _one_channel_count(records)
    for s in bad:
        skipped.append(s)
        yield Message(f"skipping {s.name}: {s.reason}", "warning")
    if not records:
        raise InputError(
            "no image could be pseudo-labelled: " + "; ".join(f"{s.name}: {s.reason}" for s in skipped[-5:])
        )
    records.sort(key=lambda r: r["name"])
    n_channels = records[0]["n_channels"]

    # -- stage 2 ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    samples = _load_samples(pseudo_dir, records, opts.channel_axis)
    classes = sorted(set().union(*[set(r["classes"]) for r in records]))
    net = yield from _train_stage(
        opts,
        samples,
        classes,
        out / "stage2.safetensors",
        "dataset network",
        [r["key"] for r in records],
        cancel,
    )
    seconds["dataset_network"] = time.perf_counter() - t0

    # -- stage 3 ---------------------------------------------------------------------------
    final, self_labelled = net, []
    if unannotated:
        t0 = time.perf_counter()
        yield Stage("self-labels", len(unannotated))
        for it in unannotated:
            _check(cancel)
            s = _self_label(net, it, out / "self_labels", n_channels, opts.channel_axis)
            if isinstance(s, Skip):
                skipped.append(s)
                yield Message(f"skipping {s.name}: {s.reason}", "warning")
            else:
                self_labelled.extend(s)  # a 3D stack: one sample per plane
            yield Advance(1, it.name)
        seconds["self_labels"] = time.perf_counter() - t0
        if self_labelled:
            t0 = time.perf_counter()
            keys = [r["key"] for r in records] + [f"self:{s.name}:{s.meta['hash']}" for s in self_labelled]
            final = yield from _train_stage(
                opts,
                samples + self_labelled,
                classes,
                out / "final.safetensors",
                "final network",
                keys,
                cancel,
            )
            seconds["final_network"] = time.perf_counter() - t0
    bundle = out / "model.safetensors"
    with atomic_write(bundle) as tmp:
        shutil.copyfile(final.bundle_path, tmp)

    # -- stage 4 ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    test = None
    if opts.test is not None:
        test = yield from _test_stage(final, opts, out, n_channels, skipped, cancel)
    seconds["test"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start
    summary = _summary(opts, records, computed, self_labelled, skipped, classes, test, seconds, bundle)
    from ..core.session import write_json

    write_json(out / "metrics.json", summary)
    yield Done(summary)


def _check(cancel) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled()


def _one_channel_count(records: list[dict]) -> tuple[list[dict], list[Skip]]:
    """Keep the images with the most common channel count; the others become Skips."""
    if not records:
        return records, []
    counts = Counter(r["n_channels"] for r in records)
    keep = counts.most_common(1)[0][0]
    bad = [
        Skip(r["name"], f"{r['n_channels']} channel(s), the data set has {keep}")
        for r in records
        if r["n_channels"] != keep
    ]
    return [r for r in records if r["n_channels"] == keep], bad


def _load_samples(pseudo_dir: Path, records: list[dict], channel_axis) -> list[Sample]:
    """The stage-1 outputs as training samples; a plane of a 3D stack (record with ``plane``)
    is its (C, H, W) plane with the stack's normalisation (each stack is read once)."""
    from ..core.images import fit_normalisation, read_image
    from .stacks import stack_cf

    stacks: dict[str, tuple] = {}
    samples = []
    for rec in records:
        if rec.get("plane") is None:
            samples.append(_load_sample(pseudo_dir, rec, read_image(rec["image"])))
            continue
        if rec["image"] not in stacks:
            cf = stack_cf(read_image(rec["image"]), channel_axis)
            stacks[rec["image"]] = (cf, fit_normalisation(cf))
        cf, norm = stacks[rec["image"]]
        plane = np.ascontiguousarray(cf[:, rec["plane"]])
        samples.append(_load_sample(pseudo_dir, rec, plane, channels_first=True, normalisation=norm))
    return samples


def _load_sample(pseudo_dir: Path, rec: dict, image: np.ndarray, **plane) -> Sample:
    import tifffile

    from ..core.points import PointSet

    p = output_paths(pseudo_dir, rec["name"])
    pts = PointSet.from_csv(p["points"]) if p["points"].is_file() else None
    return Sample(
        rec["name"],
        image,
        tifffile.imread(p["labels"]).astype(np.int64),
        tifffile.imread(p["confidence"]).astype(np.float32),
        pts,
        meta=rec,
        **plane,
    )


def _stage_key(opts: PipelineOptions, keys: list[str]) -> str:
    cfg = {k: v for k, v in opts.dataset_config.items() if k != "threads"}
    d = {
        "inputs": keys,
        "spec": opts.spec,
        "filters": opts.filter_sigmas,
        "config": cfg,
        "seed": opts.seed,
        "encoder": opts.encoder_weights,
        "channel_axis": str(opts.channel_axis),
    }
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _train_stage(opts, samples, classes, path: Path, name: str, keys, cancel):
    """Train (or reload, if ``path`` holds a bundle with the same inputs) a dataset network."""
    from ..core.bundle import load_bundle
    from ..core.models import ModelSpec

    key = _stage_key(opts, keys)
    cfg = DatasetTrainConfig.from_dict({**opts.dataset_config, "seed": opts.seed})
    spec = ModelSpec.from_dict(opts.spec) if opts.spec else None
    yield Message(f"{name}: preparing {len(samples)} image(s)")
    net = DatasetTrainer(
        samples,
        classes,
        cfg,
        spec,
        filter_bank=opts.filter_bank(),
        channel_axis=opts.channel_axis,
        device=opts.device,
        encoder_weights=opts.encoder_weights,
    )
    old = None
    if path.is_file():
        try:
            old = load_bundle(path)
        except InputError:
            old = None
    if old is not None and old.extra.get("stage_key") == key:
        net.model.load_state_dict(old.state_dict)
        net.iteration = cfg.iterations
        yield Message(f"{name}: found a finished network with the same inputs, reused (resume)")
    else:
        yield Stage(name, cfg.iterations, unit="it")
        every = max(1, cfg.iterations // 100)
        run = net.run(cancel)
        for loss in run:
            if net.iteration % every == 0 or net.iteration == cfg.iterations:
                yield Advance(
                    every if net.iteration % every == 0 else net.iteration % every, f"loss {loss:.3f}"
                )
        _check(cancel)
        net.save(path, {"stage_key": key, "stage": name})
    net.bundle_path = path
    return net


def _self_label(net: DatasetTrainer, it: Item, out_dir: Path, n_channels: int, channel_axis):
    """Pseudo-label an unannotated image with the stage-2 network (label + confidence TIFFs).

    Returns a list of samples (one for a 2D image; one per plane for a 3D stack, whose TIFFs
    are (Z, H, W) stacks) or a Skip.
    """
    from ..core.images import fit_normalisation, read_image
    from ..core.session import write_labels

    try:
        image = read_image(it.image)
        cf = checked_cf(image, channel_axis, who="the data set", n_channels=n_channels)
        probas = list(net.predict_planes(image))
    except InputError as e:
        return Skip(it.name, str(e))
    labels = [net.classes[np.argmax(p, 0)] for p in probas]
    confs = [p.max(0).astype(np.float32) for p in probas]
    del probas
    if cf.ndim == 3:  # a 2D image
        write_labels(out_dir / f"{it.name}_labels.tif", labels[0])
        write_tif_atomic(out_dir / f"{it.name}_confidence.tif", confs[0])
        h = hashlib.sha1(labels[0].tobytes()).hexdigest()[:12]
        return [Sample(it.name, image, labels[0], confs[0], None, meta={"hash": h, "source": "self"})]
    write_labels(out_dir / f"{it.name}_labels.tif", np.stack(labels))
    write_tif_atomic(out_dir / f"{it.name}_confidence.tif", np.stack(confs))
    norm = fit_normalisation(cf)
    samples = []
    for z, (lab, conf) in enumerate(zip(labels, confs)):
        h = hashlib.sha1(lab.tobytes()).hexdigest()[:12]
        samples.append(
            Sample(
                plane_name(it.name, z, len(labels)),
                np.ascontiguousarray(cf[:, z]),
                lab,
                conf,
                None,
                meta={"hash": h, "source": "self", "stack": it.name, "plane": z},
                channels_first=True,
                normalisation=norm,
            )
        )
    return samples


def _test_stage(net: DatasetTrainer, opts, out: Path, n_channels: int, skipped: list, cancel):
    """Predict the test images; metrics against their masks. Returns the test section."""
    from ..core.checks import check_mask
    from ..core.images import read_image, read_mask
    from ..core.metrics import confusion_matrix, iou_from_confusion, segmentation_metrics
    from ..core.session import write_labels

    listing = scan_folder(opts.test)
    for s in listing.skipped:
        skipped.append(Skip(f"test/{s.name}", s.reason))
        yield Message(f"test: skipping {s.name}: {s.reason}", "warning")
    labels = net.classes
    confusions = []  # (labels, matrix) per image: a mask may hold values the network lacks
    per_image = {}
    yield Stage("test", len(listing.items))
    for it in listing.items:
        _check(cancel)
        try:
            image = read_image(it.image)
            # a 3D stack is predicted plane by plane into a (Z, H, W) stack; its metrics count
            # every voxel (the confusion matrices add up, no mean of plane scores)
            cf = checked_cf(image, opts.channel_axis, who="the training set", n_channels=n_channels)
            mask = check_mask(read_mask(it.mask), cf.shape[1:], min_classes=0) if it.mask else None
            pred = net.predict(image)
        except InputError as e:
            skipped.append(Skip(f"test/{it.name}", str(e)))
            yield Message(f"test: skipping {it.name}: {e}", "warning")
            yield Advance(1, it.name)
            continue
        write_labels(out / "test_predictions" / f"{it.name}.tif", pred)
        if mask is not None:
            union = np.union1d(labels, np.unique(mask))
            per_image[it.name] = segmentation_metrics(mask, pred, labels=union)
            confusions.append((union, confusion_matrix(mask, pred, union)))
        yield Advance(1, it.name)
    if not per_image:
        return {"n_images": len(listing.items), "miou": None}
    # every pixel counts: a mask value the network cannot predict is an error of its pixels
    labels = np.unique(np.concatenate([u for u, _ in confusions]))
    cm = np.zeros((len(labels), len(labels)), np.int64)
    for union, m in confusions:
        idx = np.searchsorted(labels, union)
        cm[np.ix_(idx, idx)] += m
    iou = iou_from_confusion(cm)
    return {
        "n_images": len(per_image),
        "miou": float(np.nanmean(iou)),
        "pixel_accuracy": float(np.trace(cm) / max(cm.sum(), 1)),
        "per_class_iou": {str(int(c)): (None if np.isnan(v) else float(v)) for c, v in zip(labels, iou)},
        "mean_image_miou": float(np.mean([m["miou"] for m in per_image.values()])),
        "per_image": per_image,
    }


def _summary(opts, records, computed, self_labelled, skipped, classes, test, seconds, bundle) -> dict:
    pq = [r["pseudo_label_miou"] for r in records if r.get("pseudo_label_miou") is not None]
    n_points = int(sum(r["n_points"] for r in records))
    fl = [r["fraction_labeled"] for r in records]
    s = {
        "miou": test["miou"] if test else None,
        "pixel_accuracy": test.get("pixel_accuracy") if test else None,
        "per_class_iou": test.get("per_class_iou") if test else None,
        "n_points": n_points,
        "fraction_labeled": float(np.mean(fl)) if fl else 0.0,
        "seconds": round(seconds["total"], 3),
        "stage_seconds": {k: round(v, 3) for k, v in seconds.items()},
        "seconds_per_image_stage1": round(seconds["pseudo_labels"] / len(computed), 3) if computed else None,
        "classes": [int(c) for c in classes],
        "fraction_images": opts.fraction,
        "rate": opts.rate,
        "source": opts.source,
        "n_annotated": len(records),
        "n_self_labelled": len(self_labelled),
        "n_computed_stage1": len(computed),
        "pseudo_label_miou": float(np.mean(pq)) if pq else None,
        "pseudo_labels": {
            r["name"]: {
                k: r.get(k)
                for k in (
                    "source",
                    "n_points",
                    "fraction_labeled",
                    "mean_confidence",
                    "pseudo_label_miou",
                    "seconds",
                )
            }
            for r in records
        },
        "test": test,
        "skipped": [asdict(s) for s in skipped],
        "bundle": str(bundle),
        "options": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in asdict(
                replace(opts, scheduler=str(opts.scheduler) if opts.scheduler else None)
            ).items()
        },
    }
    return s


def run_pipeline(opts: PipelineOptions, cancel=None, on_event=None) -> dict:
    """Run to the end (no progress display); returns the summary (metrics.json content)."""
    summary = {}
    for ev in iter_pipeline(opts, cancel):
        if on_event is not None:
            on_event(ev)
        if isinstance(ev, Done):
            summary = ev.summary
    return summary
