"""Where to click next: uncertainty scores + spread-out suggestions (label-free acquisition).

The napari widget's "Suggest points" button and the sampler experiments (``oracle.samplers``)
both call `suggest_points`. Scores come from `core.predict.uncertainty` ('entropy', 'margin',
'least_confidence'); diversity follows PixelPick: take the 5 % most uncertain free pixels,
then spread the picks over them by farthest-point sampling, seeded with the most uncertain
pixel and pushed away from already-labelled pixels.

Coordinates are int64 (n, 2) ``y, x``; no duplicates; never an excluded pixel.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError
from .predict import uncertainty

ACQUISITIONS = ("entropy", "margin", "least_confidence")


def as_rng(rng) -> np.random.Generator:
    """``rng`` itself if it is a Generator, else a new one seeded with it (int or None)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def excluded_mask(shape, exclude) -> np.ndarray:
    """bool (H, W) mask of the pixels never to pick.

    shape: (H, W). exclude: None, a bool (H, W) mask (copied), or (N, >=2) coordinates whose
    last two columns are y, x (rounded; those outside the grid are ignored).
    InputError for a bool mask of another shape.
    """
    out = np.zeros(shape, bool)
    if exclude is None:
        return out
    ex = np.asarray(exclude)
    if ex.dtype == bool:
        if ex.shape != tuple(shape):
            raise InputError(f"exclude mask shape {ex.shape} differs from {tuple(shape)}")
        return ex.copy()
    if ex.size:
        ex = np.rint(ex.reshape(-1, ex.shape[-1])[:, -2:]).astype(np.int64)
        ok = (ex[:, 0] >= 0) & (ex[:, 0] < shape[0]) & (ex[:, 1] >= 0) & (ex[:, 1] < shape[1])
        out[ex[ok, 0], ex[ok, 1]] = True
    return out


def suggest_points(
    proba: np.ndarray, n: int, kind: str = "margin", exclude=None, rng=None, top_fraction: float = 0.05
) -> np.ndarray:
    """Where to click next: n uncertain, spread-out pixels.

    proba: float32 (K, H, W) class probabilities (softmax). kind: 'entropy', 'margin' or
    'least_confidence'. exclude: pixels never to suggest (bool (H, W) mask or (N, 2) yx, e.g.
    the points already clicked; they also repel suggestions). Returns int64 (m, 2) yx,
    m = min(n, free pixels), no duplicates.
    PixelPick's diversity heuristic: the ``top_fraction`` most uncertain free pixels are the
    candidates; picks are spread over them by farthest-point sampling, starting from the most
    uncertain candidate.
    """
    proba = np.asarray(proba, np.float32)
    if proba.ndim != 3 or proba.shape[0] < 2:
        raise InputError(f"proba must be (K, H, W) with K >= 2, got shape {proba.shape}")
    if kind not in ACQUISITIONS:
        raise InputError(f"unknown acquisition '{kind}'; choose one of {', '.join(ACQUISITIONS)}")
    rng = as_rng(rng)
    shape = proba.shape[1:]
    taken = excluded_mask(shape, exclude)
    u = uncertainty(proba, kind).ravel().astype(np.float64)
    free = np.flatnonzero(~taken.ravel())
    if n <= 0 or len(free) == 0:
        return np.zeros((0, 2), np.int64)
    n_cand = min(len(free), max(n, int(math.ceil(top_fraction * u.size))))
    # tiny random jitter breaks ties (e.g. an untrained network: uncertainty equal everywhere)
    score = u[free] + rng.uniform(0, 1e-6, len(free))
    cand = free[np.argpartition(-score, n_cand - 1)[:n_cand]]
    cand = cand[np.argsort(-u[cand], kind="stable")]
    yx = np.stack(np.unravel_index(cand, shape), axis=1).astype(np.float64)
    d = np.full(len(cand), np.inf)
    ex = np.argwhere(taken)
    if len(ex):
        from scipy.spatial import cKDTree

        d = cKDTree(ex).query(yx, k=1)[0]
    chosen = []
    i = 0 if not len(ex) else int(np.argmax(d + 1e-3 * u[cand]))
    for _ in range(min(n, len(cand))):
        chosen.append(i)
        d = np.minimum(d, np.hypot(yx[:, 0] - yx[i, 0], yx[:, 1] - yx[i, 1]))
        d[i] = -1
        i = int(np.argmax(d))
    return yx[chosen].astype(np.int64)
