"""The settings that travel together from every interface to a trainer.

Whether the CLI, a widget, the dataset pipeline or an experiment trains on one image, the same
five choices decide what network comes out, apart from the points: how the raw array is read
(``channel_axis``, ``rgb``), the fixed filter bank that makes the input channels, the network
(``ModelSpec``), the recipe (``TrainConfig``) and the device. `TrainSetup` holds them once, so
that `make_trainer`, `run_oracle`, `run_active` and `run_correcting_user` take one value instead
of the same six keyword arguments each.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .features import FilterBank
from .inputs import PreparedImage
from .models import ModelSpec
from .trainer import TrainConfig


@dataclass(frozen=True)
class TrainSetup:
    """How an image and its points become a trained network (everything but the points).

    channel_axis: 'auto', None (grey) or the index of the channel axis of the raw array.
    rgb: napari's rgb flag (channels last) or None. filter_bank: the fixed input filters
    (``FilterBank(())``: raw channels only). spec / config: the network and the recipe.
    device: 'auto', 'cpu', 'cuda', ... (see `core.device.choose_device`).
    Frozen and picklable: a Dask worker gets it as it is.
    """

    channel_axis: object = "auto"
    rgb: bool | None = None
    spec: ModelSpec = field(default_factory=ModelSpec)
    config: TrainConfig = field(default_factory=TrainConfig)
    device: str = "auto"
    filter_bank: FilterBank = field(default_factory=FilterBank)

    def __post_init__(self):
        # None means "the library default", as the command line and the widgets pass them
        for name, default in (("spec", ModelSpec), ("config", TrainConfig), ("filter_bank", FilterBank)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default())

    def prepare(self, image: np.ndarray) -> PreparedImage:
        """The network input of a raw ``image`` (any layout `core.images` reads)."""
        return PreparedImage(image, self.channel_axis, self.rgb, filter_bank=self.filter_bank)

    def but(self, **changes) -> TrainSetup:
        """A copy with some fields changed, e.g. ``setup.but(device='cpu')``."""
        return replace(self, **changes)
