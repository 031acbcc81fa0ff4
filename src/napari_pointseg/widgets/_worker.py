"""Background work of the "Annotate & train" widget, Qt-free except for starting workers.

`training_loop` is the generator a napari ``thread_worker`` runs: it builds the trainer (filter
bank, network: heavy, so in the worker thread), drives ``SparseTrainer.run()`` and forwards a
throttled stream of messages to the main thread. Anything else that needs the network
(predicting a whole stack, suggestions, saving a bundle) is a `Job`: while training runs, jobs
execute in the training thread between two iterations (the network is never used by two
threads at once); otherwise in a short-lived worker of their own.

What it yields to the main thread are the typed events of `_events`: `Status`,
`TrainerReady`, `Progress` (a TrainUpdate) and `JobDone`.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..core.points import PointSet
from ._events import JobDone, Progress, Status, TrainerReady
from ._safe_import import import_torch


@dataclass
class TrainRequest:
    """What the worker needs to build a trainer (captured in the main thread, cheap)."""

    image: Any  # the layer's array (numpy, dask, zarr...): read in the worker
    points: PointSet
    classes: list[int]
    setup: Any  # TrainSetup: channel axis, rgb, network, recipe, device
    prepared: Any = None  # PreparedImage made in advance (`prepare_input`), or None


@dataclass
class Job:
    """``fn(model)`` runs in a worker thread; ``on_done(result)`` / ``on_error(exc)`` in the
    main thread. ``model`` is the trainer (or a `BundleModel`)."""

    fn: Callable[[Any], Any]
    on_done: Callable[[Any], None] | None = None
    on_error: Callable[[BaseException], None] | None = None
    label: str = ""


@dataclass(eq=False)
class LoopControl:
    """Shared between the main thread and the training thread (plain attributes: atomic)."""

    status_interval: float = 0.25  # forward progress at most this often (s) ...
    abort: bool = False  # ... stop as soon as possible (viewer closing)
    predict_now: bool = False  # compute a prediction of the current plane at once
    jobs: "queue.Queue[Job]" = field(default_factory=queue.Queue)


def as_array(data) -> np.ndarray:
    """A napari layer's data as numpy (level 0 of a multiscale image)."""
    if isinstance(data, (list, tuple)):
        data = data[0]
    return np.asarray(data)


def build_trainer(req: TrainRequest):
    """Validate and build the SparseTrainer (in the worker thread)."""
    import_torch()
    from ..core.session import make_trainer

    image = req.image if req.prepared is not None else as_array(req.image)
    return make_trainer(image, req.points, req.setup, classes=req.classes, prepared=req.prepared)


def prepare_input(
    image, channel_axis, rgb: bool, plane: int, spec, n_classes: int, config, device: str = "auto"
):
    """Network input of ``image`` made ahead of Train, while the user is still clicking.

    Computes the normalisation and filter bank of ``plane`` and runs a throw-away network of
    ``spec`` once through a training iteration and a full-plane prediction of that size: the
    first pass of each shape costs torch/oneDNN about a second of set-up, which the first
    live prediction would otherwise wait for. Returns the PreparedImage (worker thread).
    """
    import_torch()
    import torch
    import torch.nn.functional as F

    from ..core.inputs import PreparedImage
    from ..core.models import (
        ModelSpec,
        build_model,
        choose_device,
        resolve_input_scale,
        setup_torch,
        use_bf16,
    )
    from ..core.predict import predict_proba
    from ..core.trainer import crop_batch_shape

    setup_torch(config.threads)
    prep = PreparedImage(as_array(image), channel_axis, rgb)
    x = prep.plane(plane)
    dev = choose_device(device)
    spec = ModelSpec(**{**spec.to_dict(), "in_channels": prep.spec.in_channels, "classes": max(2, n_classes)})
    spec = resolve_input_scale(spec, x.shape[-2:])  # as the trainer resolves it
    # private RNG state: the real network's seeded initialisation must not depend on this
    with torch.random.fork_rng(devices=[]):
        net = build_model(spec).to(dev)
    if dev.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
    padded = [-(-n // spec.stride) * spec.stride for n in x.shape[-2:]]  # as the trainer pads
    bs, ch, cw = crop_batch_shape(config, padded, spec.stride, spec.scale)
    xb = torch.zeros((bs, x.shape[0], ch, cw), device=dev)
    if dev.type == "cpu":
        xb = xb.contiguous(memory_format=torch.channels_last)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16(config.precision, dev)):
        out = net(xb)
    F.cross_entropy(
        out.float(), torch.zeros(out.shape[0], *out.shape[2:], dtype=torch.long, device=dev)
    ).backward()
    net.eval()
    predict_proba(net, x, dev, stride=spec.stride)
    return prep


def _run_jobs(control: LoopControl, model):
    while True:
        try:
            job = control.jobs.get_nowait()
        except queue.Empty:
            return
        try:
            result, error = job.fn(model), None
        except Exception as e:  # noqa: BLE001 - reported to the user, training goes on
            result, error = None, e
        yield JobDone(job, result, error)


def training_loop(source, control: LoopControl):
    """Generator run by a napari thread_worker. ``source``: a TrainRequest or a trainer."""
    if isinstance(source, TrainRequest):
        yield Status("preparing the image and a new network…")
        trainer = build_trainer(source)
        yield TrainerReady(trainer)
        if control.abort:
            return
    else:
        trainer = source
    last_emit = 0.0
    was_waiting = False
    shown_plane = None
    it0 = trainer.iteration
    base_interval = trainer.config.predict_every_s

    def predict(plane):
        # a prediction costs as much as several iterations on a slow CPU: keep the live
        # updates to at most ~1/4 of the time (the user's interval is the minimum)
        t = time.perf_counter()
        out = trainer.predict(plane)
        dt = time.perf_counter() - t
        if base_interval is not None:
            trainer.config.predict_every_s = max(base_interval, 3.0 * dt)
        return out

    gen = trainer.run()
    try:
        for upd in gen:
            if control.abort:
                trainer.stop()
                break
            yield from _run_jobs(control, trainer)
            if upd.prediction is not None:
                shown_plane = upd.plane
            plane = trainer.config.predict_plane
            if (upd.waiting or upd.done) and (not was_waiting or plane != shown_plane or control.predict_now):
                # caught up: show the prediction of the final weights / the current plane
                control.predict_now = False
                upd.prediction = predict(plane)
                upd.plane = shown_plane = plane
            elif shown_plane is None and upd.prediction is None and upd.iteration - it0 >= 3:
                # the first prediction as soon as the first step has trained: the user sees
                # the segmentation appear within a second or two of pressing Train
                upd.prediction = predict(plane)
                upd.plane = shown_plane = plane
            elif control.predict_now and not upd.waiting:
                control.predict_now = False
                upd.prediction = predict(plane)
                upd.plane = shown_plane = plane
            now = time.perf_counter()
            if (
                upd.prediction is not None
                or upd.done
                or upd.waiting != was_waiting
                or now - last_emit >= control.status_interval
            ):
                last_emit = now
                yield Progress(upd)
            was_waiting = upd.waiting
    finally:
        gen.close()
    if not control.abort:
        yield from _run_jobs(control, trainer)


def warm_up() -> None:
    """Import torch, segmentation-models-pytorch and scikit-learn's forest ahead of the first
    Train (worker thread)."""
    import_torch()
    # scikit-learn and skimage.feature: the click forest's first fit (colour images) would
    # import them mid-training, ~1.2 s late, holding the event loop up to ~0.17 s at a time
    import segmentation_models_pytorch  # noqa: F401
    import skimage.feature  # noqa: F401
    import sklearn.ensemble  # noqa: F401


def job_runner(job: Job, model):
    """Function run by a one-off worker when no training loop is running."""
    import_torch()
    return job.fn(model)


class BundleModel:
    """A loaded bundle applied to one image: the subset of the trainer API jobs use."""

    def __init__(self, bundle, image, channel_axis="auto", rgb=None, device="auto"):
        import_torch()
        from ..core.inputs import PreparedImage
        from ..core.models import choose_device, setup_torch

        setup_torch()
        self.bundle = bundle
        self.device = choose_device(device)
        self.image = PreparedImage(
            as_array(image), channel_axis, rgb, spec=bundle.input_spec, forest_data=bundle.forest_data
        )
        self.model = bundle.build(self.device)
        self.classes = np.asarray(bundle.classes, dtype=np.int64)
        self.spec = bundle.spec

    def predict_proba(self, z: int = 0) -> np.ndarray:
        """Class probabilities (K, H, W) of plane ``z``."""
        from ..core.predict import predict_proba

        return predict_proba(self.model, self.image.plane(z), self.device, stride=self.spec.stride)

    def predict(self, z: int | None = None) -> np.ndarray:
        """Labels of plane ``z`` (None: the whole image, every plane of a stack)."""
        if z is None and self.image.is_3d:
            return np.stack([self.predict(i) for i in range(self.image.n_planes)])
        return self.classes[np.argmax(self.predict_proba(z or 0), 0)]
