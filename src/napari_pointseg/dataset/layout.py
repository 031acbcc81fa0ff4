"""Finding the images of a data-set folder and what annotates each of them.

Folder layout (matching is by file stem, ``img_000.tif`` <-> ``img_000.csv``)::

    DATA/images/img_000.tif     the images (TIFF, PNG, JPEG...); or the images directly in DATA/
    DATA/points/img_000.csv     clicked points (order,label,y,x), if a human annotated it
    DATA/masks/img_000.tif      ground-truth label image (oracle simulation, metrics)
    TEST/images/..., TEST/masks/...   optional held-out test split (same layout)

An image is *annotatable* if it has a points CSV (``source='points'``) or a mask (the oracle
reveals pixels of it, ``source='oracle'``). Problems with a single image never stop the run:
they become `Skip` records with a reason; only "nothing usable at all" raises InputError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import InputError

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"}
SOURCES = ("auto", "points", "oracle")


@dataclass
class Item:
    """One image of the data set. Paths are None when the file does not exist."""

    name: str
    image: Path
    points: Path | None = None
    mask: Path | None = None

    def source(self, prefer: str = "auto") -> str | None:
        """'points', 'oracle' or None (nothing to learn from). ``prefer``: one of SOURCES;
        'auto' uses the points when a CSV exists (a human's clicks), else the mask."""
        if prefer == "points":
            return "points" if self.points else None
        if prefer == "oracle":
            return "oracle" if self.mask else None
        return "points" if self.points else "oracle" if self.mask else None


@dataclass
class Skip:
    """An input left out of the run, and why (shown in the log and the summary)."""

    name: str
    reason: str


@dataclass
class Listing:
    """Result of `scan_folder`: usable items (sorted by name) and skipped inputs."""

    items: list[Item] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)


def stem(path: Path) -> str:
    """File name without any suffixes (``a.ome.tif`` -> ``a``)."""
    return path.name.split(".")[0]


def _files(folder: Path, suffixes) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    out = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."):
            out.setdefault(stem(p), p)
    return out


def scan_folder(root: str | Path, *, require_annotation: bool = False) -> Listing:
    """List the images under ``root`` and their points / masks (see module docstring).

    require_annotation: skip images with neither points nor mask (a test folder needs masks
    for metrics but may be predicted without them, so the caller decides).
    Raises InputError if ``root`` is missing or holds no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder not found: {root}")
    image_dir = root / "images" if (root / "images").is_dir() else root
    images = _files(image_dir, IMAGE_SUFFIXES)
    if not images:
        raise InputError(f"no images found in {image_dir} (expected {', '.join(sorted(IMAGE_SUFFIXES))} files)")
    points = _files(root / "points", {".csv"})
    masks = _files(root / "masks", IMAGE_SUFFIXES)
    listing = Listing()
    for name, path in images.items():
        item = Item(name, path, points.get(name), masks.get(name))
        if require_annotation and item.source() is None:
            listing.skipped.append(Skip(name, "no points CSV and no mask"))
            continue
        listing.items.append(item)
    for name in sorted(set(points) - set(images)):
        listing.skipped.append(Skip(name, f"points file {points[name].name} names no image in {image_dir}"))
    for name in sorted(set(masks) - set(images)):
        listing.skipped.append(Skip(name, f"mask {masks[name].name} has no image"))
    return listing
