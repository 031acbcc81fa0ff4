"""PNG figures: image, ground truth, points and prediction side by side (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .images import fit_normalisation, to_channels_first
from .points import PointSet

# Class colours shared with the napari widget: label value v uses PALETTE[(v - 1) % len].
PALETTE = [
    (0.90, 0.62, 0.00),
    (0.34, 0.71, 0.91),
    (0.00, 0.62, 0.45),
    (0.94, 0.89, 0.26),
    (0.00, 0.45, 0.70),
    (0.84, 0.37, 0.00),
    (0.80, 0.47, 0.65),
    (0.6, 0.6, 0.6),
    (0.35, 0.20, 0.75),
]


def label_colour(value: int) -> tuple[float, float, float]:
    """RGB in [0, 1] for a label value (the same colours as in the napari widget)."""
    return PALETTE[(int(value) - 1) % len(PALETTE)]


def display_image(image: np.ndarray, channel_axis="auto", rgb=None) -> np.ndarray:
    """A 2D image (or the middle plane of a stack) as float RGB (H, W, 3) in [0, 1]."""
    cf = to_channels_first(image, channel_axis, rgb)
    if cf.ndim == 4:
        cf = cf[:, cf.shape[1] // 2]
    norm = fit_normalisation(cf, 0.5, 99.5).apply(cf)
    norm = np.clip(norm, 0, 1)
    if norm.shape[0] == 1:
        return np.repeat(norm[0][..., None], 3, axis=2)
    if norm.shape[0] == 2:  # two channels: magenta / green composite
        return np.stack([norm[0], norm[1], norm[0]], axis=2)
    return np.moveaxis(norm[:3], 0, 2)


def colourise(labels: np.ndarray) -> np.ndarray:
    """(H, W) label values -> float RGB (H, W, 3) with `label_colour`."""
    out = np.zeros(labels.shape + (3,), np.float32)
    for v in np.unique(labels):
        out[labels == v] = label_colour(v)
    return out


def save_overlay(
    path: str | Path,
    image: np.ndarray,
    prediction: np.ndarray,
    points: PointSet | None = None,
    truth: np.ndarray | None = None,
    title: str = "",
    channel_axis="auto",
    rgb=None,
    plane: int | None = None,
) -> Path:
    """Write a PNG: image + points | [ground truth] | prediction blended over the image.

    For 3D data pass the stack and ``plane`` (default: middle plane); only points on that
    plane are drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cf = to_channels_first(image, channel_axis, rgb)
    is_3d = cf.ndim == 4
    if is_3d:
        plane = cf.shape[1] // 2 if plane is None else plane
        cf = cf[:, plane]
        prediction = prediction[plane]
        truth = truth[plane] if truth is not None else None
    shown = display_image(cf, 0)
    panels = [("image + points", shown, True)]
    if truth is not None:
        panels.append(("ground truth", 0.5 * shown + 0.5 * colourise(truth), False))
    panels.append(("prediction", 0.5 * shown + 0.5 * colourise(prediction), False))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), dpi=110)
    for ax, (name, rgbimg, with_points) in zip(np.atleast_1d(axes), panels):
        ax.imshow(np.clip(rgbimg, 0, 1), interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
        if with_points and points is not None and len(points):
            pix = points.pixel_coords()
            sel = pix[:, 0] == plane if is_3d else np.ones(len(points), bool)
            cols = [label_colour(v) for v in points.labels[sel]]
            ax.scatter(pix[sel, -1], pix[sel, -2], s=9, c=cols, edgecolors="black", linewidths=0.4)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
