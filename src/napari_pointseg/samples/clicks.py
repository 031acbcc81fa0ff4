"""Human-like example clicks on a ground-truth mask (the samples' points CSVs, test fixtures).

Deterministic: the same ``seed`` gives the same clicks. Coordinates are integer pixel
positions (float64), labels the mask values at them.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def human_like_points(
    mask: np.ndarray, fraction: float = 0.0015, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Example clicks on ``mask`` in the order a human annotator would place them.

    First 2-3 points per class deep inside large regions, classes interleaved (so the first
    ``n_classes`` points already cover every class); then points spread over the image,
    visiting not-yet-clicked objects and moving progressively closer to class boundaries.
    No two points share a pixel.

    ``mask``: 2D (H, W) or 3D (Z, H, W) integer label image (every value is a class).
    For 3D masks a handful of z slices is annotated (as a human would) and the count is
    relative to the pixels of those slices.
    Returns ``(coords, labels)``: coords float64 (N, mask.ndim) integer pixel positions,
    labels int64 (N,) equal to the mask value at each point;
    N = max(round(fraction * annotated pixels), 2 * n_classes).
    """
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask must be 2D or 3D, got shape {mask.shape}")
    rng = np.random.default_rng(seed)
    if mask.ndim == 2:
        z_index = np.array([0])
        sub = mask[None]
    else:
        z_index = _annotated_slices(mask, rng)
        sub = mask[z_index]
    n_classes = len(np.unique(sub))
    n = min(max(int(round(fraction * sub.size)), 2 * n_classes), sub.size)
    picks = _ClickSampler(sub, rng).run(n)
    s, y, x = np.unravel_index(picks, sub.shape)
    coords = np.stack([y, x], axis=1) if mask.ndim == 2 else np.stack([z_index[s], y, x], axis=1)
    return coords.astype(np.float64), sub.ravel()[picks].astype(np.int64)


def _annotated_slices(mask, rng, n_slices=5):
    """A handful of spread-out z slices, preferring slices that show every class."""
    z = mask.shape[0]
    n_classes = len(np.unique(mask))
    good = [i for i in range(z) if len(np.unique(mask[i])) == n_classes] or list(range(z))
    n_slices = min(n_slices, len(good))
    targets = np.linspace(0.15, 0.85, n_slices) * (z - 1) + rng.uniform(-1, 1, n_slices)
    chosen: list[int] = []
    for t in targets:
        options = [g for g in good if g not in chosen]
        chosen.append(min(options, key=lambda g: abs(g - t)))
    return np.array(sorted(chosen))


class _ClickSampler:
    """Sequential weighted sampling of click positions on a stack of 2D slices (S, H, W)."""

    def __init__(self, sub: np.ndarray, rng: np.random.Generator):
        self.shape = sub.shape
        self.rng = rng
        self.labels = sub.ravel()
        self.classes = np.unique(self.labels)
        depth = np.zeros(sub.shape, np.float64)
        comp = np.zeros(sub.shape, np.int64)
        n_comp = 0
        for s in range(sub.shape[0]):
            for c in self.classes:
                region = sub[s] == c
                if region.any():
                    # distance to the nearest other class in this slice (image edges don't count)
                    depth[s][region] = ndi.distance_transform_edt(region)[region]
                    lab, k = ndi.label(region)
                    comp[s][region] = lab[region] + n_comp
                    n_comp += k
        self.depth = depth.ravel()
        self.comp = comp.ravel()
        self.comp_size = np.bincount(self.comp, minlength=n_comp + 1)
        self.comp_class = np.zeros(n_comp + 1, self.labels.dtype)
        self.comp_class[self.comp] = self.labels
        self.comp_clicked = np.zeros(n_comp + 1, bool)
        self.comp_clicked[0] = True  # id 0 is unused
        by_comp = np.argsort(self.comp, kind="stable")
        self.comp_members = np.split(by_comp, np.cumsum(self.comp_size)[:-1])
        self.members = {c: np.flatnonzero(self.labels == c) for c in self.classes}
        self.suppress = np.ones(self.labels.size)
        self.boundary_cache: dict = {}
        self.chosen: list[int] = []

    def run(self, n: int) -> np.ndarray:
        s, h, w = self.shape
        spacing = np.sqrt(s * h * w / n)
        self.sigma = max(1.5, 0.35 * spacing)
        n_seed = 3 if n >= 12 * len(self.classes) else 2
        for _ in range(n_seed):
            for c in self.rng.permutation(self.classes):
                if len(self.chosen) < n:
                    self._seed_click(c, far=max(h, w) / 5)
        counts = {c: int(np.sum(self.labels[self.chosen] == c)) for c in self.classes}
        share = np.array([np.sqrt(self.members[c].size) for c in self.classes])
        share /= share.sum()
        rest = n - len(self.chosen)
        for i in range(rest):
            t = i / max(rest - 1, 1)
            deficit = share * (len(self.chosen) + 1) - np.array([counts[c] for c in self.classes])
            c = self.classes[int(np.argmax(deficit + self.rng.uniform(0, 0.5, deficit.size)))]
            if not self._click_class(c, t, spacing):
                c = next((k for k in self.classes if self._click_class(k, t, spacing)), None)
                if c is None:
                    break
            counts[c] += 1
        return np.array(self.chosen, dtype=np.int64)

    def _seed_click(self, c, far):
        """A point deep inside a large region of class ``c``, far from earlier seeds."""
        idx = self.members[c]
        weight = (self.depth[idx] / self.depth[idx].max()) ** 8
        s, y, x = np.unravel_index(idx, self.shape)
        for p in self.chosen:
            ps, py, px = np.unravel_index(p, self.shape)
            d2 = (y - py) ** 2 + (x - px) ** 2
            weight = weight * np.where(s == ps, 1 - np.exp(-d2 / (2 * far**2)), 1.0)
        self._pick(idx, weight * self.suppress[idx])

    def _click_class(self, c, t, spacing) -> bool:
        """One click of class ``c`` at progress ``t`` in [0, 1]; False if the class is full."""
        unvisited = np.flatnonzero(~self.comp_clicked & (self.comp_class == c))
        if unvisited.size and self.rng.random() < 0.5:
            # a not-yet-clicked object, small ones included: click near its middle
            p = np.sqrt(self.comp_size[unvisited].astype(float))
            idx = self.comp_members[unvisited[self.rng.choice(unvisited.size, p=p / p.sum())]]
            return self._pick(idx, self.depth[idx] ** 2 * self.suppress[idx])
        # from "well inside" to "right at the edge": depth**power favours the interior early,
        # exp(-depth / scale) pulls towards boundaries more and more; the schedule is quantised
        # so the weights can be cached
        level = int(round(t * 15))
        if (c, level) not in self.boundary_cache:
            start = max(spacing, 1.5)
            scale = start * (1.5 / start) ** (level / 15)
            depth = self.depth[self.members[c]]
            power = 2.0 * (1 - level / 15)
            self.boundary_cache[c, level] = depth**power * np.exp(-(depth - 1) / scale)
        idx = self.members[c]
        return self._pick(idx, self.boundary_cache[c, level] * self.suppress[idx])

    def _pick(self, idx, weight) -> bool:
        total = weight.sum()
        if not np.isfinite(total) or total <= 0:
            free = idx[self.suppress[idx] > 0]
            if free.size == 0:
                return False
            choice = free[self.rng.integers(free.size)]
        else:
            cum = np.cumsum(weight)
            at = int(np.searchsorted(cum, self.rng.uniform(0, cum[-1]), side="right"))
            choice = idx[min(at, idx.size - 1)]
        self._register(int(choice))
        return True

    def _register(self, flat):
        """Record a click; damp nearby weights (humans spread clicks) and forbid the pixel."""
        self.chosen.append(flat)
        self.comp_clicked[self.comp[flat]] = True
        s, y, x = np.unravel_index(flat, self.shape)
        r = int(3 * self.sigma) + 1
        y0, y1 = max(y - r, 0), min(y + r + 1, self.shape[1])
        x0, x1 = max(x - r, 0), min(x + r + 1, self.shape[2])
        yy, xx = np.mgrid[y0:y1, x0:x1]
        local = self.suppress.reshape(self.shape)[s, y0:y1, x0:x1]
        local *= 1 - np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * self.sigma**2))
        self.suppress.reshape(self.shape)[s, y, x] = 0.0
