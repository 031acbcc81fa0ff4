"""A fixed (not learned, not pretrained) filter bank as extra network input channels.

The random forest that ilastik-style tools use sees Gaussian, gradient and Laplacian/Hessian
responses at several scales. Giving the same responses to a randomly initialised network lets
it start from what the forest sees instead of having to learn multi-scale filters from a few
hundred labelled pixels. Nothing here is trained or downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

DEFAULT_SIGMAS = (1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class FilterBank:
    """Which responses to compute per input channel.

    ``sigmas`` empty means "raw channels only". Per sigma: smoothed intensity, gradient
    magnitude, Laplacian of Gaussian, and the two Hessian eigenvalues (4 + 1 responses incl.
    the raw channel).
    """

    sigmas: tuple[float, ...] = DEFAULT_SIGMAS

    @property
    def per_channel(self) -> int:
        return 1 + 5 * len(self.sigmas)

    def n_outputs(self, n_channels: int) -> int:
        return n_channels * self.per_channel

    def to_dict(self) -> dict:
        return {"sigmas": [float(s) for s in self.sigmas]}

    @classmethod
    def from_dict(cls, d: dict | None) -> "FilterBank":
        return cls(tuple(float(s) for s in (d or {}).get("sigmas", ())))

    def apply(self, image_cf: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` float32 normalised image -> ``(C * per_channel, H, W)`` float32.

        Responses are scaled by sigma (scale-normalised derivatives) so that every channel has
        a similar range; the raw channel comes first.
        """
        out = []
        for ch in np.asarray(image_cf, dtype=np.float32):
            out.append(ch)
            for s in self.sigmas:
                g = ndi.gaussian_filter(ch, s, mode="reflect")
                gy = ndi.gaussian_filter(ch, s, order=(1, 0), mode="reflect")
                gx = ndi.gaussian_filter(ch, s, order=(0, 1), mode="reflect")
                hyy = ndi.gaussian_filter(ch, s, order=(2, 0), mode="reflect")
                hxx = ndi.gaussian_filter(ch, s, order=(0, 2), mode="reflect")
                hxy = ndi.gaussian_filter(ch, s, order=(1, 1), mode="reflect")
                trace = hxx + hyy
                disc = np.sqrt(((hxx - hyy) * 0.5) ** 2 + hxy**2)
                out.append(g)
                out.append(np.hypot(gy, gx) * s)
                out.append(trace * s * s)
                out.append((trace * 0.5 + disc) * s * s)
                out.append((trace * 0.5 - disc) * s * s)
        return np.stack(out).astype(np.float32, copy=False)
