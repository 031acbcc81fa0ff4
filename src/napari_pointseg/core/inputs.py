"""Network input: normalised channels + filter-bank responses, per 2D plane.

A 2D image is one plane; a 3D stack ``(Z, H, W)`` has Z planes and the network works plane by
plane (training uses the planes that hold points). Planes are computed lazily and cached, so a
large stack only pays for the planes it uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .features import FilterBank
from .forest_input import ClickForest, ForestSpec, forest_features
from .images import Normalisation, fit_normalisation, to_channels_first
from .serial import dataclass_from_dict, dataclass_to_dict


@dataclass
class InputSpec:
    """How raw pixels become network input (stored in the bundle).

    filter_bank: responses per channel; feature_mean / feature_std: per input channel
    standardisation of those responses, fitted on the training image and reused on any image
    the model predicts. forest: the click forest's probability channels, which follow the
    filter bank's (`forest_input`); None: none.
    """

    n_channels: int
    filter_bank: FilterBank = field(default_factory=FilterBank)
    feature_mean: list[float] | None = None
    feature_std: list[float] | None = None
    forest: ForestSpec | None = None

    @property
    def bank_channels(self) -> int:
        """Input channels from the filter bank (the standardised ones)."""
        return self.filter_bank.n_outputs(self.n_channels)

    @property
    def in_channels(self) -> int:
        return self.bank_channels + (self.forest.classes if self.forest else 0)

    def to_dict(self) -> dict:
        """{"n_channels", "filter_bank": FilterBank.to_dict(), "feature_mean", "feature_std",
        "forest": ForestSpec.to_dict() or None}."""
        return dataclass_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "InputSpec":
        """The inverse of `to_dict`; no filter_bank means raw channels (FilterBank.from_dict(None)),
        no forest none."""
        return dataclass_from_dict(
            cls,
            d,
            legacy={"filter_bank": None},
            convert={"n_channels": int, "filter_bank": FilterBank.from_dict, "forest": ForestSpec.from_dict},
        )


class PreparedImage:
    """An image ready for the network.

    image: raw array; channel_axis: 'auto' / None / int; rgb: napari's rgb flag (channel last).
    normalisation: reuse a stored one, else fitted on this image (percentiles).
    spec: an InputSpec to follow (from a bundle); else a new one with ``filter_bank``.
    forest_data: (features (N, F), class indices (N,)) at the clicks of a bundle whose spec
    has a forest: refitted here. A trainer fits its own with `use_forest` / `fit_forest`.
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
        forest_data: tuple[np.ndarray, np.ndarray] | None = None,
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
        self._forest: ClickForest | None = None
        self._forest_feats: dict[int, np.ndarray] = {}
        self._forest_planes: dict[int, np.ndarray] = {}
        self._forest_at: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._forest_oob = True
        if spec.forest is not None:
            self._forest = ClickForest(spec.forest)
            if forest_data is not None:
                self._forest.fit(*forest_data, oob=False)
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
        """float32 (in_channels, H, W) network input of plane ``z``: the standardised filter
        bank, then the forest's channels if the spec has a forest."""
        bank = self._bank_plane(z)
        if self._forest is None:
            return bank
        return np.concatenate([bank, self._forest_plane(z)])

    # -- the click forest ---------------------------------------------------------------------
    def use_forest(self, spec: ForestSpec | None) -> None:
        """Give (or, with None, take away) this image's input the click forest's channels,
        unfitted (neutral) until `fit_forest`. Changes ``self.spec`` (in_channels)."""
        self.spec.forest = spec
        self._forest = ClickForest(spec) if spec is not None else None
        self._forest_planes.clear()
        self._forest_at.clear()

    @property
    def forest(self) -> ClickForest | None:
        return self._forest

    def colour_share(self) -> float:
        """Share of the normalised middle plane's variance that lies off the channel mean: 0
        for one channel or copies of one (a grey image stored as RGB: ~0.0002), 0.003-0.4 on
        the colour development images."""
        if self.n_channels < 2:
            return 0.0
        z = self.n_planes // 2
        x = self.normalisation.apply(self.raw_cf[:, z] if self.is_3d else self.raw_cf)
        total = float(x.var())
        return float((x - x.mean(0, keepdims=True)).var()) / total if total > 0 else 0.0

    def forest_features(self, z: int) -> np.ndarray:
        """float32 (H * W, F) forest features of plane ``z`` (cached)."""
        if z not in self._forest_feats:
            src = self.raw_cf[:, z] if self.is_3d else self.raw_cf
            self._forest_feats[z] = forest_features(self.normalisation.apply(src))
        return self._forest_feats[z]

    def fit_forest(self, planes: np.ndarray, yx: np.ndarray, cls: np.ndarray) -> None:
        """Refit the click forest on clicks at ``planes`` (N,) / ``yx`` (N, 2) with class
        indices ``cls`` (N,); every plane's forest channels are recomputed on next use."""
        # grouped by plane (stable), so that each plane's clicks are one run of the fit's rows
        order = np.argsort(np.asarray(planes, np.int64), kind="stable")
        planes = np.asarray(planes, np.int64)[order]
        flat = (yx[:, 0].astype(np.int64) * self.plane_shape[1] + yx[:, 1])[order]
        x = np.empty((len(flat), 0), np.float32)
        if len(flat):
            x = np.concatenate([self.forest_features(int(z))[flat[planes == z]] for z in np.unique(planes)])
        self._forest.fit(x, np.asarray(cls)[order])
        self._forest_planes.clear()
        self._forest_at = {
            int(z): (flat[planes == z], np.flatnonzero(planes == z)) for z in np.unique(planes)
        }

    def set_forest_out_of_bag(self, on: bool) -> bool:
        """At the clicks, the forest's out-of-bag probabilities (True, as training reads them)
        or its own (False, as every other pixel and a bundle's prediction read them). Returns
        whether that changed the channels (cheap: only the clicked pixels change)."""
        if on == self._forest_oob:
            return False
        self._forest_oob = on
        return self._forest is not None and self._forest.fitted

    def forest_probabilities(self, z: int) -> np.ndarray | None:
        """float32 (K, H, W) class probabilities (class index order) of the fitted click
        forest on plane ``z``, as its channels hold them (out of the bag at the clicks while
        `set_forest_out_of_bag` is on); None without a fitted forest."""
        if self._forest is None or not self._forest.fitted:
            return None
        return self._forest.unscaled(self._forest_plane(z))

    def _forest_plane(self, z: int) -> np.ndarray:
        """float32 (K, H, W) forest channels of plane ``z``: the forest's own probabilities
        (cached), out of the bag at this plane's clicks while `set_forest_out_of_bag` is on."""
        k = self._forest.spec.classes
        if not self._forest.fitted:
            return np.zeros((k,) + self.plane_shape, np.float32)
        if z not in self._forest_planes:
            self._forest_planes[z] = self._forest.channels(self.forest_features(z), self.plane_shape)
        out = self._forest_planes[z]
        at, rows = self._forest_at.get(z, (None, None))
        if self._forest_oob and at is not None and self._forest.oob is not None and len(at):
            out = out.copy()
            out.reshape(k, -1)[:, at] = self._forest.scaled(self._forest.oob[rows].T)
        return out

    def _bank_plane(self, z: int) -> np.ndarray:
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
