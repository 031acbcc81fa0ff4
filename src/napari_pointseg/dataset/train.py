"""Stage 2/3: one network trained from scratch on many pseudo-labelled images.

Loss (per pixel, S4AL eq. 5): cross-entropy against the pseudo-label, weighted by the pseudo-
label's confidence ``p`` (max softmax probability of the per-image network), so that sure
pixels count fully and doubtful ones (object borders, unseen structures) little. The clicked
points are targets at full weight (``point_weight``). Class weights
``(mean count / count) ** class_balance`` keep a small class from being drowned.

Mini-batches of random crops from random images, flips / 90 degree rotations / intensity
jitter. Input: the same `InputSpec` mechanism as one-image training (normalised channels +
filter bank), with the feature standardisation fitted on the whole TRAINING SET and stored in
the bundle, so `predict_with_bundle` and widget 1 treat any image the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..core.errors import InputError
from ..core.features import FilterBank
from ..core.images import Normalisation, fit_normalisation, to_channels_first
from ..core.inputs import InputSpec, PreparedImage
from ..core.models import ModelSpec
from ..core.points import PointSet
from ..core.serial import dataclass_from_dict, dataclass_to_dict
from ..core.training_kit import (
    Augmenter,
    class_weights,
    make_optimizer,
    place_network,
    plane_tensor,
    set_lr,
    stack_batch,
    warmup_lr,
)


@dataclass
class DatasetTrainConfig:
    """Recipe of the dataset network (stored in the bundle's train_config)."""

    iterations: int = 1500
    batch_size: int = 8
    crop_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_iters: int = 50
    min_lr_fraction: float = 0.05  # cosine decay to this fraction of lr
    class_balance: float = 0.5
    confidence_power: float = 1.0  # weight = p ** power (1: S4AL eq. 5; 0: plain pseudo-labels)
    point_weight: float = 1.0
    augment: bool = True
    seed: int = 0
    threads: int | None = None

    def to_dict(self) -> dict:
        return dataclass_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetTrainConfig":
        return dataclass_from_dict(cls, d)


@dataclass
class Sample:
    """One training image.

    image: raw 2D image (grey or with channels); labels: int (H, W) label values (pseudo or
    true); confidence: float32 (H, W) in [0, 1] (None = 1 everywhere); points: full-weight
    clicks (label values), or None.
    channels_first: ``image`` is already (C, H, W) (a plane of a 3D stack), whatever the
    trainer's channel_axis. normalisation: the percentile normalisation to use (a plane: its
    stack's, as prediction on the whole stack normalises); None = fitted on ``image``.
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray | None = None
    points: PointSet | None = None
    meta: dict = field(default_factory=dict)
    channels_first: bool = False
    normalisation: Normalisation | None = None


def fit_input_spec(
    images: Sequence[np.ndarray],
    channel_axis="auto",
    filter_bank: FilterBank | None = None,
    normalisations: Sequence[Normalisation | None] | None = None,
) -> tuple[InputSpec, list[np.ndarray]]:
    """Feature standardisation pooled over a training set.

    Returns the InputSpec (mean / std per input channel over all pixels of all images) and
    the unstandardised features of each image, float32 (in_channels, H, W). Every image is
    percentile-normalised on its own first (as `predict_with_bundle` does at inference),
    unless ``normalisations`` gives one for it (one entry per image, None = fit).
    """
    fb = filter_bank or FilterBank()
    feats, n_ch = [], None
    s1 = s2 = None
    count = 0
    norms = list(normalisations) if normalisations is not None else [None] * len(images)
    for img, norm in zip(images, norms):
        cf = to_channels_first(img, channel_axis)
        if n_ch is None:
            n_ch = cf.shape[0]
        elif cf.shape[0] != n_ch:
            raise InputError(f"images have {n_ch} and {cf.shape[0]} channels; a data set needs one count")
        f = fb.apply((norm or fit_normalisation(cf)).apply(cf))
        flat = f.reshape(f.shape[0], -1).astype(np.float64)
        s1 = flat.sum(1) if s1 is None else s1 + flat.sum(1)
        s2 = (flat**2).sum(1) if s2 is None else s2 + (flat**2).sum(1)
        count += flat.shape[1]
        feats.append(f)
    if not feats:
        raise InputError("no training images")
    mean = s1 / count
    std = np.sqrt(np.maximum(s2 / count - mean**2, 0.0))
    spec = InputSpec(n_ch, fb, [float(v) for v in mean], [float(max(v, 1e-4)) for v in std])
    return spec, feats


class DatasetTrainer:
    """Trains one network on a list of `Sample` (2D images, or planes of 3D stacks);
    predicts 2D images and whole stacks (plane by plane).

    classes: label values of the outputs (index i <-> classes[i]); default: union of labels.
    encoder_weights: optional LOCAL file initialising the encoder (never downloaded).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        classes: Sequence[int] | None = None,
        config: DatasetTrainConfig | None = None,
        spec: ModelSpec | None = None,
        filter_bank: FilterBank | None = None,
        channel_axis="auto",
        device: str = "auto",
        encoder_weights: str | Path | None = None,
    ):
        import torch

        from ..core.models import build_model, choose_device, load_encoder_weights, setup_torch

        if not samples:
            raise InputError("no images to train the dataset network on")
        self.config = cfg = config or DatasetTrainConfig()
        setup_torch(cfg.threads)
        self.device = choose_device(device)
        self.channel_axis = channel_axis
        if classes is None:
            classes = sorted(set().union(*[set(np.unique(s.labels).tolist()) for s in samples]))
        self.classes = np.asarray(sorted(int(c) for c in classes), np.int64)
        if len(self.classes) < 2:
            raise InputError(f"the pseudo-labels hold one class only {self.classes.tolist()}")
        # planes of stacks come channels first: bring every image to (C, H, W) here
        images = [s.image if s.channels_first else to_channels_first(s.image, channel_axis) for s in samples]
        self.input_spec, feats = fit_input_spec(
            images, 0, filter_bank, normalisations=[s.normalisation for s in samples]
        )
        # images of many sizes: the dataset network stays at full resolution unless told
        base = (spec or ModelSpec()).to_dict()
        self.spec = ModelSpec(
            **{
                **base,
                "input_scale": base.get("input_scale") or 1,
                "in_channels": self.input_spec.in_channels,
                "classes": len(self.classes),
            }
        )
        mean = np.asarray(self.input_spec.feature_mean, np.float32)[:, None, None]
        std = np.asarray(self.input_spec.feature_std, np.float32)[:, None, None]
        self.x, self.t, self.w = [], [], []
        for s, f in zip(samples, feats):
            f -= mean
            f /= std
            t, w = self._targets(s, f.shape[-2:])
            self.x.append(plane_tensor(f, torch.device("cpu")))
            self.t.append(torch.from_numpy(t))
            self.w.append(torch.from_numpy(w))
        self.names = [s.name for s in samples]
        self.class_weights = self._class_weights()
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.model = build_model(self.spec)
        self.encoder_init = None
        if encoder_weights:
            matched, total = load_encoder_weights(self.model, encoder_weights)
            self.encoder_init = {"file": str(encoder_weights), "matched": matched, "total": total}
        self.model = place_network(self.model, self.device)
        self.optimizer = make_optimizer(self.model.parameters(), cfg.lr, cfg.weight_decay)
        self.augment = Augmenter(self.rng, torch.Generator().manual_seed(cfg.seed), torch.device("cpu"))
        self.iteration = 0
        side = min(min(x.shape[-2:]) for x in self.x)
        self.crop = max(self.spec.stride, min(cfg.crop_size, side) // self.spec.stride * self.spec.stride)
        if side < self.spec.stride:
            raise InputError(f"images must be at least {self.spec.stride} px wide for this network")

    # -- data -------------------------------------------------------------------------------
    def _targets(self, s: Sample, shape) -> tuple[np.ndarray, np.ndarray]:
        """int64 class index (-1 = ignore) and float32 weight maps of one sample."""
        labels = np.asarray(s.labels)
        if labels.shape != tuple(shape):
            raise InputError(f"{s.name}: labels {labels.shape} differ from the image {tuple(shape)}")
        idx = np.searchsorted(self.classes, labels).clip(0, len(self.classes) - 1)
        t = np.where(self.classes[idx] == labels, idx, -1).astype(np.int64)
        conf = (
            np.ones(labels.shape, np.float32)
            if s.confidence is None
            else np.asarray(s.confidence, np.float32)
        )
        w = np.clip(conf, 0.0, 1.0) ** self.config.confidence_power
        if s.points is not None and len(s.points):
            yx = s.points.pixel_coords()[:, -2:]
            ok = np.isin(s.points.labels, self.classes)
            yx, lab = yx[ok], s.points.labels[ok]
            t[yx[:, 0], yx[:, 1]] = np.searchsorted(self.classes, lab)
            w[yx[:, 0], yx[:, 1]] = self.config.point_weight
        w[t < 0] = 0.0
        return t, w.astype(np.float32)

    def _class_weights(self):
        k = len(self.classes)
        counts = np.zeros(k)
        for t, w in zip(self.t, self.w):
            tt, ww = t.numpy().ravel(), w.numpy().ravel()
            ok = tt >= 0
            counts += np.bincount(tt[ok], weights=ww[ok], minlength=k)
        return class_weights(counts, self.config.class_balance, self.device)

    def _batch(self):
        import torch

        xs, ts, ws = [], [], []
        s = self.crop
        for _ in range(self.config.batch_size):
            i = int(self.rng.integers(len(self.x)))
            x, t, w = self.x[i], self.t[i], self.w[i]
            h, wd = x.shape[-2:]
            y0, x0 = int(self.rng.integers(h - s + 1)), int(self.rng.integers(wd - s + 1))
            xc, tc, wc = (
                x[:, y0 : y0 + s, x0 : x0 + s],
                t[y0 : y0 + s, x0 : x0 + s],
                w[y0 : y0 + s, x0 : x0 + s],
            )
            if self.config.augment:
                xc, tc, wc = self.augment(xc, tc, wc)
            xs.append(xc)
            ts.append(tc)
            ws.append(wc)
        return (
            stack_batch(xs, self.device),
            torch.stack(ts).to(self.device),
            torch.stack(ws).to(self.device),
        )

    # -- training ---------------------------------------------------------------------------
    def _lr(self) -> float:
        cfg = self.config
        warm = warmup_lr(cfg.lr, self.iteration, cfg.warmup_iters)
        if warm is not None:
            return warm
        span = max(1, cfg.iterations - cfg.warmup_iters)
        prog = min(1.0, (self.iteration - cfg.warmup_iters) / span)
        lo = cfg.min_lr_fraction
        return cfg.lr * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * prog)))

    def step(self) -> float:
        """One optimisation step on a fresh mini-batch; returns the loss."""
        import torch.nn.functional as F

        self.model.train()
        xb, tb, wb = self._batch()
        set_lr(self.optimizer, self._lr())
        logits = self.model(xb).float()
        pix = F.cross_entropy(logits, tb.clamp(min=0), weight=self.class_weights, reduction="none")
        loss = (pix * wb).sum() / wb.sum().clamp(min=1e-6)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        return float(loss.item())

    def run(self, cancel=None) -> Iterator[float]:
        """Train up to ``config.iterations``; yields the loss after every iteration.

        Stops early when ``cancel`` (a threading.Event) is set or the consumer stops iterating.
        """
        while self.iteration < self.config.iterations:
            if cancel is not None and cancel.is_set():
                return
            yield self.step()

    # -- inference / saving -----------------------------------------------------------------
    def predict_planes(self, image: np.ndarray) -> Iterator[np.ndarray]:
        """float32 (K, H, W) class probabilities of each plane of a raw image, in plane order:
        one for a 2D image, Z for a 3D stack (normalised over the whole stack, as
        `predict_with_bundle` does). K = len(classes), index i <-> classes[i]."""
        from ..core.predict import predict_proba

        prep = PreparedImage(image, self.channel_axis, spec=self.input_spec)
        for z in range(prep.n_planes):
            yield predict_proba(self.model, prep.plane(z), self.device, stride=self.spec.stride)

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """float32 class probabilities of a raw image: (K, H, W) for a 2D image,
        (K, Z, H, W) for a 3D stack (predicted plane by plane)."""
        planes = list(self.predict_planes(image))
        if len(planes) == 1 and not self._is_stack(image):
            return planes[0]
        return np.stack(planes, 1)

    def predict(self, image: np.ndarray) -> np.ndarray:
        """int64 label values (the values of ``classes``) of a raw image: (H, W) for a 2D
        image, (Z, H, W) for a 3D stack (plane by plane; only one plane's probabilities are
        held at a time)."""
        planes = [self.classes[np.argmax(p, 0)] for p in self.predict_planes(image)]
        return np.stack(planes) if self._is_stack(image) else planes[0]

    def _is_stack(self, image: np.ndarray) -> bool:
        return to_channels_first(image, self.channel_axis).ndim == 4

    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write the network as a bundle (core/bundle.py format; `pointseg predict`, widget 1)."""
        from ..core.bundle import save_bundle

        ex = {"kind": "dataset", "train_images": self.names, **(extra or {})}
        if self.encoder_init:
            ex["encoder_init"] = self.encoder_init
        return save_bundle(
            path,
            self.model,
            self.spec,
            self.classes.tolist(),
            self.input_spec,
            None,
            None,
            self.config.to_dict(),
            ex,
        )
