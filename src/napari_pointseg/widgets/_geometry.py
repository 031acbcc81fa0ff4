"""Geometry of the image being annotated: its channel axis, spatial shape and displayed slice.

napari shows an image layer with all its array axes except RGB's colour axis; the network sees
its spatial axes (2D or a 3D stack) with channels apart. `ImageGeometry` translates between
the two for one image layer and one "Channel axis" choice. It reads the layer only (main
thread) and imports no Qt.
"""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError
from ..core.images import guess_channel_axis


class ImageGeometry:
    """``layer`` (a napari Image layer) seen with the channel choice ``channel_choice``:
    "auto", "none" or an axis number as text (the "Channel axis" option)."""

    def __init__(self, layer, channel_choice: str = "auto"):
        self.layer = layer
        self.channel_choice = channel_choice

    def data_shape(self) -> tuple[int, ...]:
        """Shape of the layer's array (level 0 of a multiscale image)."""
        data = self.layer.data
        if isinstance(data, (list, tuple)):
            data = data[0]
        return tuple(int(size) for size in data.shape)

    def channel_axis(self):
        """'auto' resolved: the channel axis of the image array, or None."""
        shape = self.data_shape()
        if self.layer.rgb:
            return len(shape) - 1
        if self.channel_choice == "none":
            return None
        if self.channel_choice == "auto":
            return guess_channel_axis(shape, False)
        return int(self.channel_choice)

    def layer_channel_axis(self):
        """The channel axis among the *layer's* dims (RGB has none: napari hides it)."""
        return None if self.layer.rgb else self.channel_axis()

    def spatial_shape(self) -> tuple[int, ...]:
        """(H, W) or (Z, H, W); InputError when the channel choice leaves another count."""
        shape = list(self.data_shape())
        axis = self.channel_axis()
        if axis is not None:
            shape.pop(axis)
        if len(shape) not in (2, 3):
            raise InputError(
                f"image shape {tuple(self.data_shape())} has {len(shape)} spatial "
                "axes after removing channels; 2D or 3D images are supported "
                "(check Advanced options > Channel axis)"
            )
        return tuple(shape)

    def is_stack(self) -> bool:
        """True for a 3D stack (False also when the shape is not usable)."""
        try:
            return len(self.spatial_shape()) == 3
        except InputError:
            return False

    def spatial_transform(self) -> dict:
        """``scale`` / ``translate`` of the spatial axes, for layers shaped like the prediction."""
        axis = self.layer_channel_axis()
        keep = [i for i in range(self.layer.ndim) if i != axis]
        return {
            "scale": [self.layer.scale[i] for i in keep],
            "translate": [self.layer.translate[i] for i in keep],
        }

    def plane_at(self, world_point) -> int:
        """Index of the slice of a 3D stack shown at viewer position ``world_point`` (0 for 2D)."""
        try:
            spatial = self.spatial_shape()
        except InputError:
            return 0
        if len(spatial) != 3:
            return 0
        axis = self.layer_channel_axis()
        z_axis = next(i for i in range(self.layer.ndim) if i != axis)
        pos = self.layer.world_to_data(world_point)
        return int(np.clip(round(float(pos[z_axis])), 0, spatial[0] - 1))

    def point_size(self) -> float:
        """A click marker size that stays visible on small and large images."""
        try:
            height, width = self.spatial_shape()[-2:]
        except InputError:
            return 6.0
        return float(np.clip(max(height, width) / 80, 3, 12))

    def to_layer_coords(self, coords: np.ndarray) -> np.ndarray:
        """Spatial coordinates (N, 2|3) as coordinates of the layer's dims (channel axis back)."""
        axis = self.layer_channel_axis()
        if axis is not None:
            coords = np.insert(coords, axis, 0, axis=1)
        return coords

    def to_spatial_coords(self, data: np.ndarray) -> np.ndarray:
        """Coordinates in the layer's dims (N, ndim) without the channel axis."""
        axis = self.layer_channel_axis()
        if axis is not None and data.shape[1] == self.layer.ndim:
            data = np.delete(data, axis, axis=1)
        return data
