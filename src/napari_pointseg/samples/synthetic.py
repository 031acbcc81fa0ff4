"""Synthetic microscopy images with exact ground truth (clicks: ``samples.clicks``).

Every generator is deterministic: the same ``seed`` gives a bit-identical image and mask
(all randomness comes from ``np.random.default_rng(seed)``). Object sizes are in pixels
(a fixed "physical" scale), so a larger ``size`` gives more objects, not bigger ones.

Label convention for every mask: ``1`` is always background; ``0`` is never used (it means
"unlabelled" elsewhere in the project). The ground truth is the object geometry *before*
optical blur and noise, so boundary pixels are genuinely ambiguous in the image.

Samples
-------
``make_nuclei``  fluorescence nuclei, uint16 (H, W); 1 = background, 2 = nucleus
``make_cells``   two-channel cells, uint16 (2, H, W); 1 = background, 2 = cytoplasm, 3 = nucleus
``make_tissue``  H&E-like RGB, uint8 (H, W, 3); 1 = background/lumen, 2 = stroma, 3 = nuclei
``make_stack``   3D nuclei, uint16 (Z, H, W); 1 = background, 2 = nucleus
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.signal import fftconvolve

# ---------------------------------------------------------------------------------------------
# shared building blocks
# ---------------------------------------------------------------------------------------------


def _free_part(blob, inst: np.ndarray, min_pixels: int):
    """Where a new nucleus ``blob`` (``(box, inside, q)`` or None) may go in the instance map
    ``inst``: ``(box, q, free)`` with ``free`` the part of it not yet taken, or None when the
    blob is missing, its free part has fewer than ``min_pixels`` or over 10 % of it is taken."""
    if blob is None:
        return None
    box, inside, q = blob
    free = inside & (inst[box] == 0)
    if free.sum() < min_pixels or 1 - free.sum() / inside.sum() > 0.1:
        return None
    return box, q, free


def _nucleus_profile(brightness: float, q: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """A nucleus' intensity over its box: ``brightness`` times ``texture``, 15 % dimmer towards
    the rim (``q``: radius / outline radius, 1 on the outline)."""
    return brightness * (0.85 + 0.15 * (1 - np.clip(q, 0, 1) ** 2)) * texture


def _smooth_noise(rng: np.random.Generator, shape, scale) -> np.ndarray:
    """Gaussian-correlated noise (correlation length ``scale`` px, scalar or per axis),
    zero mean and unit standard deviation, float64 of ``shape``."""
    shape = tuple(int(s) for s in shape)
    scales = np.broadcast_to(np.asarray(scale, dtype=float), (len(shape),))
    # Large correlation lengths are drawn on a coarse grid and upsampled: same look, far cheaper.
    factors = [max(1, int(s // 3)) for s in scales]
    small = tuple(-(-n // f) + 2 for n, f in zip(shape, factors))
    noise = ndi.gaussian_filter(rng.standard_normal(small), [s / f for s, f in zip(scales, factors)])
    if any(f > 1 for f in factors):
        noise = ndi.zoom(noise, factors, order=3, grid_mode=True, mode="nearest")
    noise = noise[tuple(slice(0, n) for n in shape)]
    noise = noise - noise.mean()
    return noise / (noise.std() + 1e-12)


def _illumination(rng: np.random.Generator, shape, vignetting=(0.25, 0.45), gradient=(0.1, 0.3)):
    """Smooth multiplicative gain field (vignetting * linear gradient * gentle blotches),
    float64 of 2D ``shape``, roughly in [0.35, 1.15]."""
    h, w = shape
    scale = max(h, w)
    yy, xx = np.mgrid[0:h, 0:w] / scale
    cy, cx = rng.uniform(0.3, 0.7, 2) * (h / scale, w / scale)
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / 0.5
    vign = 1.0 - rng.uniform(*vignetting) * r2
    angle = rng.uniform(0, 2 * np.pi)
    along = (yy - h / scale / 2) * np.sin(angle) + (xx - w / scale / 2) * np.cos(angle)
    grad = 1.0 + rng.uniform(*gradient) * along
    blotches = 1.0 + 0.05 * _smooth_noise(rng, shape, scale / 5)
    return np.clip(vign * grad * blotches, 0.35, None)


def _camera(
    rng: np.random.Generator, photons: np.ndarray, offset=100.0, read_noise=3.0, max_value=4095
) -> np.ndarray:
    """Shot noise (Poisson) on expected photons, read noise, camera offset, 12-bit clip -> uint16."""
    counts = rng.poisson(np.clip(photons, 0, None)).astype(np.float64)
    adu = offset + counts + rng.normal(0.0, read_noise, photons.shape)
    return np.clip(np.rint(adu), 0, max_value).astype(np.uint16)


def _wobble(rng: np.random.Generator, strength: float):
    """A random smooth closed outline: returns f(phi) -> radius factor around 1."""
    k = np.arange(2, 6)
    amp = strength * rng.uniform(0.2, 1.0, k.size) / k
    phase = rng.uniform(0, 2 * np.pi, k.size)

    def edge(phi):
        phi = np.asarray(phi, dtype=float)[..., None]
        return 1.0 + np.sum(amp * np.cos(k * phi + phase), axis=-1)

    return edge


def _ellipse_frame(shape, center, axes, angle, reach=1.5):
    """Bounding box (tuple of slices) around an ellipse and, inside it, the normalised radius
    ``rho`` (1 on the ellipse) and polar angle ``phi`` in the ellipse frame. ``None`` if the
    box misses the image."""
    cy, cx = center
    a, b = axes
    r = reach * max(a, b) + 2
    y0, y1 = max(int(cy - r), 0), min(int(cy + r) + 1, shape[0])
    x0, x1 = max(int(cx - r), 0), min(int(cx + r) + 1, shape[1])
    if y0 >= y1 or x0 >= x1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(float)
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / a
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / b
    return (slice(y0, y1), slice(x0, x1)), np.hypot(u, v), np.arctan2(v, u)


def _irregular_blob(rng, shape, center, axes, angle, wobble, rough=None, rough_amp=0.0):
    """Rasterise one irregular ellipse: (box, inside bool, q) with q = radius / outline radius
    (q < 1 inside), or None when it misses the image."""
    frame = _ellipse_frame(shape, center, axes, angle)
    if frame is None:
        return None
    box, rho, phi = frame
    q = rho / _wobble(rng, wobble)(phi)
    if rough is not None:
        q = q + rough_amp * rough[box]
    return box, q < 1.0, q


def _near_point(rng, shape, parents, dist):
    """A centre either uniform in the image or, to form clumps, touching a random parent."""
    if parents and rng.random() < 0.5:
        py, px, pr = parents[rng.integers(len(parents))]
        t = rng.uniform(0, 2 * np.pi)
        d = (pr + dist) * rng.uniform(0.8, 1.0)
        return py + d * np.sin(t), px + d * np.cos(t)
    return rng.uniform(0, shape[0]), rng.uniform(0, shape[1])


# ---------------------------------------------------------------------------------------------
# 2D fluorescence nuclei
# ---------------------------------------------------------------------------------------------


def make_nuclei(size: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Widefield-like fluorescence image of nuclei (e.g. DAPI), with exact ground truth.

    Irregular ellipses of varied size, some touching in clumps, some dim or out of focus,
    with chromatin texture and dark nucleoli; optical blur, uneven illumination, background
    offset and autofluorescence, bright debris, Poisson shot noise and read noise.

    Parameters: ``size`` image side in pixels; ``seed`` for the random generator.
    Returns ``(image, mask)``: image uint16 (size, size) with values in a 12-bit range
    (camera offset ~100); mask uint8 (size, size) with 1 = background, 2 = nucleus.
    """
    rng = np.random.default_rng(seed)
    shape = (size, size)
    rough = _smooth_noise(rng, shape, 3)
    texture = 1.0 + 0.2 * _smooth_noise(rng, shape, 1.2) + 0.12 * _smooth_noise(rng, shape, 4)
    nucleoli = _smooth_noise(rng, shape, 2.0) > 1.9
    texture = np.clip(np.where(nucleoli, 0.6 * texture, texture), 0.2, None)

    inst = np.zeros(shape, np.int32)
    focused = np.zeros(shape)
    defocused = np.zeros(shape)
    n_target = max(1, int(0.27 * size * size / 480))
    parents: list[tuple[float, float, float]] = []
    for _ in range(n_target * 8):
        if len(parents) >= n_target:
            break
        kind = rng.random()
        a = rng.uniform(5, 8) if kind < 0.05 else rng.uniform(9, 20)
        b = a * rng.uniform(0.6, 1.0)
        center = _near_point(rng, shape, parents, (a + b) / 2)
        blob = _irregular_blob(rng, shape, center, (a, b), rng.uniform(0, np.pi), 0.25, rough, 0.12)
        placed = _free_part(blob, inst, 25)
        if placed is None:
            continue
        box, q, free = placed
        brightness = np.exp(rng.normal(np.log(900), 0.35))
        if kind < 0.05:  # compact mitotic nuclei are brighter
            brightness *= 1.8
        elif kind > 0.82:  # dim nuclei: weak staining or thin cells
            brightness *= rng.uniform(0.15, 0.35)
        profile = _nucleus_profile(brightness, q, texture[box])
        target = defocused if rng.random() < 0.15 else focused
        target[box][free] = profile[free]
        inst[box][free] = len(parents) + 1
        parents.append((center[0], center[1], (a + b) / 2))

    debris = _debris(rng, shape, inst == 0, count=max(1, size * size // 16000))
    signal = ndi.gaussian_filter(focused + debris, 1.6) + ndi.gaussian_filter(defocused, 3.2)
    haze = 0.05 * ndi.gaussian_filter(focused + defocused, 12)  # out-of-focus light
    background = 80.0 * (1 + 0.25 * _smooth_noise(rng, shape, size / 8))
    photons = _illumination(rng, shape) * (background + haze + signal)
    image = _camera(rng, photons, offset=100.0, read_noise=3.0)
    mask = np.where(inst > 0, 2, 1).astype(np.uint8)
    return image, mask


def _debris(rng, shape, allowed, count):
    """Small bright specks (not nuclei), only where ``allowed``; returns photon image."""
    out = np.zeros(shape)
    ys, xs = np.nonzero(allowed)
    if ys.size == 0:
        return out
    pick = rng.choice(ys.size, size=min(count, ys.size), replace=False)
    out[ys[pick], xs[pick]] = rng.uniform(2000, 9000, pick.size)
    return ndi.gaussian_filter(out, 0.8)


# ---------------------------------------------------------------------------------------------
# 2D two-channel cells
# ---------------------------------------------------------------------------------------------


def _poisson_disk(rng, shape, min_dist, n_try):
    """Random points at least ``min_dist`` apart (dart throwing), float (N, 2)."""
    pts = np.empty((0, 2))
    for p in rng.uniform(0, 1, (n_try, 2)) * shape:
        if len(pts) == 0 or np.min(np.hypot(*(pts - p).T)) >= min_dist:
            pts = np.vstack([pts, p])
    return pts


def _cell_geometry(rng, shape, seeds):
    """Cell territories (watershed of noisy seed distance) and, per pixel, the normalised radius
    in its own cell's ellipse frame (q_cell) and nucleus frame (q_nuc)."""
    from skimage.segmentation import find_boundaries, watershed

    n = len(seeds)
    markers = np.zeros(shape, np.int32)
    iy, ix = np.clip(np.rint(seeds).astype(int), 0, np.array(shape) - 1).T
    markers[iy, ix] = np.arange(1, n + 1)
    dist = ndi.distance_transform_edt(markers == 0)
    territory = watershed(dist + 5.0 * _smooth_noise(rng, shape, 8), markers)
    inner = ndi.distance_transform_edt(~find_boundaries(territory, mode="inner")) > 2

    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    idx = territory - 1

    def frame(cy, cx, a, b, angle, wob_amp):
        dy, dx = yy - cy[idx], xx - cx[idx]
        ca, sa = np.cos(angle)[idx], np.sin(angle)[idx]
        u = (dx * ca + dy * sa) / a[idx]
        v = (-dx * sa + dy * ca) / b[idx]
        phi = np.arctan2(v, u)[..., None]
        k = np.arange(2, 6)
        amp = wob_amp * rng.uniform(0.2, 1.0, (n, k.size)) / k
        phase = rng.uniform(0, 2 * np.pi, (n, k.size))
        edge = 1 + np.sum(amp[idx] * np.cos(k * phi + phase[idx]), axis=-1)
        return np.hypot(u, v) / edge

    a = rng.uniform(18, 32, n)
    b = a * rng.uniform(0.55, 1.0, n)
    angle = rng.uniform(0, np.pi, n)
    q_cell = frame(seeds[:, 0], seeds[:, 1], a, b, angle, 0.45)
    q_cell = q_cell * (1 + 0.12 * _smooth_noise(rng, shape, 6))

    shift = rng.uniform(-0.2, 0.2, (n, 2)) * np.c_[b, a]
    na = np.maximum(a * rng.uniform(0.32, 0.48, n), 6.0)
    nb = np.maximum(na * rng.uniform(0.65, 1.0, n), 5.0)
    q_nuc = frame(
        seeds[:, 0] + shift[:, 0], seeds[:, 1] + shift[:, 1], na, nb, angle + rng.normal(0, 0.3, n), 0.15
    )
    return territory, inner, q_cell, q_nuc


def make_cells(size: int = 384, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two-channel fluorescence image of adherent cells, with exact ground truth.

    Cells are irregular blobs grown from random seeds (noisy watershed territories clipped by a
    per-cell wobbly ellipse), many touching; each has one nucleus inside. Channel 0 is a nuclear
    stain (chromatin texture, faint cytoplasmic bleed-through); channel 1 a cytoplasm stain
    (granular/reticular texture, thin dim cell edges, nucleus partly excluded, some cells dim).
    Each channel has its own blur, illumination field, background and noise.

    Returns ``(image, mask)``: image uint16 (2, size, size), channel-first, 12-bit range;
    mask uint8 (size, size) with 1 = background, 2 = cytoplasm, 3 = nucleus.
    """
    rng = np.random.default_rng(seed)
    shape = (size, size)
    seeds = _poisson_disk(rng, shape, 30, n_try=int(size * size / 300))
    territory, inner, q_cell, q_nuc = _cell_geometry(rng, shape, seeds)
    cell = q_cell < 1
    nucleus = cell & inner & (q_nuc * (1 + 0.05 * _smooth_noise(rng, shape, 3)) < 1) & (q_cell < 0.85)
    mask = (1 + cell + nucleus).astype(np.uint8)

    idx = territory - 1
    n = len(seeds)
    nuc_bright = np.exp(rng.normal(np.log(1100), 0.3, n))[idx]
    cyto_bright = np.exp(rng.normal(np.log(420), 0.35, n))
    cyto_bright[rng.random(n) < 0.25] *= rng.uniform(0.2, 0.4)  # weakly stained cells
    cyto_bright = cyto_bright[idx]

    chromatin = 1 + 0.22 * _smooth_noise(rng, shape, 1.3) + 0.1 * _smooth_noise(rng, shape, 4)
    chromatin = np.clip(chromatin, 0.2, None)
    qc = np.clip(q_cell, 0, 1)
    ch0 = np.where(nucleus, nuc_bright * chromatin, 0.0) + np.where(cell & ~nucleus, 0.03 * nuc_bright, 0.0)

    granules = 1 + 0.3 * _smooth_noise(rng, shape, 1.5)
    reticulum = 1 + 0.35 * (np.abs(_smooth_noise(rng, shape, 3)) < 0.25)
    thickness = 0.45 + 0.55 * (1 - qc**2)  # cells thin out towards their edge
    perinuclear = 1 + 0.35 * np.exp(-((q_nuc - 1.2) ** 2) / 0.3)
    cyto = cyto_bright * thickness * perinuclear * np.clip(granules * reticulum, 0.1, None)
    ch1 = np.where(cell, np.where(nucleus, 0.45, 1.0) * cyto, 0.0)

    channels = []
    for signal, sigma, bg in ((ch0, 1.4, 70.0), (ch1, 1.9, 110.0)):
        background = bg * (1 + 0.2 * _smooth_noise(rng, shape, size / 6))
        blurred = ndi.gaussian_filter(signal, sigma) + 0.04 * ndi.gaussian_filter(signal, 10)
        photons = _illumination(rng, shape) * (background + blurred)
        channels.append(_camera(rng, photons, offset=100.0, read_noise=3.0))
    return np.stack(channels), mask


# ---------------------------------------------------------------------------------------------
# H&E-like tissue
# ---------------------------------------------------------------------------------------------


def _fibres(rng, shape, orientation, n_angles=8):
    """Fibrous texture following a per-pixel ``orientation`` field (radians), unit std."""
    noise = rng.standard_normal(shape)
    r = np.arange(-18, 19)
    yy, xx = np.meshgrid(r, r, indexing="ij")
    responses, weights = [], []
    for theta in np.arange(n_angles) * np.pi / n_angles:
        along = xx * np.cos(theta) + yy * np.sin(theta)
        across = -xx * np.sin(theta) + yy * np.cos(theta)
        kernel = np.exp(-(along**2) / (2 * 6.0**2) - across**2 / (2 * 0.9**2))
        responses.append(fftconvolve(noise, kernel / np.sqrt((kernel**2).sum()), mode="same"))
        weights.append(np.exp(4.0 * np.cos(2 * (orientation - theta))))
    fib = np.sum(np.array(responses) * weights, axis=0) / np.sum(weights, axis=0)
    fib -= fib.mean()
    return fib / (fib.std() + 1e-12)


class _Canvas:
    """Class map plus hematoxylin / eosin concentration maps being painted on."""

    def __init__(self, shape):
        self.cls = np.full(shape, 2, np.uint8)
        self.hema = np.zeros(shape)
        self.eosin = np.zeros(shape)

    def paint(self, where, cls, hema, eosin, box=Ellipsis):
        self.cls[box][where] = cls
        self.hema[box][where] = np.broadcast_to(hema, where.shape)[where]
        self.eosin[box][where] = np.broadcast_to(eosin, where.shape)[where]


def _stamp_nucleus(rng, canvas, center, axes, angle, darkness, chromatin, rough):
    blob = _irregular_blob(rng, canvas.cls.shape, center, axes, angle, 0.2, rough, 0.15)
    if blob is None:
        return
    box, inside, q = blob
    hema = darkness * (0.8 + 0.2 * (1 - np.clip(q, 0, 1) ** 2)) * chromatin[box]
    canvas.paint(inside, 3, hema, 0.12, box)


def _glands(rng, canvas, occupied, chromatin, rough):
    """Gland-like rings: lumen (class 1), epithelial cytoplasm (class 2) and a dense row of
    nuclei (class 3) along the basal side, sometimes stratified, sometimes with a retraction
    cleft (class 1) around."""
    shape = canvas.cls.shape
    n_target = max(1, int(0.3 * shape[0] * shape[1] / (np.pi * 42 * 32)))
    n_done = 0
    for _ in range(n_target * 30):
        if n_done >= n_target:
            break
        a = rng.uniform(26, 58)
        b = a * rng.uniform(0.55, 0.95)
        angle = rng.uniform(0, np.pi)
        center = rng.uniform(0, 1, 2) * shape
        frame = _ellipse_frame(shape, center, (a, b), angle, reach=1.4)
        if frame is None:
            continue
        box, rho, phi = frame
        edge = _wobble(rng, 0.35)
        q = rho / edge(phi)
        if occupied[box][q < 1.25].any():
            continue
        n_done += 1
        occupied[box] |= q < 1.25
        radius = np.sqrt(a * b)
        thick = rng.uniform(8, 14) / radius
        if rng.random() < 0.35:
            canvas.paint((q >= 1) & (q < 1 + rng.uniform(2, 4) / radius), 1, 0.0, 0.01, box)
        canvas.paint(q < 1, 2, 0.12 * (1 + 0.15 * rough[box]), 0.22, box)
        secretion = 0.12 * rng.random() * np.clip(1 + _smooth_noise(rng, q.shape, 6), 0, None)
        canvas.paint(q < 1 - thick, 1, 0.01, 0.02 + secretion, box)
        rows = [1 - 0.35 * thick] + ([1 - 0.7 * thick] if rng.random() < 0.4 else [])
        for row, q_row in enumerate(rows):
            spacing = rng.uniform(5.5, 7.5)
            n_nuc = max(6, int(2 * np.pi * radius * q_row / spacing))
            for t in (np.arange(n_nuc) + rng.uniform(0, 1)) * 2 * np.pi / n_nuc:
                if row and rng.random() < 0.5:
                    continue
                t = t + rng.normal(0, 0.02)
                u, v = q_row * edge(t) * np.cos(t) * a, q_row * edge(t) * np.sin(t) * b
                dy = u * np.sin(angle) + v * np.cos(angle)
                dx = u * np.cos(angle) - v * np.sin(angle)
                axes = (rng.uniform(4.0, 5.5), rng.uniform(2.5, 3.4))
                _stamp_nucleus(
                    rng,
                    canvas,
                    (center[0] + dy, center[1] + dx),
                    axes,
                    np.arctan2(dy, dx),
                    rng.uniform(0.6, 0.95),
                    chromatin,
                    rough,
                )


def _stromal_cells(rng, canvas, occupied, orientation, chromatin, rough):
    """Spindle fibroblast nuclei aligned with the fibres, plus clustered round lymphocytes."""
    shape = canvas.cls.shape
    free = ~occupied
    ys, xs = np.nonzero(free)
    if ys.size == 0:
        return
    n_fibro = int(free.sum() / 900)
    for i in rng.choice(ys.size, size=min(n_fibro, ys.size), replace=False):
        axes = (rng.uniform(5, 8.5), rng.uniform(1.6, 2.4))
        _stamp_nucleus(
            rng,
            canvas,
            (ys[i], xs[i]),
            axes,
            orientation[ys[i], xs[i]] + rng.normal(0, 0.2),
            rng.uniform(0.6, 0.9),
            chromatin,
            rough,
        )
    for _ in range(max(1, shape[0] * shape[1] // 120000)):
        i = rng.integers(ys.size)
        cy, cx = ys[i], xs[i]
        for _ in range(rng.integers(10, 30)):
            c = (cy + rng.normal(0, 14), cx + rng.normal(0, 14))
            ci = np.clip(np.rint(c).astype(int), 0, np.array(shape) - 1)
            if free[ci[0], ci[1]]:
                r = rng.uniform(2.6, 3.6)
                _stamp_nucleus(
                    rng,
                    canvas,
                    c,
                    (r, r * rng.uniform(0.85, 1)),
                    0.0,
                    rng.uniform(1.0, 1.3),
                    chromatin,
                    rough,
                )


def _empty_spaces(rng, canvas, occupied):
    """Holes in the stroma (vessels, tears) and, often, the slide edge: class 1."""
    shape = canvas.cls.shape
    for _ in range(max(1, shape[0] * shape[1] // 90000)):
        a = rng.uniform(6, 22)
        center = rng.uniform(0, 1, 2) * shape
        blob = _irregular_blob(rng, shape, center, (a, a * rng.uniform(0.3, 0.8)), rng.uniform(0, np.pi), 0.5)
        if blob is not None and not occupied[blob[0]][blob[1]].any():
            canvas.paint(blob[1], 1, 0.0, 0.01, blob[0])
    if rng.random() < 0.75:
        side = rng.integers(4)
        coord = np.mgrid[0 : shape[0], 0 : shape[1]][side % 2].astype(float)
        if side >= 2:
            coord = shape[side % 2] - 1 - coord
        depth = rng.uniform(0.04, 0.12) * shape[side % 2] + 8 * _smooth_noise(rng, shape, 20)
        canvas.paint(coord < depth, 1, 0.0, 0.0)


def _stain_to_rgb(rng, hema, eosin):
    """Beer-Lambert mixing of hematoxylin and eosin with per-image stain vector variation,
    uneven light and sensor noise -> uint8 RGB."""
    h_vec = np.array([0.56, 0.72, 0.41]) + rng.normal(0, 0.03, 3)
    e_vec = np.array([0.22, 0.80, 0.56]) + rng.normal(0, 0.03, 3)
    h_vec, e_vec = h_vec / np.linalg.norm(h_vec), e_vec / np.linalg.norm(e_vec)
    od = (
        rng.uniform(0.85, 1.15) * hema[..., None] * h_vec
        + rng.uniform(0.85, 1.15) * eosin[..., None] * e_vec
        + 0.02
    )
    light = 246 * (1 + 0.03 * _smooth_noise(rng, hema.shape, hema.shape[0] / 4))
    rgb = light[..., None] * 10.0 ** (-od) + rng.normal(0, 3.0, od.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def make_tissue(size: int = 512, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Brightfield H&E-like tissue section (RGB), with exact ground truth.

    Gland-like structures (white lumen, pale purple-pink epithelium lined by a dense row of
    nuclei), pink fibrous stroma with spindle nuclei and clusters of lymphocytes, holes and
    often the slide edge. Colours come from Beer-Lambert stain mixing with per-image stain
    variation; then blur, uneven light and sensor noise.

    Returns ``(image, mask)``: image uint8 (size, size, 3) RGB (channel-last); mask uint8
    (size, size) with 1 = background/lumen, 2 = stroma (and epithelial cytoplasm), 3 = nuclei.
    """
    rng = np.random.default_rng(seed)
    shape = (size, size)
    orientation = rng.uniform(0, np.pi) + 1.2 * _smooth_noise(rng, shape, size / 6)
    fibres = _fibres(rng, shape, orientation)
    rough = _smooth_noise(rng, shape, 2.5)
    chromatin = np.clip(1 + 0.25 * _smooth_noise(rng, shape, 1.2), 0.3, None)

    canvas = _Canvas(shape)
    canvas.hema[:] = 0.05 * (1 + 0.3 * rough)
    patchy = 1 + 0.15 * _smooth_noise(rng, shape, 40)
    canvas.eosin[:] = 0.28 * np.clip(1 + 0.4 * fibres, 0.25, None) * patchy
    occupied = np.zeros(shape, bool)
    _glands(rng, canvas, occupied, chromatin, rough)
    _stromal_cells(rng, canvas, occupied, orientation, chromatin, rough)
    _empty_spaces(rng, canvas, occupied)

    hema = ndi.gaussian_filter(canvas.hema, 1.0)
    eosin = ndi.gaussian_filter(canvas.eosin, 1.0)
    return _stain_to_rgb(rng, hema, eosin), canvas.cls.copy()


# ---------------------------------------------------------------------------------------------
# 3D nuclei stack
# ---------------------------------------------------------------------------------------------


def _ellipsoid(shape, center, axes, angle, rough, rough_amp):
    """Box and inside-mask of an irregular ellipsoid (rotated in the yx plane), or None."""
    reach = (axes[0], max(axes[1:]), max(axes[1:]))
    lo = [max(int(c - 1.3 * r) - 1, 0) for c, r in zip(center, reach)]
    hi = [min(int(c + 1.3 * r) + 2, s) for c, r, s in zip(center, reach, shape)]
    if any(l >= h for l, h in zip(lo, hi)):
        return None
    box = tuple(slice(l, h) for l, h in zip(lo, hi))
    zz, yy, xx = np.mgrid[box].astype(float)
    dz, dy, dx = zz - center[0], yy - center[1], xx - center[2]
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / axes[2]
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / axes[1]
    rho = np.sqrt((dz / axes[0]) ** 2 + u**2 + v**2)
    q = rho + rough_amp * rough[box]
    return box, q < 1.0, q


def make_stack(shape: tuple[int, int, int] = (24, 256, 256), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3D fluorescence stack of nuclei (irregular ellipsoids), with exact ground truth.

    Anisotropic sampling (z step = 2.5 x the pixel size, so nuclei span few slices),
    anisotropic blur with an out-of-focus halo, signal attenuation with depth, uneven
    illumination, Poisson and read noise. Some nuclei are dim, many touch.

    Parameters: ``shape`` (Z, H, W); ``seed``.
    Returns ``(image, mask)``: image uint16 (Z, H, W), 12-bit range; mask uint8 (Z, H, W)
    with 1 = background, 2 = nucleus.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    z_step = 2.5
    rough = _smooth_noise(rng, shape, (3 / z_step, 3, 3))
    texture = np.clip(1 + 0.22 * _smooth_noise(rng, shape, (1.5 / z_step, 1.5, 1.5)), 0.2, None)

    inst = np.zeros(shape, np.int32)
    signal = np.zeros(shape)
    n_target = max(1, int(0.2 * np.prod(shape) / 1800))
    parents: list[tuple[float, float, float]] = []
    for _ in range(n_target * 8):
        if len(parents) >= n_target:
            break
        a = rng.uniform(8, 16)
        b = a * rng.uniform(0.65, 1.0)
        c = a * rng.uniform(0.7, 1.0) / z_step
        cy, cx = _near_point(rng, shape[1:], parents, (a + b) / 2)
        center = (rng.uniform(-1, shape[0]), cy, cx)
        blob = _ellipsoid(shape, center, (c, b, a), rng.uniform(0, np.pi), rough, 0.1)
        placed = _free_part(blob, inst, 40)
        if placed is None:
            continue
        box, q, free = placed
        brightness = np.exp(rng.normal(np.log(650), 0.35))
        if rng.random() < 0.15:
            brightness *= rng.uniform(0.2, 0.4)
        profile = _nucleus_profile(brightness, q, texture[box])
        signal[box][free] = profile[free]
        inst[box][free] = len(parents) + 1
        parents.append((cy, cx, (a + b) / 2))

    attenuation = np.exp(-np.arange(shape[0]) / (1.5 * shape[0]))[:, None, None]
    halo = 0.08 * ndi.gaussian_filter(signal, (3.0, 6.0, 6.0))
    blurred = ndi.gaussian_filter(signal, (1.0, 1.4, 1.4)) + halo
    background = 60.0 * (1 + 0.2 * _smooth_noise(rng, shape, (4, 40, 40)))
    photons = _illumination(rng, shape[1:])[None] * attenuation * (background + blurred)
    image = _camera(rng, photons, offset=100.0, read_noise=4.0)
    return image, np.where(inst > 0, 2, 1).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------

SAMPLES = {
    "nuclei": make_nuclei,
    "cells": make_cells,
    "tissue": make_tissue,
    "stack": make_stack,
}
