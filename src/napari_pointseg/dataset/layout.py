"""Finding the images of a data-set folder and what annotates each of them.

Folder layout (matching is by file name without its last suffix, ``img_000.tif`` <->
``img_000.csv``; ``cells.day0.tif`` and ``cells.day1.tif`` are two images)::

    DATA/images/img_000.tif     the images (TIFF, PNG, JPEG...); or the images directly in DATA/
    DATA/points/img_000.csv     clicked points (order,label,y,x), if a human annotated it
    DATA/masks/img_000.tif      ground-truth label image (oracle simulation, metrics)
    TEST/images/..., TEST/masks/...   optional held-out test split (same layout)

An image is *annotatable* if it has a points CSV (``source='points'``) or a mask (the oracle
reveals pixels of it, ``source='oracle'``). Problems with a single image never stop the run:
they become `Skip` records with a reason; only "nothing usable at all" raises InputError.
Files of one folder that share a name (``a.tif`` + ``a.png``, ``a.csv`` + ``a.CSV``) are a
clash: it is not clear which one the points or mask belong to, so all of them are skipped
with the reason (never one kept silently).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import InputError

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp"}
SOURCES = ("auto", "points", "oracle")


@dataclass
class Item:
    """One image of the data set. Paths are None when the file does not exist.

    plane / stack: set on the items stage 1 makes of the annotated planes of a 3D stack
    (`stacks.expand_stacks`): the plane index and the stack's name (``name`` is then
    ``STACK_zNNN``); None for a 2D image or a whole stack.
    """

    name: str
    image: Path
    points: Path | None = None
    mask: Path | None = None
    plane: int | None = None
    stack: str | None = None

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
    """File name without its last suffix (``cells.day0.tif`` -> ``cells.day0``): names that
    differ before the suffix stay different images. ``.ome.tif`` counts as one suffix
    (``a.ome.tif`` -> ``a``, the OME-TIFF convention)."""
    name = Path(path).stem
    if name.lower().endswith(".ome") and Path(path).suffix.lower() in (".tif", ".tiff"):
        name = name[:-4]
    return name


def _files(folder: Path, suffixes, what: str, skipped: list) -> dict[str, Path]:
    """{name: path} of the files of ``folder`` with one of ``suffixes``; names shared by
    several files are left out and listed in ``skipped`` (a clash)."""
    if not folder.is_dir():
        return {}
    groups: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."):
            groups.setdefault(stem(p).casefold(), []).append(p)
    out = {}
    for paths in groups.values():
        if len(paths) == 1:
            out[stem(paths[0])] = paths[0]
        else:
            names = ", ".join(p.name for p in paths)
            skipped.append(
                Skip(
                    stem(paths[0]),
                    f"name clash: the {what} {names} share the name '{stem(paths[0])}'; rename all but one",
                )
            )
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
    listing = Listing()
    images = _files(image_dir, IMAGE_SUFFIXES, "images", listing.skipped)
    if not images:
        if listing.skipped:
            raise InputError(f"no usable image in {image_dir}: {listing.skipped[0].reason}")
        raise InputError(
            f"no images found in {image_dir} (expected {', '.join(sorted(IMAGE_SUFFIXES))} files)"
        )
    n_image_clashes = len(listing.skipped)
    points = _files(root / "points", {".csv"}, "points files", listing.skipped)
    masks = _files(root / "masks", IMAGE_SUFFIXES, "masks", listing.skipped)
    # an image whose points or masks clash is skipped too: which file annotates it is unclear
    for s in listing.skipped[n_image_clashes:]:
        images.pop(s.name, None)
    for name, path in images.items():
        item = Item(name, path, points.get(name), masks.get(name))
        if require_annotation and item.source() is None:
            listing.skipped.append(Skip(name, "no points CSV and no mask"))
            continue
        listing.items.append(item)
    skipped_names = {s.name for s in listing.skipped}
    for name in sorted(set(points) - set(images) - skipped_names):
        listing.skipped.append(Skip(name, f"points file {points[name].name} names no image in {image_dir}"))
    for name in sorted(set(masks) - set(images) - skipped_names):
        listing.skipped.append(Skip(name, f"mask {masks[name].name} has no image"))
    return listing
