"""The bundled sample images: image, ground-truth mask and example points per sample.

Files live in ``_sample_data`` inside the installed package (the wheel copies the repository's
``sample_data/`` there) or, in a source checkout, in ``<repo>/sample_data``. They are written by
``sample_data/make_samples.py`` from ``napari_pointseg.synthetic``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .core.errors import InputError
from .core.points import PointSet

SAMPLE_NAMES = ("nuclei", "cells", "tissue", "stack")

# name -> (channel_axis, rgb)
_LAYOUT = {
    "nuclei": (None, False),
    "cells": (0, False),
    "tissue": (-1, True),
    "stack": (None, False),
}


@dataclass
class Sample:
    """One sample. Unpacks / indexes like a tuple in field order
    (``image, mask, points = load_sample("nuclei")[:3]``).

    image: nuclei uint16 (H, W); cells uint16 (2, H, W) channel-first; tissue uint8 (H, W, 3)
        RGB; stack uint16 (Z, H, W).
    mask: uint8 spatial labels, 1 = background (see ``napari_pointseg.synthetic``).
    points: example clicks in acquisition order.
    channel_axis: None (single channel), 0 (cells) or -1 (tissue RGB).
    """

    image: np.ndarray
    mask: np.ndarray
    points: PointSet
    channel_axis: int | None
    rgb: bool
    image_path: Path
    mask_path: Path
    points_path: Path

    def _as_tuple(self) -> tuple:
        return tuple(getattr(self, f) for f in self.__dataclass_fields__)

    def __iter__(self):
        return iter(self._as_tuple())

    def __getitem__(self, index):
        return self._as_tuple()[index]

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)


def sample_dir() -> Path:
    """Folder holding the sample files (installed copy first, else the repository's)."""
    installed = Path(__file__).parent / "_sample_data"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "sample_data"


def sample_paths(name: str) -> tuple[Path, Path, Path]:
    """(image, mask, points) paths of sample ``name``; InputError for an unknown name."""
    if name not in SAMPLE_NAMES:
        raise InputError(f"unknown sample {name!r}; available samples: {', '.join(SAMPLE_NAMES)}")
    folder = sample_dir()
    return folder / f"{name}_image.tif", folder / f"{name}_mask.tif", folder / f"{name}_points.csv"


def load_sample(name: str) -> Sample:
    """Read sample ``name`` (one of SAMPLE_NAMES). Raises InputError for an unknown name or
    missing files (regenerate them with ``python sample_data/make_samples.py``)."""
    import tifffile

    image_path, mask_path, points_path = sample_paths(name)
    missing = [p.name for p in (image_path, mask_path, points_path) if not p.is_file()]
    if missing:
        raise InputError(f"sample {name!r}: missing {', '.join(missing)} in {sample_dir()}; "
                         "regenerate with `python sample_data/make_samples.py`")
    channel_axis, rgb = _LAYOUT[name]
    return Sample(
        image=tifffile.imread(image_path),
        mask=tifffile.imread(mask_path),
        points=PointSet.from_csv(points_path),
        channel_axis=channel_axis,
        rgb=rgb,
        image_path=image_path,
        mask_path=mask_path,
        points_path=points_path,
    )
