"""Polishing the full-resolution head of a reduced-resolution network on the clicked points.

A network that runs at a half or a third of the resolution (`models.ScaledInput`) draws its
class boundaries a pixel or two off, and clicks on a boundary (most of an oracle's late
clicks, a user's corrections along an edge) end up on the wrong side. Its full-resolution head
sees a small window (7 x 7 with three layers) of the input and of the upsampled logits, so it
can move a boundary locally. Once the trainer has admitted every point and run its final
iterations, `polish_head` trains the head alone (the U-Net frozen, its logits computed once)
on the admitted points, while a KL term keeps the prediction at anchor pixels near the
predicted boundaries where it was: fitting the clicks must not move every other boundary of
the image with them (docs/training.md, sixth session). Next to a click, though, the anchors
hold the very boundary the click asks to move: a polish stuck far from honouring the clicks
starts over with no anchor within the head's reach of a click (eleventh session). Each step
evaluates the head at every click but at a share of the anchors only, a different share in
turn: a step over all of them cost ~3x more, for a term that only has to hold the prediction
in place (eighteenth session).
"""

from __future__ import annotations

import numpy as np

from .sparse_head import SparseHead
from .training_kit import stack_batch

# polish steps without a new best share of honoured points before the lr halves
PLATEAU_STEPS = 100
# past head_polish_iters steps, honouring fewer than RESTART_BELOW of the clicks and gaining
# less than RESTART_GAIN over the last PLATEAU_STEPS steps, or fewer than the honour floor and
# gaining nothing over twice as many, the polish starts over with no anchors near the clicks;
# a second attempt that gains nothing over twice PLATEAU_STEPS ends the polish
# (docs/training.md, eleventh and twelfth sessions)
RESTART_BELOW = 0.97
RESTART_GAIN = 0.01


def polish_head(trainer) -> tuple[list[float], float]:
    """Train ``trainer``'s inference network's head (in place) on the admitted points until
    the prediction honours ``config.honour_target`` of them: at most
    ``config.head_polish_iters`` Adam steps at ``config.head_polish_lr`` (halved after
    PLATEAU_STEPS steps without a new best), and on up to ``config.head_polish_max_iters``
    while it honours fewer than ``config.honour_floor``; the anchors:
    ``config.head_polish_anchors`` pixels per plane, weight ``config.head_polish_keep``, each
    step holding a 1/``config.head_polish_anchor_batches`` share of them (in turn). The
    head ends in the state that honoured the most points, and is copied into the training
    network as well. A polish stuck far from the target, or below the floor and no longer
    gaining, starts over once, its anchors clear of the clicks (RESTART_BELOW, RESTART_GAIN);
    the second attempt ends once it no longer gains either.
    Returns the share of points honoured before each step, and by the head it ends with (all
    counted on fp32 logits, a point honoured when its class leads by ``config.honour_margin``)."""
    import torch
    import torch.nn.functional as F

    cfg = trainer.config
    model = trainer.inference_model()
    batches, target = _polish_inputs(trainer, model, 0)
    n_points = len(target)
    weights = trainer._class_weights()
    params = list(model.refine.parameters())
    frozen = [not p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=cfg.head_polish_lr)
    best = (-1.0, None)  # (honoured, head state): the polish ends in its best state
    start = _head_state(model)
    trace: list[float] = []
    since_best, current = 0, None  # current: honoured share of the head as it is (None: not counted)
    bests: list[float] = []  # the best share so far, after each step
    restarted = False
    attempt, attempt_flat = -1.0, 0  # the best share of the current attempt, steps since it rose
    try:
        for step in range(max(cfg.head_polish_iters, cfg.head_polish_max_iters)):
            if trainer.stopped or trainer.has_pending_points():
                break  # Stop or a new click in the widget: answer within one step
            # the clicks in every step, a different share of the anchors in each (cycled)
            base, head, before = batches[step % len(batches)]
            logits = base + head()
            points, rest = logits[:n_points], logits[n_points:]
            right = _leads(points, target, cfg.honour_margin)
            wrong = ~right
            honoured = current = right.float().mean().item()  # counted as `final` below
            trace.append(honoured)
            if honoured > best[0]:
                best, since_best = (honoured, _head_state(model)), 0
            else:
                since_best += 1
            bests.append(best[0])
            attempt, attempt_flat = (honoured, 0) if honoured > attempt else (attempt, attempt_flat + 1)
            if honoured >= cfg.honour_target:
                break
            if since_best >= PLATEAU_STEPS:
                # Adam at a fixed lr ends up hopping between states a few clicks apart
                for group in optimizer.param_groups:
                    group["lr"] *= 0.5
                since_best = 0
            if step >= cfg.head_polish_iters and best[0] >= cfg.honour_floor:
                break  # past the normal budget, only a click-contradicting result trains on
            # stuck (past the normal budget, i.e. below the floor): far below it and slow, or
            # no better through two halvings of the lr (one at 0.985 spent its last 800 steps
            # there; over one plateau, one that would reach the floor later was cut off)
            slow = best[0] < RESTART_BELOW and best[0] - bests[max(0, step - PLATEAU_STEPS)] < RESTART_GAIN
            flat = best[0] <= bests[max(0, step - 2 * PLATEAU_STEPS)]
            stuck = step >= cfg.head_polish_iters and (slow or flat)
            if restarted and attempt_flat >= 2 * PLATEAU_STEPS:
                # the second attempt no better through two halvings of the lr either: the rest
                # of the budget would be time for nothing (deepcell_fluo/0 at 0.1 %: 700 steps)
                break
            if stuck and not restarted and len(before):
                # stuck below the floor: the anchors may hold the very
                # boundaries the clicks move (1-px-deep boundary clicks with an other-class
                # click a few px away). Start over from the head before the polish, with no
                # anchor within the head's reach of a click: there the clicks alone decide.
                # The best state of either attempt is kept
                restarted = True
                model.refine.load_state_dict(start)
                batches, target = _polish_inputs(trainer, model, model.reach)
                optimizer = torch.optim.Adam(params, lr=cfg.head_polish_lr)
                since_best, current = 0, None
                attempt, attempt_flat = -1.0, 0
                continue
            # every point (the right ones must stay right), the wrong ones once more
            ce = F.cross_entropy(points, target, weight=weights, reduction="none")
            loss = ce.mean() + ce[wrong].mean()
            if len(rest):
                now = F.log_softmax(rest, 1)
                loss = loss + cfg.head_polish_keep * (before.exp() * (before - now)).sum(1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            current = None
    finally:
        for p, was_frozen in zip(params, frozen, strict=True):
            p.requires_grad_(not was_frozen)
    if best[1] is not None and (current is None or best[0] > current):
        model.refine.load_state_dict(best[1])
    with torch.no_grad():
        base, head, _ = batches[0]
        final = _leads(base[:n_points] + head()[:n_points], target, cfg.honour_margin)
    if model is not trainer.net:
        trainer.net.refine.load_state_dict(model.refine.state_dict())
    return trace, final.float().mean().item()


def _polish_inputs(trainer, model, clearance: int):
    """What the head polish trains on, for ``model`` (the inference network, its head as it
    is now): a list of ``config.head_polish_anchor_batches`` (base, head, before), each over
    the admitted points and its share of the anchors of every plane (none within
    ``clearance`` px of a point): the upsampled logits (n points + n anchors, K) there, points
    first; the head at those pixels (`SparseHead`); the log-softmax at its anchors
    (n anchors, K). And the points' class indices (n points,)."""
    import torch
    import torch.nn.functional as F

    cfg, device = trainer.config, trainer.device
    zs, yx, cls = trainer._active()
    planes = np.unique(zs)
    per_plane = cfg.head_polish_anchors // len(planes) if cfg.head_polish_keep > 0 else 0
    n_batches = max(1, int(cfg.head_polish_anchor_batches)) if per_plane else 1
    # per batch: per plane (x, low, rows, cols), points first; the upsampled logits there
    items = [[] for _ in range(n_batches)]
    bases = [[] for _ in range(n_batches)]
    counts = [[] for _ in range(n_batches)]
    targets = []
    with torch.no_grad():
        for z in planes:
            sel = np.flatnonzero(zs == z)
            x = stack_batch([trainer._plane(int(z))], device)
            low = model.body(F.avg_pool2d(x, model.factor)).float()
            rows, cols = yx[sel, 0], yx[sel, 1]
            targets.append(torch.from_numpy(cls[sel]).to(device))
            anchors = np.zeros((0, 2), np.int64)
            if per_plane:
                shape = trainer.image.spatial_shape[-2:]
                anchors = boundary_anchors(
                    model, x, low, shape, per_plane, trainer.rng, (rows, cols), clearance
                )
            # which batch each anchor is in (a random share: boundary and random anchors mixed)
            share = trainer.rng.permutation(len(anchors)) % n_batches if n_batches > 1 else None
            for b in range(n_batches):
                mine = anchors if share is None else anchors[share == b]
                r_np = np.concatenate([rows, mine[:, 0]])
                c_np = np.concatenate([cols, mine[:, 1]])
                r, c = torch.from_numpy(r_np).to(device), torch.from_numpy(c_np).to(device)
                bases[b].append(
                    model.pixel_inputs(x.float(), low, torch.zeros_like(r), r, c)[:, -low.shape[1] :]
                )
                items[b].append((x, low, r_np, c_np))
                counts[b].append((len(sel), len(mine)))
        batches = []
        for b in range(n_batches):
            # points first, then the anchors
            starts = np.cumsum([0] + [k + a for k, a in counts[b]])
            order = np.concatenate(
                [start + np.arange(k) for start, (k, _) in zip(starts, counts[b])]
                + [start + k + np.arange(a) for start, (k, a) in zip(starts, counts[b])]
            ).astype(np.int64)
            head = SparseHead(model, items[b], order)
            base = torch.cat(bases[b])[torch.from_numpy(order).to(device)]
            n_points = sum(k for k, _ in counts[b])
            before = F.log_softmax(base[n_points:] + head()[n_points:], 1)
            batches.append((base, head, before))
    return batches, torch.cat(targets)


def _leads(logits, target, margin: float):
    """bool (n,): whether the logit of each point's own class (``target``, int64 (n,)) leads
    every other class's in ``logits`` (n, K) by more than ``margin``. A point the polish
    honours by a hair (fp32) can flip in the bf16 prediction: on acdc_mri/1 five of its
    786 clicks did, each with a lead below 0.02 (docs/training.md, thirteenth session)."""
    import torch.nn.functional as F

    own = logits.gather(1, target[:, None])[:, 0]
    others = logits.masked_fill(F.one_hot(target, logits.shape[1]).bool(), float("-inf"))
    return own - others.max(1).values > margin


def _head_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.refine.state_dict().items()}


def boundary_anchors(
    model, x, low, shape, n: int, rng: np.random.Generator, clicks=None, clearance: int = 0
) -> np.ndarray:
    """int64 (n, 2) yx anchor pixels of the plane ``x`` (1, C, H', W', padded) whose image
    part is ``shape`` (H, W), given the network's low-resolution logits ``low``: three quarters
    within 2 px of a class boundary of the current prediction (where a change of the head
    changes labels), a quarter anywhere. With ``clearance`` > 0, none within ``clearance`` px
    (Chebyshev) of a pixel of ``clicks`` (rows, cols int arrays), and fewer than ``n`` when
    the clicks cover the plane."""
    import torch
    import torch.nn.functional as F

    height, width = shape
    pred = model.from_low(x.float(), low).argmax(1, keepdim=True).float()[..., :height, :width]
    edge = (F.max_pool2d(pred, 5, 1, 2) != -F.max_pool2d(-pred, 5, 1, 2))[0, 0].cpu().numpy()
    free = None
    if clicks is not None and clearance > 0:
        near = torch.zeros((1, 1, height, width))
        near[0, 0, torch.from_numpy(clicks[0]), torch.from_numpy(clicks[1])] = 1
        free = F.max_pool2d(near, 2 * clearance + 1, 1, clearance)[0, 0].numpy() == 0
    band = np.argwhere(edge if free is None else edge & free)
    n_band = min(len(band), 3 * n // 4)
    picks = [band[rng.choice(len(band), n_band, replace=False)]] if n_band else []
    if free is None:
        picks.append(rng.integers(0, (height, width), (n - n_band, 2)))
    else:
        anywhere = np.argwhere(free)
        picks.append(anywhere[rng.choice(len(anywhere), min(n - n_band, len(anywhere)), replace=False)])
    return np.concatenate(picks).astype(np.int64)
