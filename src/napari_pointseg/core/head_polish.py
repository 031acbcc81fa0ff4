"""Polishing the full-resolution head of a half-resolution network on the clicked points.

A network that runs at half resolution (`models.ScaledInput`) draws its class boundaries a
pixel or two off, and clicks on a boundary (most of an oracle's late clicks, a user's
corrections along an edge) end up on the wrong side. Its full-resolution head sees a 5 x 5
window of the input and of the upsampled logits, so it can move a boundary locally. Once the
trainer has admitted every point and run its final iterations, `polish_head` trains the head
alone (the U-Net frozen, its logits computed once) on the admitted points, while a KL term
keeps the prediction at anchor pixels near the predicted boundaries where it was: fitting the
clicks must not move every other boundary of the image with them (docs/training.md, sixth
session).
"""

from __future__ import annotations

import numpy as np

from .training_kit import stack_batch


def polish_head(trainer) -> None:
    """Train ``trainer``'s inference network's head (in place) on the admitted points until
    the prediction honours ``config.honour_target`` of them: at most
    ``config.head_polish_iters`` Adam steps at ``config.head_polish_lr``, and on up to
    ``config.head_polish_max_iters`` while it honours fewer than ``config.honour_floor``; the
    anchors: ``config.head_polish_anchors`` pixels per plane, weight ``config.head_polish_keep``.
    The polished head is copied into the training network as well."""
    import torch
    import torch.nn.functional as F

    cfg = trainer.config
    model = trainer.inference_model()
    device = trainer.device
    zs, yx, cls = trainer._active()
    planes = np.unique(zs)
    per_plane = cfg.head_polish_anchors // len(planes) if cfg.head_polish_keep > 0 else 0
    inputs, targets, n_points = [], [], 0
    with torch.no_grad():
        for z in planes:
            sel = np.flatnonzero(zs == z)
            x = stack_batch([trainer._plane(int(z))], device)
            low = model.net(F.avg_pool2d(x, model.factor)).float()
            rows, cols = yx[sel, 0], yx[sel, 1]
            n_points += len(sel)
            targets.append(torch.from_numpy(cls[sel]).to(device))
            if per_plane:
                anchors = boundary_anchors(
                    model, x, low, trainer.image.spatial_shape[-2:], per_plane, trainer.rng
                )
                rows, cols = np.concatenate([rows, anchors[:, 0]]), np.concatenate([cols, anchors[:, 1]])
            index = [
                torch.zeros(len(rows), dtype=torch.long, device=device),
                torch.from_numpy(rows).to(device),
                torch.from_numpy(cols).to(device),
            ]
            inputs.append((len(sel), model.point_inputs(x, low, *index)))
        # points first, then the anchors
        parts = [(b[:k], f[:k], i[:k]) for k, (b, f, i) in inputs]
        parts += [(b[k:], f[k:], i[k:]) for k, (b, f, i) in inputs]
        base, feat, inside = (torch.cat(part) for part in zip(*parts, strict=True))
        target = torch.cat(targets)
        before = F.log_softmax(base[n_points:] + model.head_at(feat[n_points:], inside[n_points:]), 1)
    weights = trainer._class_weights()
    params = list(model.refine.parameters())
    frozen = [not p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=cfg.head_polish_lr)
    try:
        for step in range(max(cfg.head_polish_iters, cfg.head_polish_max_iters)):
            if trainer.stopped or trainer.has_pending_points():
                break  # Stop or a new click in the widget: answer within one step
            logits = base + model.head_at(feat, inside)
            points, rest = logits[:n_points], logits[n_points:]
            wrong = points.argmax(1) != target
            honoured = 1.0 - wrong.float().mean().item()
            if honoured >= cfg.honour_target:
                break
            if step >= cfg.head_polish_iters and honoured >= cfg.honour_floor:
                break  # past the normal budget, only a click-contradicting result trains on
            # every point (the right ones must stay right), the wrong ones once more
            ce = F.cross_entropy(points, target, weight=weights, reduction="none")
            loss = ce.mean() + ce[wrong].mean()
            if len(rest):
                now = F.log_softmax(rest, 1)
                loss = loss + cfg.head_polish_keep * (before.exp() * (before - now)).sum(1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    finally:
        for p, was_frozen in zip(params, frozen, strict=True):
            p.requires_grad_(not was_frozen)
    if model is not trainer.net:
        trainer.net.refine.load_state_dict(model.refine.state_dict())


def boundary_anchors(model, x, low, shape, n: int, rng: np.random.Generator) -> np.ndarray:
    """int64 (n, 2) yx anchor pixels of the plane ``x`` (1, C, H', W', padded) whose image
    part is ``shape`` (H, W), given the network's low-resolution logits ``low``: three quarters
    within 2 px of a class boundary of the current prediction (where a change of the head
    changes labels), a quarter anywhere."""
    import torch.nn.functional as F

    height, width = shape
    pred = model.from_low(x.float(), low).argmax(1, keepdim=True).float()[..., :height, :width]
    edge = (F.max_pool2d(pred, 5, 1, 2) != -F.max_pool2d(-pred, 5, 1, 2))[0, 0]
    band = np.argwhere(edge.cpu().numpy())
    n_band = min(len(band), 3 * n // 4)
    picks = [band[rng.choice(len(band), n_band, replace=False)]] if n_band else []
    picks.append(rng.integers(0, (height, width), (n - n_band, 2)))
    return np.concatenate(picks).astype(np.int64)
