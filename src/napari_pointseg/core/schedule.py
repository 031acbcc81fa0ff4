"""Order schedules: which points are in the loss at which step.

A *step* admits the next group of points and then trains some iterations on every point
admitted so far. The *order* decides the sequence in which points are admitted:

- ``correct``: acquisition order (the paper's "correct order"),
- ``reverse``: last acquired first,
- ``random``: a seeded random permutation,
- ``entire``: all points in one step ("entire mask"), trained for as many iterations as the
  stepped orders get in total, so that every order has the same training budget.

Step sizes may grow: ``k_t = max(points_per_step, ceil(step_growth * admitted))``, i.e. one or
a few points at a time early (when each point changes the prediction a lot) and proportionally
larger groups later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .errors import InputError

ORDERS = ("correct", "entire", "random", "reverse")


def with_iters_per_step(config, iters_per_step: int):
    """A copy of the TrainConfig ``config`` training at most ``iters_per_step`` (>= 1)
    iterations per step; its ``min_iters_per_step`` is lowered to match, else a small
    ``iters_per_step`` would be overruled by the minimum."""
    n = int(iters_per_step)
    return replace(config, iters_per_step=n, min_iters_per_step=min(n, config.min_iters_per_step))


def admission_order(n_points: int, order: str, seed: int = 0) -> np.ndarray:
    """Permutation (int64, length n_points) of point indices in the order they join the loss.

    Indices refer to points sorted by acquisition order. ``entire`` keeps acquisition order
    (it only changes how many join per step).
    """
    if order not in ORDERS:
        raise InputError(f"unknown order '{order}'; choose one of {', '.join(ORDERS)}")
    idx = np.arange(n_points, dtype=np.int64)
    if order == "reverse":
        return idx[::-1].copy()
    if order == "random":
        return np.random.default_rng(seed).permutation(n_points).astype(np.int64)
    return idx


def next_step_size(n_admitted: int, points_per_step: int, step_growth: float) -> int:
    """How many points the next step admits (at least 1)."""
    return max(1, int(points_per_step), int(math.ceil(step_growth * n_admitted)))


def step_sizes(n_points: int, points_per_step: int = 1, step_growth: float = 0.0) -> list[int]:
    """Sizes of consecutive steps until ``n_points`` are admitted (sums to n_points)."""
    sizes, admitted = [], 0
    while admitted < n_points:
        k = min(next_step_size(admitted, points_per_step, step_growth), n_points - admitted)
        sizes.append(k)
        admitted += k
    return sizes


@dataclass
class Step:
    """One schedule step: ``active`` point indices (acquisition-order indices) and iterations."""

    active: np.ndarray
    iters: int


def plan(
    n_points: int,
    order: str = "correct",
    points_per_step: int = 1,
    iters_per_step: int = 10,
    step_growth: float = 0.0,
    seed: int = 0,
) -> list[Step]:
    """The full offline schedule for ``n_points`` points.

    Stepped orders: step t trains ``iters_per_step`` iterations on the first
    ``sum(sizes[:t+1])`` points of `admission_order`. ``entire``: one step on all points with
    the same total number of iterations.
    """
    if n_points <= 0:
        raise InputError("a schedule needs at least one point")
    perm = admission_order(n_points, order, seed)
    sizes = step_sizes(n_points, points_per_step, step_growth)
    if order == "entire":
        return [Step(perm.copy(), iters_per_step * len(sizes))]
    steps, admitted = [], 0
    for k in sizes:
        admitted += k
        steps.append(Step(perm[:admitted].copy(), iters_per_step))
    return steps
