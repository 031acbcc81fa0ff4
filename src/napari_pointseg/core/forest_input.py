"""The click forest: a random forest fitted on the admitted clicks, as network input channels.

The network still makes the prediction; the forest only adds K input channels (its class
probabilities, K = the network's classes). It sees every colour channel at sigma 1-16 (the
features of the ilastik-style baseline), which the network's filter bank on the channel mean
does not, and it generalises over a uniform background from a few hundred clicks where the
network's head leaves speckle (docs/training.md, twenty-second session).

At the clicks themselves the channels hold the forest's *out-of-bag* probabilities: in-bag they
are right by construction, and a network trained on them learns to copy the forest. Out of bag
they show where the forest is wrong, and the network learns to correct it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .serial import dataclass_from_dict, dataclass_to_dict

FOREST_SIGMA_MAX = 16.0


@dataclass(frozen=True)
class ForestSpec:
    """The click forest of a network input (stored in the bundle's input spec).

    classes: probability channels (the network's classes, class index order); trees: forest
    size; seed: its random state; scale: a channel holds ``(p - 1 / classes) * scale``.
    """

    classes: int
    trees: int = 100
    seed: int = 0
    scale: float = 1.0

    def to_dict(self) -> dict:
        """{"classes", "trees", "seed", "scale"}."""
        return dataclass_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "ForestSpec | None":
        """The inverse of `to_dict`; None stays None (no forest channels)."""
        if d is None:
            return None
        return dataclass_from_dict(
            cls, d, convert={"classes": int, "trees": int, "seed": int, "scale": float}
        )


def forest_features(plane_cf: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` normalised channels -> float32 ``(H * W, 20 * C)`` per-pixel features
    (intensity, gradient, Hessian eigenvalues at 5 sigmas from 1 to 16, per channel)."""
    from skimage.feature import multiscale_basic_features

    f = multiscale_basic_features(
        np.moveaxis(np.asarray(plane_cf, np.float32), 0, -1),
        channel_axis=-1,
        sigma_min=1,
        sigma_max=FOREST_SIGMA_MAX,
    )
    return np.ascontiguousarray(f.reshape(-1, f.shape[-1]), dtype=np.float32)


def n_forest_features(n_channels: int) -> int:
    """Columns of `forest_features` for an image with ``n_channels`` channels."""
    return 20 * n_channels


class ClickForest:
    """A fitted forest: ``fit`` on features at the clicks, ``channels`` for a plane."""

    def __init__(self, spec: ForestSpec):
        self.spec = spec
        self.clf = None
        self.x: np.ndarray | None = None  # (N, F) float32 features at the clicks
        self.y: np.ndarray | None = None  # (N,) int64 class indices
        self.oob: np.ndarray | None = None  # (N, K) out-of-bag probabilities

    @property
    def fitted(self) -> bool:
        return self.clf is not None

    def fit(self, x: np.ndarray, y: np.ndarray, oob: bool = True) -> "ClickForest":
        """x: (N, F) float32 features at the clicks; y: (N,) class indices in [0, classes).
        Fewer than 2 classes: stays unfitted (its channels are neutral)."""
        import warnings

        from sklearn.ensemble import RandomForestClassifier

        x = np.asarray(x, np.float32)
        y = np.asarray(y, np.int64)
        self.x, self.y, self.clf, self.oob = x, y, None, None
        if len(np.unique(y)) < 2:
            return self
        import torch

        clf = RandomForestClassifier(
            n_estimators=self.spec.trees,
            n_jobs=torch.get_num_threads(),  # the cores' fair share, as torch has it
            random_state=self.spec.seed,
            oob_score=oob,
        )
        with warnings.catch_warnings():
            # few clicks: some are in the bag of every tree (no out-of-bag estimate: neutral)
            warnings.simplefilter("ignore")
            clf.fit(x, y)
        self.clf = clf
        if oob:
            k = self.spec.classes
            o = np.full((len(y), k), 1.0 / k, np.float32)
            o[:, clf.classes_] = np.nan_to_num(clf.oob_decision_function_, nan=1.0 / k)
            self.oob = o
        return self

    def scaled(self, proba: np.ndarray) -> np.ndarray:
        """Class probabilities (classes, ...) -> input channels: minus 1 / classes, times scale."""
        return (proba - 1.0 / self.spec.classes) * self.spec.scale

    def unscaled(self, channels: np.ndarray) -> np.ndarray:
        """The inverse of `scaled`: input channels (classes, ...) -> class probabilities,
        clipped at 0 (float32 rounding)."""
        return np.clip(channels / self.spec.scale + 1.0 / self.spec.classes, 0.0, None)

    def channels(self, feats: np.ndarray, shape) -> np.ndarray:
        """float32 ``(classes, H, W)`` input channels of a plane from its `forest_features`
        (``shape`` = (H, W)): the class probabilities minus 1 / classes, times ``scale``.
        Unfitted: zeros (neutral)."""
        k = self.spec.classes
        if self.clf is None:
            return np.zeros((k,) + tuple(shape), np.float32)
        proba = np.zeros((k, feats.shape[0]), np.float32)
        proba[self.clf.classes_] = self.clf.predict_proba(feats).T
        return self.scaled(proba).reshape((k,) + tuple(shape))
