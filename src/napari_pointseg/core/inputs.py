"""Network input: normalised channels + filter-bank responses, per 2D plane.

A 2D image is one plane; a 3D stack ``(Z, H, W)`` has Z planes and the network works plane by
plane (training uses the planes that hold points). Planes are computed lazily and cached, so a
large stack only pays for the planes it uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .features import FilterBank
from .images import Normalisation, fit_normalisation, to_channels_first
from .serial import dataclass_from_dict, dataclass_to_dict


@dataclass
class InputSpec:
    """How raw pixels become network input (stored in the bundle).

    filter_bank: responses per channel; feature_mean / feature_std: per input channel
    standardisation fitted on the training image and reused on any image the model predicts.
    """

    n_channels: int
    filter_bank: FilterBank = field(default_factory=FilterBank)
    feature_mean: list[float] | None = None
    feature_std: list[float] | None = None

    @property
    def in_channels(self) -> int:
        return self.filter_bank.n_outputs(self.n_channels)

    def to_dict(self) -> dict:
        """{"n_channels", "filter_bank": FilterBank.to_dict(), "feature_mean", "feature_std"}."""
        return dataclass_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        """The inverse of `to_dict`; no filter_bank means raw channels (FilterBank.from_dict(None))."""
        return dataclass_from_dict(
            cls,
            d,
            legacy={"filter_bank": None},
            convert={"n_channels": int, "filter_bank": FilterBank.from_dict},
        )


class PreparedImage:
    """An image ready for the network.

    image: raw array; channel_axis: 'auto' / None / int; rgb: napari's rgb flag (channel last).
    normalisation: reuse a stored one, else fitted on this image (percentiles).
    spec: an InputSpec to follow (from a bundle); else a new one with ``filter_bank``.
    ``plane(z)`` -> float32 (in_channels, H, W).
    """

    def __init__(
        self,
        image: np.ndarray,
        channel_axis="auto",
        rgb: bool | None = None,
        filter_bank: FilterBank | None = None,
        spec: InputSpec | None = None,
        normalisation: Normalisation | None = None,
    ):
        cf = to_channels_first(image, channel_axis, rgb)
        self.raw_cf = cf
        self.n_channels = cf.shape[0]
        self.spatial_shape = tuple(cf.shape[1:])
        self.is_3d = len(self.spatial_shape) == 3
        self.normalisation = normalisation or fit_normalisation(cf)
        if spec is None:
            spec = InputSpec(self.n_channels, filter_bank or FilterBank())
        elif spec.n_channels != self.n_channels:
            from .errors import InputError

            raise InputError(
                f"the model expects {spec.n_channels} channel(s), the image has {self.n_channels}"
            )
        self.spec = spec
        self._cache: dict[int, np.ndarray] = {}
        self._unscaled: dict[int, np.ndarray] = {}
        if spec.feature_mean is None:
            z_ref = self.n_planes // 2
            ref = self._raw_plane(z_ref)
            flat = ref.reshape(ref.shape[0], -1)
            spec.feature_mean = [float(v) for v in flat.mean(1)]
            spec.feature_std = [float(max(v, 1e-4)) for v in flat.std(1)]
            # the filter bank is the costly part: `plane` standardises this one in place
            self._unscaled[z_ref] = ref

    @property
    def n_planes(self) -> int:
        return self.spatial_shape[0] if self.is_3d else 1

    @property
    def plane_shape(self) -> tuple[int, int]:
        return tuple(self.spatial_shape[-2:])

    def _raw_plane(self, z: int) -> np.ndarray:
        src = self.raw_cf[:, z] if self.is_3d else self.raw_cf
        return self.spec.filter_bank.apply(self.normalisation.apply(src))

    def plane(self, z: int = 0) -> np.ndarray:
        """float32 (in_channels, H, W) standardised network input of plane ``z``."""
        if z not in self._cache:
            x = self._unscaled.pop(z, None)
            if x is None:
                x = self._raw_plane(z)
            mean = np.asarray(self.spec.feature_mean, np.float32)[:, None, None]
            std = np.asarray(self.spec.feature_std, np.float32)[:, None, None]
            x -= mean
            x /= std
            self._cache[z] = x
        return self._cache[z]
