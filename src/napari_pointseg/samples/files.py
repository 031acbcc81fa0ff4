"""The bundled sample images: image, ground-truth mask and example points per sample.

Files live in ``samples/_data`` inside the installed package (the wheel copies the repository's
``sample_data/`` there) or, in a source checkout, in ``<repo>/sample_data``. They are written by
``sample_data/make_samples.py`` from ``samples.synthetic`` and ``samples.clicks``.
`make_dataset` writes a folder of generated images in the `pointseg dataset` layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.files import write_tif_atomic
from ..core.points import PointSet
from .clicks import human_like_points
from .synthetic import SAMPLES, make_stack

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
    mask: uint8 spatial labels, 1 = background (see ``samples.synthetic``).
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
    installed = Path(__file__).parent / "_data"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[3] / "sample_data"


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
        raise InputError(
            f"sample {name!r}: missing {', '.join(missing)} in {sample_dir()}; "
            "regenerate with `python sample_data/make_samples.py`"
        )
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


# ---------------------------------------------------------------------------------------------
# generated data sets
# ---------------------------------------------------------------------------------------------


def _generate(kind: str, size: int, seed: int):
    if kind not in SAMPLES:
        raise InputError(f"unknown sample kind {kind!r}; choose one of {', '.join(SAMPLES)}")
    if kind == "stack":
        return make_stack((max(8, round(size * 24 / 256)), size, size), seed=seed)
    return SAMPLES[kind](size=size, seed=seed)


def write_tif(path: str | Path, array: np.ndarray, rgb: bool = False) -> Path:
    """Write ``array`` as a small zlib TIFF (level 9, predictor: committed sample files), RGB
    when ``rgb``, else grey pages."""
    return write_tif_atomic(
        path, array, photometric="rgb" if rgb else "minisblack", compressionargs={"level": 9}, predictor=True
    )


def make_dataset(
    out_dir: str | Path,
    kind: str = "nuclei",
    n_images: int = 12,
    size: int = 256,
    seed: int = 0,
    points_fraction: float = 0.002,
) -> list[Path]:
    """Write a small dataset of ``n_images`` synthetic images of one ``kind`` (a SAMPLES key).

    Layout: ``out_dir/images/img_000.tif``, ``out_dir/masks/img_000.tif`` (uint8 labels, see
    the generator) and ``out_dir/points/img_000.csv`` (human-like clicks, PointSet CSV).
    Images are ``size`` x ``size`` (stacks: (round(24 * size / 256), size, size), at least 8
    slices); each image has its own seed derived from ``seed`` and its index.
    Returns the image paths, in order.
    """
    out_dir = Path(out_dir)
    paths = []
    for i in range(n_images):
        image_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        image, mask = _generate(kind, size, image_seed)
        coords, labels = human_like_points(mask, points_fraction, seed=image_seed)
        name = f"img_{i:03d}"
        write_tif(out_dir / "images" / f"{name}.tif", image, rgb=kind == "tissue")
        write_tif(out_dir / "masks" / f"{name}.tif", mask)
        PointSet(coords, labels).to_csv(out_dir / "points" / f"{name}.csv")
        paths.append(out_dir / "images" / f"{name}.tif")
    return paths
