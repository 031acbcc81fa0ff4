"""Reading images, finding the channel axis, percentile normalisation, padding.

Conventions: after `to_channels_first` an image is ``(C, *spatial)`` with ``spatial`` 2D
``(H, W)`` or 3D ``(Z, H, W)``. Normalised images are float32, roughly in [0, 1] per channel
(1st percentile -> 0, 99.8th -> 1, values outside kept but clipped to [-1, 2]).
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .points import as_int64
from .serial import dataclass_from_dict, dataclass_to_dict

_TIFF = {".tif", ".tiff"}


@contextmanager
def _reading(path: Path):
    """Any reader failure inside becomes one InputError line. The readers' own log lines and
    warnings about a broken file would come before (and say less than) that line: silenced."""
    log = logging.getLogger("tifffile")
    was_disabled, log.disabled = log.disabled, True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file for the user
        msg = " ".join(str(e).split())[:200]
        raise InputError(f"cannot read image {path}: {type(e).__name__}: {msg}") from None
    finally:
        log.disabled = was_disabled


def read_image(path: str | Path) -> np.ndarray:
    """Read a TIFF (tifffile) or a PNG/JPEG/... (scikit-image). InputError when it cannot."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file not found: {path}")
    with _reading(path):
        if path.suffix.lower() in _TIFF:
            import tifffile

            arr = tifffile.imread(path)
        else:
            from skimage import io

            arr = io.imread(path)
        arr = np.asarray(arr)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"image {path} has unsupported dtype {arr.dtype}")
    if arr.size == 0:
        raise InputError(f"cannot read image {path}: no pixel data (shape {arr.shape})")
    return arr


def probe_image(path: str | Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of an image file from its header, without reading the pixels: a cheap
    up-front check that every input of a batch is an image at all. InputError otherwise."""
    path = Path(path)
    with _reading(path):
        if path.suffix.lower() in _TIFF:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape, dtype = tuple(series.shape), np.dtype(series.dtype)
        else:
            from PIL import Image

            with Image.open(path) as im:
                w, h = im.size
                bands = len(im.getbands())
                shape = (h, w) if bands == 1 else (h, w, bands)
                dtype = np.dtype(
                    np.uint16
                    if im.mode.startswith("I;16")
                    else np.int32
                    if im.mode == "I"
                    else np.float32
                    if im.mode == "F"
                    else np.uint8
                )
    if dtype.kind not in "biuf":
        raise InputError(f"image {path} has unsupported dtype {dtype}")
    if not shape or min(shape) < 1:
        raise InputError(f"cannot read image {path}: no pixel data (shape {shape})")
    return shape, dtype


def read_mask(path: str | Path) -> np.ndarray:
    """Read a label mask (integer values, one per class) as int64. InputError for fractions,
    inf / NaN or values outside the int64 range."""
    m = read_image(path)
    try:  # exactly, or refused: a uint64 / float mask must not wrap around silently
        return as_int64(m, "mask")
    except InputError as e:
        raise InputError(f"mask {path}: {e}") from None


def guess_channel_axis(shape: tuple[int, ...], rgb: bool | None = None) -> int | None:
    """Guess which axis holds channels: None for a grey 2D image or a 3D stack.

    A last axis of size <= 4 is channels (RGB, RGBA, few-channel, napari's ``rgb``); otherwise
    a first axis of size <= 4 in a 3D/4D array is channels; otherwise there are none.
    """
    if rgb:
        return len(shape) - 1
    if len(shape) == 2:
        return None
    if shape[-1] <= 4:
        return len(shape) - 1
    if shape[0] <= 4:
        return 0
    return None


def to_channels_first(
    image: np.ndarray, channel_axis: int | str | None = "auto", rgb: bool | None = None
) -> np.ndarray:
    """Return ``image`` as ``(C, *spatial)`` (same dtype). ``channel_axis``: 'auto', None or int.

    Raises InputError for unsupported dimensionality (spatial must be 2D or 3D) or non-finite
    values.
    """
    image = np.asarray(image)
    if image.ndim < 2:
        raise InputError(f"image must be at least 2D, got shape {image.shape}")
    if channel_axis == "auto":
        channel_axis = guess_channel_axis(image.shape, rgb)
    if channel_axis is None:
        out = image[None]
    else:
        ax = int(channel_axis)
        if not -image.ndim <= ax < image.ndim:
            raise InputError(f"channel axis {ax} does not exist for shape {image.shape}")
        out = np.moveaxis(image, ax, 0)
    if out.ndim - 1 not in (2, 3):
        raise InputError(
            f"unsupported image dimensionality: shape {image.shape} gives "
            f"{out.ndim - 1} spatial axes (2D or 3D images are supported)"
        )
    if min(out.shape[1:]) < 1:
        raise InputError(f"image has an empty axis: shape {image.shape}")
    if out.dtype.kind == "f" and not np.all(np.isfinite(out)):
        raise InputError("image contains NaN or infinite values")
    return out


@dataclass
class Normalisation:
    """Per-channel affine normalisation ``(x - low) / (high - low)``."""

    low: list[float]
    high: list[float]

    def apply(self, image_cf: np.ndarray) -> np.ndarray:
        """(C, *spatial) any dtype -> float32, clipped to [-1, 2]."""
        low = np.asarray(self.low, np.float32).reshape((-1,) + (1,) * (image_cf.ndim - 1))
        high = np.asarray(self.high, np.float32).reshape(low.shape)
        out = (image_cf.astype(np.float32) - low) / np.maximum(high - low, 1e-6)
        return np.clip(out, -1.0, 2.0, out=out)

    def to_dict(self) -> dict:
        """{"low": [float] * C, "high": [float] * C}."""
        return dataclass_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Normalisation":
        """The inverse of `to_dict` (values kept as given: the bundle reader checks them);
        TypeError when low or high is missing."""
        return dataclass_from_dict(cls, d, convert={"low": list, "high": list})


def fit_normalisation(image_cf: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.8) -> Normalisation:
    """Robust percentiles per channel of a ``(C, *spatial)`` image (subsampled for speed)."""
    lows, highs = [], []
    for ch in image_cf:
        flat = ch.reshape(-1)
        if flat.size > 2_000_000:
            flat = flat[:: flat.size // 2_000_000 + 1]
        lo, hi = np.percentile(flat.astype(np.float64), [low_pct, high_pct])
        if hi - lo < 1e-6:  # flat channel: fall back to the full range
            lo, hi = float(flat.min()), float(flat.max())
            if hi - lo < 1e-6:
                hi = lo + 1.0
        lows.append(float(lo))
        highs.append(float(hi))
    return Normalisation(lows, highs)


def padded_shape(shape, multiple: int) -> tuple[int, ...]:
    """Each size of ``shape`` rounded up to a multiple of ``multiple`` (the network stride):
    the (H, W) a plane has after `pad_to_multiple`."""
    return tuple(-(-int(n) // multiple) * multiple for n in shape)


def pad_to_multiple(x: np.ndarray, multiple: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad the last two axes of ``x`` up to a multiple of ``multiple``.

    Returns the padded array and ``(pad_h, pad_w)`` added at the bottom / right; undo with
    ``x[..., :H, :W]``.
    """
    h, w = x.shape[-2:]
    ph, pw = (n - s for n, s in zip(padded_shape((h, w), multiple), (h, w)))
    if ph == 0 and pw == 0:
        return x, (0, 0)
    mode = "reflect" if (h > ph and w > pw) else "edge"
    widths = [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)]
    return np.pad(x, widths, mode=mode), (ph, pw)
