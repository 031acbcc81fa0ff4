"""Regenerate the sample images, ground-truth masks and example points in this folder.

    python sample_data/make_samples.py

Deterministic: the same code gives the same arrays (seed 0 for every sample).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
try:
    from napari_pointseg.samples import synthetic
except ImportError:  # running from a source checkout without the package installed
    sys.path.insert(0, str(HERE.parent / "src"))
    from napari_pointseg.samples import synthetic
from napari_pointseg.samples.clicks import human_like_points
from napari_pointseg.samples.files import write_tif

from napari_pointseg.core.points import PointSet

SEED = 0
POINTS_FRACTION = 0.003

# name -> (generator call, image is RGB)
SAMPLES = {
    "nuclei": (lambda: synthetic.make_nuclei(size=512, seed=SEED), False),
    "cells": (lambda: synthetic.make_cells(size=384, seed=SEED), False),
    "tissue": (lambda: synthetic.make_tissue(size=512, seed=SEED), True),
    "stack": (lambda: synthetic.make_stack(shape=(24, 256, 256), seed=SEED), False),
}


def make_sample(name: str, out_dir: Path = HERE):
    """Generate one sample and write ``<name>_image.tif``, ``<name>_mask.tif`` and
    ``<name>_points.csv`` into ``out_dir``; returns (image, mask, PointSet)."""
    generate, rgb = SAMPLES[name]
    image, mask = generate()
    coords, labels = human_like_points(mask, POINTS_FRACTION, seed=SEED)
    points = PointSet(coords, labels)
    write_tif(out_dir / f"{name}_image.tif", image, rgb=rgb)
    write_tif(out_dir / f"{name}_mask.tif", mask)
    points.to_csv(out_dir / f"{name}_points.csv")
    return image, mask, points


def main() -> None:
    for name in SAMPLES:
        image, mask, points = make_sample(name)
        print(f"{name}: image {image.shape} {image.dtype}, classes {sorted(set(mask.ravel().tolist()))}, "
              f"{len(points)} points")


if __name__ == "__main__":
    main()
