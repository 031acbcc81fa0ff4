"""SparseTrainer: train a randomly initialised network on one image from ordered points.

The loss is cross-entropy on the admitted points only. Points are admitted step by step in the
schedule's order (`schedule.py`); each step trains until the admitted points are fitted (or a
maximum number of iterations), continuing from the current weights. Training runs as a
generator so that a GUI worker, the CLI and the oracle drive it the same way: it yields a
`TrainUpdate` after every iteration, stops between iterations when asked, and picks up new or
edited points between iterations (thread safe).

Each iteration trains on a mini-batch of crops around admitted points (cost independent of the
image size), with flips / 90 degree rotations and intensity jitter (`training_kit.Augmenter`):
on a fixed point set the network otherwise memorises the points and the rest stays noisy.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import numpy as np

from .errors import InputError
from .inputs import PreparedImage
from .models import (
    ModelSpec,
    build_model,
    choose_device,
    rebalance_threads,
    resolve_input_scale,
    setup_torch,
    use_bf16,
)
from .points import PointSet
from .schedule import admission_order, next_step_size
from .serial import dataclass_from_dict, dataclass_to_dict
from .training_kit import (
    Augmenter,
    class_weights,
    make_optimizer,
    place_network,
    plane_tensor,
    set_lr,
    stack_batch,
    warmup_lr,
)

# channels whose variance off their mean is below this share are copies of one (a grey image
# stored as RGB, with compression noise); `TrainConfig.forest_on` "colour" skips them
COLOUR_SHARE = 1e-3


@dataclass
class TrainConfig:
    """Training recipe. Defaults are the measured CPU recipe (see docs/training.md)."""

    order: str = "correct"
    points_per_step: int = 1  # minimum points admitted per step
    step_growth: float = 0.15  # ... or this fraction of the admitted points, if larger
    iters_per_step: int = 8  # at most this many iterations per step (10: ~9 % slower, see docs/training.md)
    min_iters_per_step: int = 2  # at least this many
    fit_threshold: float = 1.0  # end a step early once this fraction of points is right (>1: never)
    final_iters: int = 15  # extra iterations once every point is admitted (30: lower mIoU, docs/training.md)
    honour_target: float = 0.995  # after the final phase: share of admitted points the prediction must honour
    polish_iters: int = 40  # ... at most this many extra iterations on the points it gets wrong
    polish_lr: float = 0.3  # ... at lr x this, without augmentation
    head_polish_iters: int = (
        300  # networks with a full-resolution head: polish the head alone, at most this many steps
    )
    head_polish_max_iters: int = 1200  # ... and on up to this many while it honours < honour_floor
    honour_floor: float = 0.993  # below ~0.99 honoured clicks the result is a bug, not a score
    honour_margin: float = 0.05  # the head polish counts a point honoured when its own class's logit leads
    # by this much: it counts in fp32, and bf16 moves 99 % of the gaps by less than ~0.05 (max 0.2)
    head_polish_lr: float = 3e-3  # ... with Adam at this lr
    head_polish_anchors: int = (
        4096  # ... keeping the prediction on this many pixels (mostly near class boundaries)
    )
    head_polish_keep: float = 10.0  # ... with this weight (KL divergence from the prediction before)
    head_polish_anchor_batches: int = 4  # ... a 1/this share of them in each step, in turn (1: all; 4: ~3x
    # cheaper steps, the same mIoU and clicks honoured, docs/training.md, eighteenth session)
    net_polish_iters: int = 100  # a head polish that ends below honour_floor: this many iterations of
    # the whole network on the points it gets wrong, then the head polish once more (0: none)
    forest_trees: int = 100  # >0: the click forest's class probabilities as extra input channels,
    # a forest of this many trees refitted on the admitted points (docs/training.md, twenty-second
    # session; 100, the baseline's size, since the twenty-third); 0: none
    forest_on: str = "colour"  # ... on images whose channels differ ("colour") or on every image
    # ("always"): on grey images the forest's features repeat the filter bank's, and it cost mIoU
    forest_to: str = "head"  # ... read by the full-resolution head only ("head") or the whole network ("all")
    forest_growth: float = 1.5  # ... refitted once the admitted points grew by this factor, and at
    # the final phase
    final_lr_floor: float = 0.1  # lr falls linearly to lr * this over the final iterations (1: flat)
    ema_decay: float = 0.9  # >0: predict with an exponential moving average of the weights
    consistency_weight: float = 3.0  # once new points join a trained network: weight of the KL
    # divergence of its output from the prediction before they came, at random pixels ...
    consistency_pixels: int = 256  # ... this many per iteration (the head at 2048 cost ~70 % more time)
    consistency_reach: float = 24.0  # ... none closer than this (px) to a point that came since
    consistency_max_new: int = 10  # ... and only when at most this many points came at once
    final_consistency: bool = True  # the consistency term holds in the final phase too: without
    # it the user's pauses fell on vessel images (fives_fundus/0 0.803 -> 0.696, docs/training.md,
    # twenty-ninth session)
    forest_teacher: float = 3.0  # with a fitted click forest (colour images, `forest_on`): weight of the KL
    # divergence of the output from the forest's probabilities, times the forest's confidence, at
    # the consistency term's random pixels, while a network trains from scratch on its first
    # clicks (until points join a trained network: from then on the consistency term holds what
    # it taught; with the teacher on through the corrections, refits of the forest moved the
    # whole plane: live drops of 0.20); not in the polishes; the oracle sets it to 0. From a
    # handful of clicks the forest generalises better than a network from random weights
    # (docs/training.md, thirtieth session); 0: off
    forest_teacher_from: int = 20  # ... from this many admitted points on (a forest of 10-15 clicks
    # taught badly: the widget's first Train on 10 clicks of the tissue sample ended 0.07 lower)
    forest_teacher_until: int = 200  # ... fading linearly to nothing at this many admitted points
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_iters: int = 10
    crop_size: int | None = 256  # in network pixels (image pixels / input_scale); None: whole plane
    batch_size: int = 1
    augment: bool = True
    class_balance: float = 0.5  # class weight = (mean count / count) ** class_balance
    hard_weight: float = (
        0.0  # + this x the mean loss of the points currently predicted wrong (off: see docs/training.md)
    )
    entropy_weight: float = 0.0  # weight of the mean prediction entropy over every crop pixel
    entropy_ramp_iters: int = 100  # ... reached linearly over this many iterations
    seed: int = 0
    wait_for_points: bool = False  # True: when caught up, idle until new points or stop()
    predict_every_s: float | None = None  # yield a prediction at most this often (seconds)
    predict_every_steps: int | None = None  # ... or every N steps
    predict_plane: int = 0  # which plane the live prediction shows (3D stacks)
    precision: str = "auto"  # 'fp32', 'bf16' (autocast) or 'auto' (bf16 on CPUs with native bf16)
    threads: int | None = None

    def to_dict(self) -> dict:
        return dataclass_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return dataclass_from_dict(cls, d)


def crop_batch_shape(config: TrainConfig, plane_shape, stride: int, scale: int = 1) -> tuple[int, int, int]:
    """(batch, height, width) in image pixels of one training iteration on a plane padded to
    ``stride``: ``config.batch_size`` square crops of ``config.crop_size`` network pixels
    (x ``scale``, the network's input downsampling; a multiple of the stride, at most the
    plane), or the whole plane once when the crop would cover it, square or not (a square
    crop of a 528 x 432 plane left rows out and missed the whole-plane path)."""
    h, w = plane_shape
    size = config.crop_size * scale if config.crop_size else max(h, w)
    if size >= h and size >= w:
        return 1, h, w
    size = max(stride, min(size, h, w) // stride * stride)
    return config.batch_size, size, size


@dataclass
class TrainUpdate:
    """Progress after one iteration. ``prediction``: label values (H, W) of ``plane`` or None."""

    step: int
    iteration: int
    loss: float
    n_active: int
    n_points: int
    seconds: float
    iters_per_second: float
    fit_accuracy: float
    device: str
    waiting: bool = False
    done: bool = False
    prediction: np.ndarray | None = field(default=None, repr=False)
    plane: int | None = None


class SparseTrainer:
    """Trains one network on one image from an ordered point set.

    image: a PreparedImage (2D, or a 3D stack trained plane by plane).
    points: PointSet with coordinates in the image's spatial axes; labels are label values.
    classes: label values the network predicts (index i <-> classes[i]); default: the point
        labels. Oracle mode passes the mask's values so that unseen classes still exist.
    spec: network architecture (in_channels / classes are filled in).
    """

    def __init__(
        self,
        image: PreparedImage,
        points: PointSet,
        classes: Sequence[int] | None = None,
        config: TrainConfig | None = None,
        spec: ModelSpec | None = None,
        device: str = "auto",
        model=None,
    ):
        import torch

        self.config = config or TrainConfig()
        setup_torch(self.config.threads)
        self.image = image
        self.device = choose_device(device)
        classes = np.unique(points.labels) if classes is None else np.asarray(classes)
        self.classes = np.asarray(sorted(int(c) for c in classes), dtype=np.int64)
        if len(self.classes) < 2:
            raise InputError(f"at least 2 classes are needed to train, got {self.classes.tolist()}")
        self._check_points(points)
        self._setup_forest(image, model)
        spec = ModelSpec(
            **{
                **(spec or ModelSpec()).to_dict(),
                "in_channels": image.spec.in_channels,
                "classes": len(self.classes),
            }
        )
        spec = resolve_input_scale(spec, image.spatial_shape[-2:])
        if image.spec.forest is not None and model is None and self.config.forest_to == "head":
            spec = replace(spec, head_only_channels=image.spec.forest.classes if spec.scale > 1 else 0)
        self.spec = spec
        torch.manual_seed(self.config.seed)
        self.rng = np.random.default_rng(self.config.seed)
        # own generator: another trainer in the same process must not shift this one's noise
        self._torch_rng = torch.Generator().manual_seed(self.config.seed)
        # ``net`` is the network the optimiser trains; ``model`` is the one predictions and
        # bundles use: a weight average (EMA) of ``net`` when ``ema_decay`` > 0, else ``net``
        # itself. Single-image training at a high lr jitters from iteration to iteration; the
        # average predicts more stably (see docs/training.md).
        self.net = place_network(model if model is not None else build_model(spec), self.device)
        self.optimizer = make_optimizer(self.net.parameters(), self.config.lr, self.config.weight_decay)
        self.augment = Augmenter(self.rng, self._torch_rng, self.device)
        self.model = self.net
        self.ema_model = None
        if self.config.ema_decay > 0:
            import copy

            self.ema_model = copy.deepcopy(self.net).eval()
            for p in self.ema_model.parameters():
                p.requires_grad_(False)
            self.model = self.ema_model
            # listed once: walking the module tree every iteration cost ~1 ms
            self._ema_pairs = (list(self.ema_model.parameters()), list(self.net.parameters()))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pending: PointSet | None = None
        self.points = points
        self._perm = admission_order(len(points), self.config.order, self.config.seed)
        self.n_admitted = 0
        self.step = 0
        self.iteration = 0
        self.final_done = False
        self._planes: dict[int, object] = {}
        self._pooled: dict[tuple[int, int], object] = {}
        self._targets: dict[int, object] = {}
        self._active_cache = None
        self._final_left: int | None = None  # iterations left in the final phase (else None)
        # which admitted points (indices into `_active`) the last full-plane prediction got
        # wrong: crops are centred on them half of the time, and the polish phase only on them
        self._wrong = np.zeros(0, np.int64)
        self._polish_left: int | None = None  # polish iterations left (None: not polished yet)
        self._polishing = False
        self._proba_cache: tuple | None = None  # (iteration, plane, proba) of the last prediction
        # the prediction (K, H, W) per plane from before the newest points came: the soft
        # target of the consistency term (`TrainConfig.consistency_weight`)
        self._before: dict[int, object] = {}
        # the click forest's probabilities times its confidence (K, H, W) per plane, padded: the
        # soft target of the forest teacher (`TrainConfig.forest_teacher`)
        self._teacher: dict[int, object] = {}
        # no points have joined a network that has trained yet (a network to continue has)
        self._first_training = model is None
        self._forest_n = 0  # admitted points the click forest was last fitted on
        self._keep_before = False
        self._since = 0  # points from this index on came after that prediction
        self.history: list[dict] = []

    def _setup_forest(self, image: PreparedImage, model) -> None:
        """Give the input the click forest's channels (`TrainConfig.forest_trees`), unless a
        network to continue (``model``) was trained with the input it has."""
        cfg = self.config
        have = image.spec.forest
        if model is not None:
            if have is not None and have.classes != len(self.classes):
                raise InputError(
                    f"the network's click forest has {have.classes} classes, the points {len(self.classes)}"
                )
            return
        if cfg.forest_on not in ("colour", "always"):
            raise InputError(f"forest_on must be 'colour' or 'always', got {cfg.forest_on!r}")
        if cfg.forest_to not in ("head", "all"):
            raise InputError(f"forest_to must be 'head' or 'all', got {cfg.forest_to!r}")
        want = None
        colour = cfg.forest_on == "always" or image.colour_share() > COLOUR_SHARE
        if cfg.forest_trees > 0 and colour:
            from .forest_input import ForestSpec

            want = ForestSpec(classes=len(self.classes), trees=cfg.forest_trees, seed=cfg.seed)
        image.use_forest(want)

    def _refit_forest(self, final: bool = False, again: bool = False) -> None:
        """Refit the click forest on the admitted points when they grew by ``forest_growth``
        since the last fit (or, ``final``, by any; ``again``: in any case, as when admitted
        points were edited); the input planes follow."""
        if self.image.forest is None or self.n_admitted == 0:
            return
        n = self.n_admitted
        # not before 8 points: a forest on a handful says little, and each fit costs ~0.2 s
        due = n > self._forest_n if final else n >= max(self._forest_n * self.config.forest_growth, 8)
        if not (due or again):
            return
        z, yx, cls = self._active()
        if len(np.unique(cls)) < 2 and not again:
            return  # nothing to fit yet: try again at the next admission
        # after an edit that left one class, this fit leaves the forest unfitted (neutral
        # channels) rather than stale
        self.image.set_forest_out_of_bag(True)
        self.image.fit_forest(z, yx, cls)
        self._forest_n = n
        self._input_changed()

    def _forest_out_of_bag(self, on: bool) -> None:
        """Training reads the forest out of the bag at the clicks; once the final phase is
        over, the polishes and predictions read it in the bag, as a bundle does (out of the
        bag, the head polish bent the whole plane to flip the clicks the forest gets wrong
        there: docs/training.md, twenty-second session)."""
        if self.image.forest is not None and self.image.set_forest_out_of_bag(on):
            self._input_changed()

    def _input_changed(self) -> None:
        self._planes.clear()
        self._teacher.clear()
        self._pooled.clear()
        self._proba_cache = None

    # -- points (thread safe) ---------------------------------------------------------------
    def _check_points(self, points: PointSet) -> None:
        if len(points) == 0:
            return
        points.validate(self.image.spatial_shape, min_classes=1)
        unknown = sorted(set(points.classes.tolist()) - set(self.classes.tolist()))
        if unknown:
            raise InputError(
                f"point label(s) {unknown} are not among the network's classes "
                f"{self.classes.tolist()}; reset training to add a class"
            )

    def set_points(self, points: PointSet) -> None:
        """Replace the point set (moved, deleted, relabelled or new points).

        Takes effect between iterations. Points keep their acquisition order; points already
        admitted stay admitted, new ones join in order.
        """
        self._check_points(points)
        with self._lock:
            self._pending = points

    def add_points(self, coords, labels) -> None:
        """Append points (clicked after the existing ones)."""
        with self._lock:
            base = self._pending if self._pending is not None else self.points
        self.set_points(base.append(coords, labels))

    def stop(self) -> None:
        """Ask the generator to return after the current iteration."""
        self._stop.set()

    def has_pending_points(self) -> bool:
        """Whether `set_points` / `add_points` gave points that training has not taken yet."""
        with self._lock:
            return self._pending is not None

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        old, admitted = self.points, self.n_admitted
        old_n = len(old)
        self.points = pending
        n = len(pending)
        if self.config.order == "correct":
            self._perm = np.arange(n, dtype=np.int64)
            # points deleted before the admitted frontier shift it back
            self.n_admitted = min(self.n_admitted, n)
        else:
            self._perm = admission_order(n, self.config.order, self.config.seed)
            self.n_admitted = min(self.n_admitted, n)
        if n > old_n:
            self.final_done = False
            if self.iteration > 0:
                self._first_training = False
            # a network that has trained keeps its prediction away from the new points
            # ... for a few clicks at a time: a stroke or an oracle round (many points, all
            # where the prediction is wrong) must move it
            self._keep_before = (
                self.n_admitted > 0
                and self.config.consistency_weight > 0
                and n - old_n <= self.config.consistency_max_new
            )
            self._before.clear()
            self._since = old_n
        self._polish_left = None
        self._wrong = np.zeros(0, np.int64)
        self._targets.clear()
        self._active_cache = None
        k = admitted  # before deletions shifted the frontier back: the forest was fitted on these
        if (
            self.image.forest is not None
            and k
            and not (
                n >= k
                and np.array_equal(old.coords[:k], pending.coords[:k])
                and np.array_equal(old.labels[:k], pending.labels[:k])
            )
        ):
            # an admitted point was moved, relabelled or deleted (the last one too, as Remove
            # last point does): the forest must forget it now
            self._refit_forest(final=True, again=True)

    # -- data -------------------------------------------------------------------------------
    def _plane(self, z: int):
        if z not in self._planes:
            from .images import pad_to_multiple

            x, _ = pad_to_multiple(self.image.plane(z), self.spec.stride)
            self._planes[z] = plane_tensor(x, self.device)
        return self._planes[z]

    def _active(self):
        """(planes, yx, class index) of admitted points, and which were admitted last step."""
        if self._active_cache is None:
            idx = self._perm[: self.n_admitted]
            pix = self.points.pixel_coords()[idx]
            cls = np.searchsorted(self.classes, self.points.labels[idx])
            z = pix[:, 0] if self.image.is_3d else np.zeros(len(idx), np.int64)
            self._active_cache = (z, pix[:, -2:], cls)
        return self._active_cache

    def _pooled_plane(self, z: int, factor: int):
        """Plane ``z`` average-pooled by ``factor`` (C, H / f, W / f), channels-last, cached."""
        import torch.nn.functional as F

        key = (z, factor)
        if key not in self._pooled:
            pooled = F.avg_pool2d(stack_batch([self._plane(z)], self.device), factor)[0]
            self._pooled[key] = pooled
        return self._pooled[key]

    def _reads_points_only(self) -> bool:
        """Whether an iteration needs the network's logits at the labelled pixels only (a
        network with `forward_at` and no loss on the other pixels)."""
        return hasattr(self.net, "forward_at") and self.config.entropy_weight <= 0

    def _target(self, z: int):
        import torch

        if z not in self._targets:
            zs, yx, cls = self._active()
            h, w = self._plane(z).shape[-2:]
            t = torch.full((h, w), -1, dtype=torch.long)
            sel = zs == z
            if sel.any():
                t[torch.from_numpy(yx[sel, 0]), torch.from_numpy(yx[sel, 1])] = torch.from_numpy(cls[sel])
            self._targets[z] = t.to(self.device)
        return self._targets[z]

    def _class_weights(self):
        _, _, cls = self._active()
        counts = np.bincount(cls, minlength=len(self.classes))
        return class_weights(counts, self.config.class_balance, self.device)

    def _batch(self, newest: int):
        """A batch of crops (B, C, S, S), targets (B, S, S) around admitted points, and the
        soft targets (B, K, S, S) of the consistency term and of the forest teacher, each
        augmented as the crops (None where off)."""
        import torch

        zs, yx, _ = self._active()
        cfg = self.config
        n = len(zs)
        h, w = self._plane(int(zs[0])).shape[-2:]
        bs, size, width = crop_batch_shape(cfg, (h, w), self.spec.stride, self.spec.scale)
        full = (size, width) == (h, w)
        # half of the crops look at the newest points: they are what this step is about
        # (polishing: only the points the prediction gets wrong; otherwise half of the rest)
        wrong = self._wrong[self._wrong < n]
        picks = []
        for b in range(bs):
            if newest > 0 and b % 2 == 0:
                picks.append(n - 1 - int(self.rng.integers(newest)))
            elif len(wrong) and (self._polishing or self.rng.random() < 0.5):
                picks.append(int(wrong[self.rng.integers(len(wrong))]))
            else:
                picks.append(int(self.rng.integers(n)))
        xs, ts = [], []
        factor = getattr(self.net, "factor", 1)
        # the consistency term (when new points joined a trained network) and the forest
        # teacher (a first training): also in the final phase unless `final_consistency` is
        # off; never in the polishes, which must move the prediction at the clicks it contradicts
        keep = (self._final_left is None or self.config.final_consistency) and not self._polishing
        if (
            full
            and bs == 1
            and factor > 1
            and cfg.augment
            and not self._polishing
            and self._reads_points_only()
        ):
            # the network reads the plane pooled and at windows around the points only
            z = int(zs[picks[0]])
            soft = self._soft_targets(z, keep)
            maps = (self._target(z), *(m for m in soft if m is not None))
            x, tb, *out = self.augment.pooled(self._plane(z), self._pooled_plane(z, factor), factor, *maps)
            out = iter(m[None] for m in out)
            return (x, tb[None], *(None if m is None else next(out) for m in soft))
        softs = []
        for i in picks:
            z = int(zs[i])
            x = self._plane(z)
            soft = self._soft_targets(z, keep)
            maps = (self._target(z), *(m for m in soft if m is not None))
            if not full:
                y0 = int(np.clip(yx[i, 0] - self.rng.integers(size), 0, h - size))
                x0 = int(np.clip(yx[i, 1] - self.rng.integers(size), 0, w - size))
                x = x[:, y0 : y0 + size, x0 : x0 + size]
                maps = tuple(m[..., y0 : y0 + size, x0 : x0 + size] for m in maps)
            if cfg.augment and not self._polishing:
                x, *maps = self.augment(x, *maps)
            xs.append(x)
            ts.append(maps[0])
            out = iter(maps[1:])
            softs.append([None if m is None else next(out) for m in soft])
        # the same terms are on for every crop (they depend on the step, not on the crop)
        stacked = [None if s[0] is None else torch.stack(list(s)) for s in zip(*softs, strict=True)]
        return (stack_batch(xs, self.device), torch.stack(ts), *stacked)

    def _soft_targets(self, z: int, keep: bool) -> tuple:
        """(consistency target, forest teacher target) of plane ``z``, each (K, H, W) or None;
        both None unless ``keep`` (outside the polishes)."""
        if not keep:
            return None, None
        return self._prediction_before(z), self._teacher_target(z)

    def _teacher_weight(self) -> float:
        """The forest teacher's weight now: `forest_teacher` from `forest_teacher_from`
        admitted points on, fading linearly to 0 at `forest_teacher_until`; 0 once points have
        joined a trained network."""
        cfg = self.config
        off = cfg.forest_teacher <= 0 or cfg.forest_teacher_until <= 0
        if off or not self._first_training or self.n_admitted < cfg.forest_teacher_from:
            return 0.0
        return cfg.forest_teacher * max(0.0, 1.0 - self.n_admitted / cfg.forest_teacher_until)

    def _teacher_target(self, z: int):
        """The click forest's class probabilities of plane ``z`` times its confidence (its top
        probability rescaled from 1 / K..1 to 0..1), (K, H, W) padded with zeros to the
        stride; None when the teacher is off, has faded out, there is no fitted forest or it
        has not seen an admitted class yet."""
        forest = self.image.forest
        if self._teacher_weight() <= 0 or forest is None or not forest.fitted:
            return None
        _, _, cls = self._active()
        if not np.isin(cls, forest.clf.classes_).all():
            # a class admitted since the last fit has probability 0 everywhere: the teacher
            # would hold the network against it until the next fit
            return None
        if z not in self._teacher:
            proba = self.image.forest_probabilities(z)
            k = proba.shape[0]
            confidence = np.clip((proba.max(0) - 1.0 / k) / (1.0 - 1.0 / k), 0.0, 1.0)
            self._teacher[z] = self._padded(proba * confidence[None], z)
        return self._teacher[z]

    def _padded(self, maps: np.ndarray, z: int):
        """float32 (K, H, W) ``maps`` of plane ``z`` as a tensor on the device, padded with
        zeros (no term there) to the stride as the plane is."""
        import torch
        import torch.nn.functional as F

        h, w = self._plane(z).shape[-2:]
        t = torch.from_numpy(np.asarray(maps, np.float32))
        return F.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2])).to(self.device)

    def _anchor_pixels(self, shape):
        """``consistency_pixels`` random pixels (batch, row, col index tensors) of a batch of
        ``shape`` (B, H, W)."""
        import torch

        n, (b, h, w) = self.config.consistency_pixels, shape
        rows = torch.from_numpy(self.rng.integers(0, h, n)).to(self.device)
        cols = torch.from_numpy(self.rng.integers(0, w, n)).to(self.device)
        if b == 1:
            return torch.zeros_like(rows), rows, cols
        return torch.from_numpy(self.rng.integers(0, b, n)).to(self.device), rows, cols

    def _prediction_before(self, z: int):
        """The class probabilities (K, H, W) of plane ``z`` (padded with zeros to the
        stride) from before the newest points, or None when the consistency term is off or
        nothing had trained. The round's last prediction, when there was one."""
        if not self._keep_before:
            return None
        if z not in self._before:
            from scipy.ndimage import distance_transform_edt

            proba = self.predict_proba(z).astype(np.float32)  # a copy: the cache stays as it is
            pix = self.points.pixel_coords()[self._since :]
            if self.image.is_3d:
                pix = pix[pix[:, 0] == z]
            if len(pix):
                # the new points move the prediction around them: no term there
                far = np.ones(proba.shape[1:], bool)
                far[pix[:, -2], pix[:, -1]] = False
                proba[:, distance_transform_edt(far) <= self.config.consistency_reach] = 0
            self._before[z] = self._padded(proba, z)
        return self._before[z]

    # -- training ---------------------------------------------------------------------------
    def _lr(self) -> float:
        cfg = self.config
        warm = warmup_lr(cfg.lr, self.iteration, cfg.warmup_iters)
        if warm is not None:
            return warm
        if self._polishing:
            return cfg.lr * cfg.polish_lr
        if self._final_left is not None and cfg.final_iters > 0:
            # anneal over the final iterations: a constant lr leaves the prediction jittering
            frac = self._final_left / cfg.final_iters
            return cfg.lr * (cfg.final_lr_floor + (1.0 - cfg.final_lr_floor) * frac)
        return cfg.lr

    def _use_bf16(self) -> bool:
        return use_bf16(self.config.precision, self.device)

    def _iterate(self, newest: int) -> tuple[float, float]:
        import torch
        import torch.nn.functional as F

        xb, tb, before, teacher = self._batch(newest)
        set_lr(self.optimizer, self._lr())
        use_bf16 = self._use_bf16()
        mask = tb >= 0
        if not mask.any():
            self.iteration += 1
            return 0.0, 1.0
        where = mask.nonzero(as_tuple=True)
        soft_terms = (before is not None or teacher is not None) and self.config.consistency_pixels > 0
        anchors = self._anchor_pixels(tb.shape) if soft_terms else None
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            if self._reads_points_only():
                # the loss needs the labelled pixels only: no full-resolution head elsewhere
                if anchors is not None:
                    # plus the output at random pixels for the consistency term and the
                    # forest teacher, in one pass
                    both = [torch.cat([a, b]) for a, b in zip(where, anchors, strict=True)]
                    logits = self.net.forward_at(xb, *both)
                    logits, kept = logits[: len(where[0])], logits[len(where[0]) :]
                else:
                    logits = self.net.forward_at(xb, *where)
                full = None
            else:
                full = self.net(xb)
                logits = full.permute(0, 2, 3, 1)[where]
                if anchors is not None:
                    kept = full.permute(0, 2, 3, 1)[anchors]
        logits = logits.float()  # (N, K) at the labelled pixels
        target = tb[where]
        weights = self._class_weights()
        loss = F.cross_entropy(logits, target, weight=weights)
        if self.config.hard_weight > 0:
            # the points the network still gets wrong get extra weight: a mean over all points
            # lets a few hard clicks (the ones a user makes to correct it) stay wrong for long
            with torch.no_grad():
                hard = logits.argmax(1) != target
            if hard.any():
                ce = F.cross_entropy(logits, target, weight=weights, reduction="none")
                loss = loss + self.config.hard_weight * ce[hard].mean()
        if anchors is not None:
            ba, ya, xa = anchors
            lp = F.log_softmax(kept.float(), 1)
            # soft: (A, K); zeros on the padding (and, for the consistency term, near new points)
            if before is not None:
                # the prediction stays where no new point asks it to move: without this a far
                # region could flip for a round while the network fits clicks elsewhere
                loss = loss + self.config.consistency_weight * _soft_kl(before[ba, :, ya, xa], lp)
            if teacher is not None:
                # while the clicks are few, the forest's confident pixels teach the whole plane
                loss = loss + self._teacher_weight() * _soft_kl(teacher[ba, :, ya, xa], lp)
        if full is not None and self.config.entropy_weight > 0:
            # entropy minimisation on the unlabelled pixels too (Grandvalet & Bengio 2004): the
            # decision boundary moves away from dense regions of unlabelled pixels (bright
            # background, halos) towards edges; off at first, while the points alone shape it
            lp = F.log_softmax(full.float(), 1)
            ramp = min(1.0, self.iteration / max(self.config.entropy_ramp_iters, 1))
            loss = loss + self.config.entropy_weight * ramp * -(lp.exp() * lp).sum(1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.ema_model is not None:
            with torch.no_grad():
                torch._foreach_lerp_(*self._ema_pairs, 1.0 - self.config.ema_decay)
        self.iteration += 1
        with torch.no_grad():
            acc = (logits.argmax(1) == target).float().mean().item()
        return float(loss.item()), acc

    def run(self) -> Iterator[TrainUpdate]:
        """Train; yields a TrainUpdate after every iteration.

        Returns when every point has been admitted and trained (plus ``final_iters``), unless
        ``wait_for_points``; or when `stop` was called. Call again after adding points to
        continue from the current weights.
        """
        cfg = self.config
        self._stop.clear()
        t0 = time.perf_counter()
        last_pred = idle_end = t0
        it0 = self.iteration
        steps_since_pred = 0
        last_share = t0
        while not self._stop.is_set():
            self._apply_pending()
            if time.perf_counter() - last_share > 3.0:
                # another training may have started or ended on this machine
                rebalance_threads()
                last_share = time.perf_counter()
            n = len(self.points)
            self._polishing = False
            if self._final_left == 0 and self.n_admitted >= n:
                # the final phase is over: the polishes and the predictions from here on read
                # the forest in the bag at the clicks, as a bundle does
                self._forest_out_of_bag(False)
            if self.n_admitted < n:
                self._final_left = None
                self._polish_left = None
                k = next_step_size(self.n_admitted, cfg.points_per_step, cfg.step_growth)
                if cfg.order == "entire":
                    k = n
                newest = min(k, n - self.n_admitted)
                self.n_admitted += newest
                self._targets.clear()
                self._active_cache = None
                self._forest_out_of_bag(True)
                self._refit_forest()
                budget, min_iters = cfg.iters_per_step, cfg.min_iters_per_step
                if cfg.order == "entire":
                    # the same total budget as the stepped orders would get
                    from .schedule import step_sizes

                    steps = len(step_sizes(n, cfg.points_per_step, cfg.step_growth))
                    budget = min_iters = steps * cfg.iters_per_step
                self.step += 1
                steps_since_pred += 1
            elif not self.final_done and n > 0 and cfg.final_iters > 0:
                newest, budget, min_iters = 0, cfg.final_iters, cfg.final_iters
                self._refit_forest(final=True)
                self.final_done = True
                self._final_left = cfg.final_iters
                self._polish_left = cfg.polish_iters
            elif (
                self._polish_left is not None
                and self._polish_left > 0
                and self._has_head()
                and cfg.head_polish_iters > 0
            ):
                # cheap: only the full-resolution head trains, on windows around the points
                self._polish_left = 0
                self._polish_head()
                continue
            elif (
                self._polish_left is not None
                and self._polish_left > 0
                and self.honoured() < cfg.honour_target
            ):
                # a prediction that contradicts the user's own click is a bug: train on the
                # points it gets wrong until it honours (nearly) all of them, within a budget
                newest, self._polishing = 0, True
                budget = min_iters = min(10, self._polish_left)
                self._polish_left -= budget
            else:
                self.final_done = True
                if cfg.wait_for_points and not self._stop.is_set():
                    time.sleep(0.05)
                    yield self._update(t0, it0, 0.0, 1.0, waiting=True)
                    # idle time is not training time: the timed prediction comes
                    # predict_every_s after training resumes, not at its first iteration
                    # (which would show the weights the caller showed on catching up)
                    idle_end = time.perf_counter()
                    continue
                break
            if self.n_admitted == 0:
                continue
            done_iters = 0
            while done_iters < budget and not self._stop.is_set():
                loss, acc = self._iterate(newest)
                done_iters += 1
                if self._final_left is not None:
                    self._final_left = max(self._final_left - 1, 0)
                self.history.append(
                    {
                        "iteration": self.iteration,
                        "step": self.step,
                        "loss": loss,
                        "n_active": self.n_admitted,
                    }
                )
                pred = None
                now = time.perf_counter()
                due_t = (
                    cfg.predict_every_s is not None and now - max(last_pred, idle_end) >= cfg.predict_every_s
                )
                step_end = done_iters >= budget or (done_iters >= min_iters and acc >= cfg.fit_threshold)
                due_s = (
                    cfg.predict_every_steps is not None
                    and step_end
                    and steps_since_pred >= cfg.predict_every_steps
                )
                if due_t or due_s:
                    pred = self.predict(cfg.predict_plane)
                    last_pred = time.perf_counter()
                    steps_since_pred = 0
                yield self._update(t0, it0, loss, acc, prediction=pred)
                if step_end:
                    break
                with self._lock:
                    if self._pending is not None:
                        break  # new or edited points: admit them without waiting
        if not self._stop.is_set():
            yield self._update(t0, it0, 0.0, 1.0, done=True)

    def _has_head(self) -> bool:
        return getattr(self.inference_model(), "refine", None) is not None

    def _polish_head(self) -> None:
        """The head polish; below ``honour_floor`` after it, the whole network trains on the
        points it gets wrong (up to ``net_polish_iters``), then the head polishes once more."""
        from .head_polish import polish_head

        def head() -> None:
            polish_head(self)
            self._proba_cache = None  # the head changed under the cached prediction
            self._wrong = np.zeros(0, np.int64)

        head()
        cfg = self.config
        if cfg.net_polish_iters <= 0 or self.honoured() >= cfg.honour_floor:
            return
        # the head alone could not: its 7 x 7 window cannot move a boundary the body draws
        # several pixels off (docs/training.md, twenty-first session)
        self._polishing = True
        try:
            for i in range(cfg.net_polish_iters):
                if self.stopped or self.has_pending_points():
                    return
                self._iterate(0)
                if (i + 1) % 10 == 0 and self.honoured() >= cfg.honour_target:
                    break
        finally:
            self._polishing = False
        head()

    def _update(self, t0, it0, loss, acc, prediction=None, waiting=False, done=False) -> TrainUpdate:
        secs = time.perf_counter() - t0
        return TrainUpdate(
            step=self.step,
            iteration=self.iteration,
            loss=loss,
            n_active=self.n_admitted,
            n_points=len(self.points),
            seconds=secs,
            iters_per_second=(self.iteration - it0) / secs if secs > 0 else 0.0,
            fit_accuracy=acc,
            device=str(self.device),
            waiting=waiting,
            done=done,
            prediction=prediction,
            plane=self.config.predict_plane if prediction is not None else None,
        )

    def train_all(self) -> "SparseTrainer":
        """Run to the end (no GUI): consume `run`."""
        for _ in self.run():
            pass
        return self

    # -- inference --------------------------------------------------------------------------
    def predict_proba(self, z: int = 0) -> np.ndarray:
        """float32 (K, H, W) class probabilities of plane ``z``.

        Also records which admitted points of that plane the prediction gets wrong (the
        trainer then trains harder on them). Computed once per plane and iteration.
        """
        from .predict import fits_one_tile, predict_proba, predict_proba_padded

        c = self._proba_cache
        if c is not None and c[0] == self.iteration and c[1] == z:
            return c[2]
        shape = self.image.spatial_shape[-2:]
        if z in self._planes and fits_one_tile(shape, self.spec.stride):
            # the plane as training holds it (padded, laid out): ~15 ms less per 512² call;
            # other planes of a stack are not cached for a prediction (memory)
            x = stack_batch([self._planes[z]], self.device)
            proba = predict_proba_padded(self.inference_model(), x, shape, self.device, self.config.precision)
        else:
            proba = predict_proba(
                self.inference_model(),
                self.image.plane(z),
                self.device,
                stride=self.spec.stride,
                precision=self.config.precision,
            )
        self._proba_cache = (self.iteration, z, proba)
        self._note_prediction(z, proba)
        return proba

    def _note_prediction(self, z: int, proba: np.ndarray) -> None:
        if self.n_admitted == 0:
            return
        zs, yx, cls = self._active()
        sel = np.flatnonzero(zs == z)
        wrong = sel[proba.argmax(0)[yx[sel, 0], yx[sel, 1]] != cls[sel]]
        others = self._wrong[self._wrong < len(zs)]
        others = others[zs[others] != z]  # what earlier predictions said of other planes
        self._wrong = np.union1d(others, wrong).astype(np.int64)

    def honoured(self) -> float:
        """Share of the admitted points whose predicted class is their own label (predicts
        every plane that holds admitted points)."""
        if self.n_admitted == 0:
            return 1.0
        zs, _, _ = self._active()
        for z in np.unique(zs):
            self.predict_proba(int(z))
        return 1.0 - len(self._wrong) / len(zs)

    def inference_model(self):
        """The network predictions and bundles use (``model``: the EMA if enabled, else ``net``)."""
        return self.model

    def predict(self, z: int | None = None) -> np.ndarray:
        """Label values (H, W) of plane ``z``; with z None a 3D stack gives (Z, H, W)."""
        if z is None and self.image.is_3d:
            return np.stack([self.predict(i) for i in range(self.image.n_planes)])
        proba = self.predict_proba(z or 0)
        return self.classes[np.argmax(proba, 0)]


def _soft_kl(soft, log_proba):
    """Mean over pixels of sum_k soft * (log soft - log_proba): the KL divergence from the soft
    targets ``soft`` (A, K; rows may sum to less than 1, a weight; zero rows: no term) to the
    output's log-probabilities ``log_proba`` (A, K)."""
    return (soft * (soft.clamp_min(1e-6).log() - log_proba)).sum(1).mean()
