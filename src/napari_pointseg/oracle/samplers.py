"""Point samplers to compare the oracle with (paper section 6, PixelPick section C/E).

Label-based heuristics choose WHERE to click without a network (the label at each point is
then read from the mask): ``random``, ``uniform`` (one point per grid tile), ``edge`` (mask
boundaries), ``slic`` (one point per SLIC superpixel), ``geodesic`` (iterative farthest point
in a geodesic distance on the image gradient).

Label-free acquisition scores pixels by the network's uncertainty (``entropy``, ``margin``,
``least_confidence``) and keeps them diverse with PixelPick's heuristic: take the 5 % most
uncertain unlabelled pixels, then spread the picks over them (farthest-point sampling, seeded
with the most uncertain pixel and pushed away from already-labelled pixels). That part,
`core.suggest.suggest_points`, is what the napari widget's "Suggest points" button calls;
`active_points` here runs it in the oracle's loop with a network for the experiments.

All coordinates are int64 (n, 2) ``y, x``; no duplicates; never an excluded pixel.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.checks import plane_image
from ..core.errors import InputError
from ..core.suggest import ACQUISITIONS, as_rng, excluded_mask, suggest_points

LABEL_BASED = ("random", "uniform", "edge", "slic", "geodesic")


def _pick_from(candidates: np.ndarray, n: int, rng, shape) -> np.ndarray:
    """n distinct flat indices from ``candidates`` (uniformly) as (m, 2) yx, m <= n."""
    candidates = np.unique(candidates)
    m = min(n, len(candidates))
    if m <= 0:
        return np.zeros((0, 2), np.int64)
    picks = rng.choice(candidates, size=m, replace=False)
    return np.stack(np.unravel_index(picks, shape), axis=1).astype(np.int64)


def _fill(points: np.ndarray, n: int, shape, taken: np.ndarray, rng) -> np.ndarray:
    """Top up to n points with random free pixels (a heuristic can yield fewer than asked)."""
    if len(points) >= n:
        return points[:n]
    taken = taken.copy()
    if len(points):
        taken[points[:, 0], points[:, 1]] = True
    more = _pick_from(np.flatnonzero(~taken.ravel()), n - len(points), rng, shape)
    return np.concatenate([points.reshape(-1, 2), more]).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# label-based heuristics
# ---------------------------------------------------------------------------------------------


def random_points(shape, n: int, rng=None, exclude=None) -> np.ndarray:
    """n distinct random pixels of a (H, W) grid."""
    rng = as_rng(rng)
    taken = excluded_mask(shape, exclude)
    return _pick_from(np.flatnonzero(~taken.ravel()), n, rng, shape)


def grid_points(shape, n: int, rng=None, exclude=None) -> np.ndarray:
    """One random pixel in each tile of a grid of about n tiles (paper: "Uniform")."""
    rng = as_rng(rng)
    h, w = shape
    taken = excluded_mask(shape, exclude)
    ny = max(1, int(round(math.sqrt(n * h / w))))
    nx = max(1, int(math.ceil(n / ny)))
    ys = np.linspace(0, h, ny + 1).astype(int)
    xs = np.linspace(0, w, nx + 1).astype(int)
    pts = []
    for i in range(ny):
        for j in range(nx):
            free = np.argwhere(~taken[ys[i] : ys[i + 1], xs[j] : xs[j + 1]])
            if len(free):
                y, x = free[rng.integers(len(free))]
                pts.append((ys[i] + y, xs[j] + x))
    pts = np.asarray(pts, np.int64).reshape(-1, 2)
    if len(pts) > n:  # more tiles than points: a random subset of tiles
        pts = pts[rng.choice(len(pts), n, replace=False)]
    return _fill(pts, n, shape, taken, rng)


def edge_points(mask: np.ndarray, n: int, rng=None, exclude=None) -> np.ndarray:
    """n random pixels on class boundaries of ``mask`` (both sides of each boundary)."""
    from skimage.segmentation import find_boundaries

    rng = as_rng(rng)
    taken = excluded_mask(mask.shape, exclude)
    edges = find_boundaries(np.asarray(mask), mode="thick") & ~taken
    pts = _pick_from(np.flatnonzero(edges.ravel()), n, rng, mask.shape)
    return _fill(pts, n, mask.shape, taken, rng)


def _grey_or_channels_last(image, channel_axis="auto", rgb=None) -> np.ndarray:
    """float (H, W, C) image scaled to [0, 1] per channel."""
    cf = plane_image(image, channel_axis, rgb, who="samplers").astype(np.float32)
    lo = np.percentile(cf, 1, axis=(1, 2), keepdims=True)
    hi = np.percentile(cf, 99, axis=(1, 2), keepdims=True)
    return np.clip(np.moveaxis((cf - lo) / np.maximum(hi - lo, 1e-6), 0, -1), 0, 1)


def slic_points(
    image: np.ndarray, n: int, rng=None, exclude=None, channel_axis="auto", rgb=None
) -> np.ndarray:
    """One random pixel in each of about n SLIC superpixels."""
    from skimage.segmentation import slic

    rng = as_rng(rng)
    img = _grey_or_channels_last(image, channel_axis, rgb)
    shape = img.shape[:2]
    taken = excluded_mask(shape, exclude)
    seg = slic(img, n_segments=n, compactness=0.1, channel_axis=-1, start_label=0)
    flat = seg.ravel()
    free = np.flatnonzero(~taken.ravel())
    # a random free pixel per segment: shuffle, then the first occurrence of each label
    free = free[rng.permutation(len(free))]
    _, first = np.unique(flat[free], return_index=True)
    picks = free[first]
    if len(picks) > n:
        picks = rng.choice(picks, n, replace=False)
    pts = np.stack(np.unravel_index(picks, shape), axis=1).astype(np.int64)
    return _fill(pts, n, shape, taken, rng)


def geodesic_points(
    image: np.ndarray,
    n: int,
    rng=None,
    exclude=None,
    channel_axis="auto",
    rgb=None,
    edge_weight: float = 20.0,
) -> np.ndarray:
    """Iterative farthest-point sampling in a geodesic distance (cost 1 + edge_weight * |grad|).

    The first point is random; each next point is the pixel farthest (geodesically) from all
    chosen ones. Each new point's distance front is bounded by the current maximum distance,
    so later points cost little.
    """
    from scipy import ndimage as ndi
    from skimage.graph import MCP_Geometric

    rng = as_rng(rng)
    img = _grey_or_channels_last(image, channel_axis, rgb)
    shape = img.shape[:2]
    taken = excluded_mask(shape, exclude)
    grad = np.zeros(shape, np.float32)
    for c in range(img.shape[2]):
        grad = np.maximum(grad, ndi.gaussian_gradient_magnitude(img[..., c], 1.0))
    cost = 1.0 + edge_weight * grad / max(float(grad.max()), 1e-6)
    dist = np.full(shape, np.inf)
    starts = [tuple(p) for p in np.argwhere(taken)]
    if not starts:
        starts = [tuple(random_points(shape, 1, rng)[0])]
        pts = [starts[0]]
    else:
        pts = []
    mcp = MCP_Geometric(cost)
    d, _ = mcp.find_costs(starts)
    dist = np.minimum(dist, d)
    while len(pts) < n:
        dd = np.where(taken, -1, dist)
        if pts:
            dd[tuple(np.asarray(pts).T)] = -1
        flat = int(np.argmax(dd))
        if dd.ravel()[flat] <= 0:
            break
        p = np.unravel_index(flat, shape)
        pts.append(p)
        # cost >= 1, so geodesic >= Euclidean distance: the new point can only lower distances
        # (all <= dmax) inside a window of radius dmax around it; MCP on that window is exact
        r = int(math.ceil(min(float(dd.ravel()[flat]), max(shape))))
        ys = slice(max(p[0] - r, 0), p[0] + r + 1)
        xs = slice(max(p[1] - r, 0), p[1] + r + 1)
        d, _ = MCP_Geometric(cost[ys, xs]).find_costs([(p[0] - ys.start, p[1] - xs.start)])
        dist[ys, xs] = np.minimum(dist[ys, xs], d)
    out = np.asarray(pts, np.int64).reshape(-1, 2)
    out = out[~taken[out[:, 0], out[:, 1]]] if len(out) else out
    return _fill(out, n, shape, taken, rng)


def label_based_points(
    kind: str, image: np.ndarray, mask: np.ndarray, n: int, rng=None, channel_axis="auto", rgb=None
) -> np.ndarray:
    """Dispatch to a label-based sampler by name (LABEL_BASED). Returns (n, 2) int64 yx."""
    rng = as_rng(rng)
    shape = np.asarray(mask).shape
    if kind == "random":
        return random_points(shape, n, rng)
    if kind == "uniform":
        return grid_points(shape, n, rng)
    if kind == "edge":
        return edge_points(mask, n, rng)
    if kind == "slic":
        return slic_points(image, n, rng, channel_axis=channel_axis, rgb=rgb)
    if kind == "geodesic":
        return geodesic_points(image, n, rng, channel_axis=channel_axis, rgb=rgb)
    raise InputError(f"unknown sampler '{kind}'; choose one of {', '.join(LABEL_BASED + ACQUISITIONS)}")


# ---------------------------------------------------------------------------------------------
# label-free acquisition run actively (the scores and `suggest_points` are in core.suggest)
# ---------------------------------------------------------------------------------------------


def active_points(
    image: np.ndarray,
    mask: np.ndarray,
    n: int,
    kind: str = "margin",
    setup=None,
    *,
    seed: int = 0,
):
    """Label-free acquisition run actively: train, compute probabilities, pick the next k with
    `suggest_points`, reveal their labels from ``mask``, repeat until n points.

    Uses the oracle's loop (same step sizes and training) with the acquisition in place of the
    ground-truth weight map. setup: a TrainSetup (default: library defaults). Returns the
    OracleResult-like object of that loop.
    """
    from ..core.oracle_loop import run_active

    budget = n / np.asarray(mask).size

    def picker(pred, proba, truth, k, rng, revealed):
        return suggest_points(proba, k, kind, exclude=revealed, rng=rng)

    return run_active(image, mask, picker, setup, budget=budget, target=1.0, seed=seed)
