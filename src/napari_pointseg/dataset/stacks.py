"""3D stacks in the dataset pipeline: a stack is treated as its 2D planes.

A stack is an image with three spatial axes ``(Z, H, W)`` (grey, or with a channel axis: see
`core.images.to_channels_first`; with ``channel_axis='auto'`` a first axis of at most 4 is
read as channels, so a 3-plane grey stack needs ``--channel-axis none``). Its annotation uses
the conventions of the rest of the plug-in:

* points: the CSV of `core.points` with a ``z`` column (``order,label,z,y,x``), ``z`` the
  plane index (rounded to the nearest plane), as *Annotate & train* writes it for a stack;
* mask: a label stack of the same ``(Z, H, W)`` shape (one mask per plane).

Stage 1 pseudo-labels every *annotated* plane on its own (one fresh network per plane, one
job per plane, so planes run in parallel like images): a plane with at least one point
(source ``points``), a mask plane with at least two label values (source ``oracle``: the
oracle needs two classes), or every mask plane (source ``mask``, the full-mask reference).
Planes without annotation are not pseudo-labelled. Each annotated plane is one training item
of the dataset network, normalised with the percentiles of its whole stack (as the bundle's
prediction normalises a stack); the test stage predicts whole stacks plane by plane.

Plane items are named ``NAME_zNNN`` (NNN: the plane index, zero-padded to at least 3 digits),
so their stage-1 files are ``pseudo/NAME_zNNN_labels.tif`` etc.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..core.errors import InputError
from .layout import Item, Skip


def spatial_shape(shape: tuple[int, ...], channel_axis="auto") -> tuple[int, ...]:
    """The spatial axes of an image of ``shape`` (the channel axis left out)."""
    from ..core.images import guess_channel_axis

    ch = guess_channel_axis(tuple(shape)) if channel_axis == "auto" else channel_axis
    ch = None if ch is None else int(ch) % len(shape)
    return tuple(int(n) for i, n in enumerate(shape) if i != ch)


def is_stack(item: Item, channel_axis="auto") -> bool:
    """True if ``item.image`` is a 3D stack, from the file header (pixels are not read).

    An unreadable file (or a bad channel axis) is not a stack here: the job that reads it
    reports why it is skipped.
    """
    from ..core.images import probe_image

    try:
        shape, _ = probe_image(item.image)
        return len(spatial_shape(shape, channel_axis)) == 3
    except (InputError, OSError, ValueError):
        return False


def plane_name(name: str, z: int, n_planes: int) -> str:
    """``NAME_zNNN``: the item name of plane ``z`` of a stack of ``n_planes`` planes."""
    return f"{name}_z{z:0{max(3, len(str(n_planes - 1)))}d}"


def plane_points(points, z: int):
    """The points of plane ``z`` as a 2D PointSet (``y, x``; click order kept, renumbered).

    points: a 3D PointSet (``z, y, x``); a point belongs to the plane its rounded ``z`` names.
    """
    from ..core.points import PointSet

    if points.ndim != 3:
        raise InputError(
            f"a stack needs points with a z column (order,label,z,y,x), got {points.ndim} coordinates"
        )
    on = np.rint(points.coords[:, 0]).astype(np.int64) == z
    return PointSet(points.coords[on, 1:], points.labels[on], points.order[on]).renumbered()


def stack_cf(image: np.ndarray, channel_axis="auto") -> np.ndarray:
    """A stack as channels-first ``(C, Z, H, W)`` (same dtype). InputError if not a stack."""
    from ..core.images import to_channels_first

    cf = to_channels_first(image, channel_axis)
    if cf.ndim != 4:
        raise InputError(f"expected a 3D stack, got an image of spatial shape {tuple(cf.shape[1:])}")
    return cf


def annotated_planes(item: Item, source: str, channel_axis="auto") -> list[int]:
    """Sorted indices of the planes of stack ``item`` that stage 1 pseudo-labels.

    source: the item's resolved source: 'points' (planes holding at least one point),
    'oracle' (mask planes with >= 2 label values) or 'mask' (every plane). Reads the points
    CSV or the mask (not the image's pixels). InputError when the points or the mask do not
    fit the stack (2D points, points outside it, a mask of another shape).
    """
    from ..core.images import probe_image, read_mask
    from ..core.points import PointSet

    shape, _ = probe_image(item.image)
    spatial = spatial_shape(shape, channel_axis)
    if source == "points":
        points = PointSet.from_csv(item.points)
        points.validate(spatial, min_classes=1)
        return sorted({int(z) for z in np.rint(points.coords[:, 0]).astype(np.int64)})
    mask = read_mask(item.mask)
    if tuple(mask.shape) != spatial:
        raise InputError(f"mask shape {tuple(mask.shape)} differs from the stack's spatial shape {spatial}")
    if source == "mask":
        return list(range(spatial[0]))
    return [z for z in range(spatial[0]) if len(np.unique(mask[z])) >= 2]


def expand_stacks(items: list[Item], prefer: str, channel_axis="auto") -> tuple[list[Item], list[Skip]]:
    """Stage-1 job items: 2D images unchanged, every stack replaced by its annotated planes.

    prefer: the run's source option ('auto', 'points', 'oracle' or 'mask'). Returns
    (items, skipped): a stack whose annotation does not fit it, or that has no annotated
    plane, becomes a Skip with the reason.
    """
    from ..core.images import probe_image

    out, skipped = [], []
    for it in items:
        if not is_stack(it, channel_axis):
            out.append(it)
            continue
        source = ("mask" if it.mask else None) if prefer == "mask" else it.source(prefer)
        try:
            planes = annotated_planes(it, source, channel_axis)
        except InputError as e:
            skipped.append(Skip(it.name, f"3D stack: {e}"))
            continue
        if not planes:
            skipped.append(Skip(it.name, "3D stack without an annotated plane"))
            continue
        n = spatial_shape(probe_image(it.image)[0], channel_axis)[0]
        out += [replace(it, name=plane_name(it.name, z, n), plane=z, stack=it.name) for z in planes]
    return out, skipped


def read_plane(item: Item, channel_axis="auto") -> np.ndarray:
    """Plane ``item.plane`` of the stack ``item.image`` as a channels-first ``(C, H, W)``
    array (the file's dtype). InputError if the file is not a stack or lacks the plane."""
    from ..core.images import read_image

    cf = stack_cf(read_image(item.image), channel_axis)
    if not 0 <= item.plane < cf.shape[1]:
        raise InputError(f"plane {item.plane} does not exist in a stack of {cf.shape[1]} planes")
    return np.ascontiguousarray(cf[:, item.plane])


def checked_cf(
    image: np.ndarray, channel_axis="auto", *, who: str, n_channels: int | None = None
) -> np.ndarray:
    """Channels-first ``(C, H, W)`` of a 2D image or ``(C, Z, H, W)`` of a 3D stack, same
    dtype. InputError for another dimensionality or a channel count other than ``n_channels``
    (None: any); ``who`` names the step in the message."""
    from ..core.checks import plane_image

    cf = stack_cf_or_none(image, channel_axis)
    if cf is None:
        return plane_image(image, channel_axis, who=who, n_channels=n_channels)
    if n_channels is not None and cf.shape[0] != n_channels:
        raise InputError(
            f"{cf.shape[0]} channel(s), {who} has {n_channels} (stack shape {tuple(int(n) for n in image.shape)})"
        )
    return cf


def stack_cf_or_none(image: np.ndarray, channel_axis="auto") -> np.ndarray | None:
    """`stack_cf` of a 3D stack, None for anything else (a 2D image, or an error that the 2D
    checks will name)."""
    try:
        return stack_cf(image, channel_axis)
    except InputError:
        return None


def plane_for_display(image: np.ndarray, z: int, channel_axis="auto") -> np.ndarray:
    """Plane ``z`` of a raw stack as napari shows a 2D image: (H, W) grey or (H, W, C)."""
    plane = stack_cf(image, channel_axis)[:, z]
    return plane[0] if plane.shape[0] == 1 else np.moveaxis(plane, 0, -1)
