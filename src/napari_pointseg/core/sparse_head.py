"""The full-resolution head of a reduced-resolution network, evaluated at a fixed set of pixels.

The head polish (`head_polish`) evaluates the head of `models.ScaledInput` at the same few
thousand pixels (the clicks and the anchors) in every one of its hundreds of steps. Evaluated
window by window (`ScaledInput.head_at`), the first 3 x 3 layer runs 25 times per pixel (its
5 x 5 outputs of each 7 x 7 window), and the windows of neighbouring clicks and anchors, mostly
along the same class boundaries, overlap: the same pixel's first-layer output was computed
many times over. Here each layer runs once per distinct pixel that some window needs, and
reads its 3 x 3 neighbours from the previous layer by index. The arithmetic is the head's
(zero padding outside the plane included); only the order of the sums differs.
"""

from __future__ import annotations

import numpy as np

# the pixel by pixel path only when it computes the first layer at fewer than this share of
# the windows' positions (a 3-layer head on 4882 windows: 0.08 of them, 4x faster; 0.8, 1.4x
# slower)
SHARED_BELOW = 0.5
# the 3 x 3 neighbourhood, in the order of a convolution kernel's (dy, dx) entries
_OFFSETS = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], np.int64)


class SparseHead:
    """``model``'s head (its 3 x 3 convolutions, then the 1 x 1 one) at the pixels
    ``centres`` of the planes ``xs``.

    model: a `models.ScaledInput` with a head. planes: list of (x (1, C, H, W) padded plane,
    low (1, K, h, w) the network's logits on it, rows, cols (int numpy arrays): the centres on
    that plane). Calling it gives the head's correction (N, K) at every centre, in the order
    given (plane by plane; ``order``: an int array reordering them), equal to
    ``model.head_at`` on their windows; the head's parameters get gradients as usual. The
    first layer's input is read once, here. Where the windows barely overlap (fewer than
    SHARED_BELOW of the first layer's window positions would be saved) it evaluates the
    head on the windows, as `head_at` does: the matrix products and the gathers of the pixel
    by pixel path are slower per output than the convolutions (docs/training.md, twelfth
    session).
    """

    def __init__(self, model, planes, order=None):
        import torch

        self.model = model
        *convs, last = [m for m in model.refine if isinstance(m, torch.nn.Conv2d)]
        self.convs, self.last = convs, last
        depth = len(convs)
        device = planes[0][0].device
        # per plane: the pixels each layer needs (layer k: within depth - k of a centre)
        keys = [[] for _ in range(depth + 1)]  # keys[k][plane] sorted pixel keys
        shapes = []
        for x, _, rows, cols in planes:
            height, width = x.shape[-2:]
            shapes.append((height, width))
            need = np.unique(np.asarray(rows, np.int64) * width + np.asarray(cols, np.int64))
            keys[depth].append(need)
            for k in range(depth - 1, -1, -1):
                need = _neighbours(need, height, width, valid_only=True)
                keys[k].append(need)
        offsets = [np.cumsum([0] + [len(p) for p in layer]) for layer in keys]
        n_centres = sum(len(rows) for _, _, rows, _ in planes)
        self.windows = None
        if offsets[1][-1] > SHARED_BELOW * n_centres * (2 * depth - 1) ** 2:
            self.windows = _windows(model, planes, order, device)
            return
        # layer 0: the head's input at every pixel layer 1 reads
        feats = []
        with torch.no_grad():
            for (x, low, _, _), need, (_, width) in zip(planes, keys[0], shapes, strict=True):
                rows, cols = (torch.from_numpy(v).to(device) for v in np.divmod(need, width))
                feats.append(model.pixel_inputs(x.float(), low.float(), torch.zeros_like(rows), rows, cols))
            feat = torch.cat(feats)
        # layer k reads its 3 x 3 neighbours in layer k - 1 (index len(layer k - 1): zero,
        # the padding outside the plane)
        self.reads = []
        for k in range(1, depth + 1):
            parts = []
            for p, ((height, width), need, below) in enumerate(
                zip(shapes, keys[k], keys[k - 1], strict=True)
            ):
                near = _neighbours(need, height, width, valid_only=False)  # (n, 9), -1 outside
                index = np.searchsorted(below, np.maximum(near, 0)) + offsets[k - 1][p]
                parts.append(np.where(near >= 0, index, offsets[k - 1][-1]))
            self.reads.append(torch.from_numpy(np.concatenate(parts)).to(device))
        zero = feat.new_zeros(1, feat.shape[1])
        self.first = torch.cat([feat, zero])[self.reads[0]].flatten(1)  # (n1, 9 (C + K)), fixed
        centre = []
        for p, ((_, _, rows, cols), (_, width)) in enumerate(zip(planes, shapes, strict=True)):
            key = np.asarray(rows, np.int64) * width + np.asarray(cols, np.int64)
            centre.append(np.searchsorted(keys[depth][p], key) + offsets[depth][p])
        centre = np.concatenate(centre)
        self.centre = torch.from_numpy(centre if order is None else centre[order]).to(device)

    def __call__(self):
        """The head's correction (N, K) at the centres."""
        import torch.nn.functional as F

        if self.windows is not None:
            return self.model.head_at(*self.windows)

        hidden = None
        for k, conv in enumerate(self.convs):
            # (out, in, 3, 3) -> (out, 3 x 3 x in): the neighbour-major order of the reads
            weight = conv.weight.permute(0, 2, 3, 1).flatten(1)
            if k == 0:
                rows = self.first
            else:
                padded = F.pad(hidden, (0, 0, 0, 1))  # the zero row the padding reads
                rows = padded.index_select(0, self.reads[k].flatten()).view(len(self.reads[k]), -1)
            hidden = F.relu(F.linear(rows, weight, conv.bias))
        return F.linear(hidden[self.centre], self.last.weight.flatten(1), self.last.bias)


def _windows(model, planes, order, device):
    """(feat, inside) of `ScaledInput.point_inputs` at the centres of ``planes``, in order."""
    import torch

    feats, insides = [], []
    with torch.no_grad():
        for x, low, rows, cols in planes:
            r, c = (
                torch.from_numpy(np.asarray(rows)).to(device),
                torch.from_numpy(np.asarray(cols)).to(device),
            )
            _, feat, inside = model.point_inputs(x.float(), low.float(), torch.zeros_like(r), r, c)
            feats.append(feat)
            insides.append(inside)
    feat, inside = torch.cat(feats), torch.cat(insides)
    if order is not None:
        index = torch.from_numpy(np.asarray(order)).to(device)
        feat, inside = feat[index], inside[index]
    return feat, inside


def _neighbours(keys: np.ndarray, height: int, width: int, valid_only: bool) -> np.ndarray:
    """The 3 x 3 neighbours of the pixels ``keys`` (row * width + col) of a (height, width)
    plane: with ``valid_only``, the sorted distinct keys inside the plane; else (n, 9) keys in
    kernel order, -1 outside."""
    rows, cols = np.divmod(keys, width)
    r = rows[:, None] + _OFFSETS[:, 0]
    c = cols[:, None] + _OFFSETS[:, 1]
    inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
    near = np.where(inside, r * width + c, -1)
    if valid_only:
        return np.unique(near[inside])
    return near
