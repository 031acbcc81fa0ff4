"""Tiny synthetic images with exact ground truth for fast core tests."""

import numpy as np
from scipy import ndimage as ndi

from napari_pointseg.core.models import ModelSpec
from napari_pointseg.core.points import PointSet
from napari_pointseg.core.trainer import TrainConfig

# a small, fast network for tests
TINY_SPEC = ModelSpec(arch="unet", encoder="resnet18", encoder_depth=3, decoder_channels=[32, 16, 8])


def blobs(size=64, seed=0, noise=0.25):
    """(image float32 (size, size), mask int64 with values 1 = background, 2 = blob)."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.normal(size=(size, size)), size / 10)
    mask = np.where(field > 0, 2, 1).astype(np.int64)
    image = ndi.gaussian_filter((mask == 2).astype(np.float32), 1.0) + rng.normal(0, noise, mask.shape)
    return image.astype(np.float32), mask


def random_points(mask, n, seed=0):
    """n random pixels of ``mask`` with their mask values, at least one per class first."""
    rng = np.random.default_rng(seed)
    coords = []
    for v in np.unique(mask):
        ys, xs = np.nonzero(mask == v)
        i = rng.integers(len(ys))
        coords.append((ys[i], xs[i]))
    flat = rng.choice(mask.size, n, replace=False)
    coords += list(zip(*np.unravel_index(flat, mask.shape)))
    coords = np.array(coords[: max(n, len(np.unique(mask)))])
    return PointSet(coords, mask[tuple(coords.T)])


def fast_config(**kw):
    base = dict(
        points_per_step=4,
        step_growth=0.0,
        iters_per_step=4,
        min_iters_per_step=2,
        final_iters=10,
        crop_size=32,
        batch_size=2,
        lr=3e-3,
        warmup_iters=3,
    )
    base.update(kw)
    return TrainConfig(**base)


# the annotate widget in tests: a few iterations per step, one thread, generous waits
WIDGET_TRAIN = dict(iters_per_step=4, min_iters_per_step=2, final_iters=40, threads=1)
WIDGET_WAIT = 90_000  # ms
