"""Input checks shared by every interface: a 2D image's channels, a ground-truth mask.

Each raises InputError with one line that names the problem; the CLI prints it, the dataset
pipeline records it as the reason an image was skipped, the widgets show it.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .images import to_channels_first


def check_2d(spatial_shape, who: str) -> None:
    """InputError unless ``spatial_shape`` is (H, W): ``who`` (e.g. "the oracle") takes 2D
    images only, grey or with channels."""
    if len(spatial_shape) != 2:
        raise InputError(
            f"{who} takes 2D images (grey or with channels), got a 3D stack of "
            f"spatial shape {_ints(spatial_shape)}; run it on each plane"
        )


def plane_image(
    image: np.ndarray, channel_axis="auto", rgb=None, *, who: str, n_channels: int | None = None
) -> np.ndarray:
    """The channels-first (C, H, W) array of a 2D image (see `images.to_channels_first` for
    ``channel_axis`` / ``rgb``), same dtype.

    who: names the step in the error ("the dataset pipeline"). n_channels: the channel count
    every image of the run must have (None: any). InputError for a 3D stack or another count.
    """
    cf = to_channels_first(image, channel_axis, rgb)
    check_2d(cf.shape[1:], who)
    if n_channels is not None and cf.shape[0] != n_channels:
        raise InputError(
            f"{cf.shape[0]} channel(s), {who} has {n_channels} (image shape {_ints(np.shape(image))})"
        )
    return cf


def check_mask(mask: np.ndarray, spatial_shape, labels=None, *, min_classes: int = 2) -> np.ndarray:
    """A ground-truth mask as int64, checked against its image.

    mask: label image, any integer (or integer-valued) dtype. spatial_shape: the image's
    (H, W) or (Z, H, W). labels: the point labels, if any: the mask must share a value with
    them (else the metrics would compare unrelated labels). min_classes: distinct values the
    mask must hold (0: any; a test mask may show one class).
    InputError for another shape, fractional values, too few classes or no shared label.
    """
    mask = np.asarray(mask)
    if tuple(mask.shape) != tuple(spatial_shape):
        raise InputError(
            f"mask shape {_ints(mask.shape)} differs from the image's spatial shape {_ints(spatial_shape)}"
        )
    if mask.dtype.kind not in "biu" and not np.all(np.mod(mask, 1) == 0):
        raise InputError("the mask must hold integer label values")
    values = np.unique(mask)
    if len(values) < min_classes:
        raise InputError(f"the mask holds a single class; at least {min_classes} are needed")
    if labels is not None and not np.intersect1d(values, np.asarray(labels)).size:
        raise InputError(
            f"the mask values {_few(values)} share no value with the point labels "
            f"{_few(np.unique(labels))}; the metrics would compare unrelated labels"
        )
    return mask.astype(np.int64)


def _ints(shape) -> tuple:
    return tuple(int(n) for n in shape)


def _few(values, n: int = 6) -> str:
    """``[1, 2, 3, ...]`` with plain Python integers."""
    v = [int(x) for x in values[:n]]
    return "[" + ", ".join(map(str, v)) + (", ...]" if len(values) > n else "]")
