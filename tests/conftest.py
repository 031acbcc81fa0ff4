"""Shared pytest fixtures (generic: usable by any test module)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def nuclei_crop():
    """A small fluorescence nuclei image with ground truth and human-like clicks.

    Returns ``(image uint16 (128, 128), mask int64 values {1, 2}, coords (N, 2), labels (N,))``,
    clicks in acquisition order. A crop of the packaged sample when it is available, else the
    same synthetic generator at a small size.
    """
    from napari_pointseg.samples.clicks import human_like_points

    image = mask = None
    try:
        from napari_pointseg.samples.files import load_sample

        image, mask, _ = load_sample("nuclei")[:3]
        image, mask = np.asarray(image)[:128, :128], np.asarray(mask)[:128, :128]
    except Exception:  # noqa: BLE001 - sample files not generated yet: synthesise
        from napari_pointseg.samples.synthetic import make_nuclei

        image, mask = make_nuclei(256, seed=0)
        image, mask = image[:128, :128], mask[:128, :128]
    mask = mask.astype(np.int64)
    coords, labels = human_like_points(mask, 0.002, seed=0)
    return image, mask, coords, labels
