"""What both trainers share: class weights, augmentation, lr warm-up, network placement, batches.

`core/trainer.py` (one image, sparse points) and `dataset/train.py` (many pseudo-labelled
images) differ in what they train on and when they stop; the pieces here are the same for
both, so a change to the recipe's augmentation or class balance reaches both.
"""

from __future__ import annotations

import numpy as np


def class_weights(counts, balance: float, device):
    """float32 tensor (K,) of loss weights from per-class counts (K,): ``(mean count / count)
    ** balance`` over the classes present (1 for absent ones and with ``balance`` 0), so a
    small class is not drowned by a large one."""
    import torch

    counts = np.asarray(counts, np.float64)
    weights = np.ones(len(counts))
    present = counts > 0
    if balance > 0 and present.any():
        weights[present] = (counts[present].mean() / counts[present]) ** balance
    return torch.tensor(weights, dtype=torch.float32, device=device)


def warmup_lr(lr: float, iteration: int, warmup_iters: int) -> float | None:
    """The lr during the linear warm-up (``iteration`` 0-based), or None once it is over."""
    if iteration < warmup_iters:
        return lr * (iteration + 1) / warmup_iters
    return None


def set_lr(optimizer, lr: float) -> None:
    """Set every parameter group's lr."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def place_network(net, device):
    """``net`` on ``device`` in training mode; channels-last on the CPU (mkldnn convolutions
    are faster there)."""
    import torch

    net = net.to(device)
    if device.type == "cpu":
        net = net.to(memory_format=torch.channels_last)
    net.train()
    return net


def make_optimizer(params, lr: float, weight_decay: float):
    """AdamW over ``params``: the fused kernel where torch has one for the device (on the CPU
    1.4 ms per step of the 3.1 M-parameter U-Net; foreach 5.6 ms, the per-tensor loop torch
    picks by default ~8 ms), else foreach."""
    import torch

    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


def plane_tensor(plane: np.ndarray, device):
    """float tensor (C, H, W) of ``plane`` (C, H, W) on ``device``; on the CPU laid out
    channels-last in memory (strides (1, W C, C)), so that crops, flips and `Augmenter` write
    the layout the network reads without a transposing copy per iteration."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(plane)).to(device)
    if device.type == "cpu":
        tensor = tensor.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    return tensor


def stack_batch(crops, device):
    """(B, C, H, W) tensor of the crops (C, H, W) on ``device``, channels-last on the CPU.

    Crops from `Augmenter` are already laid out channels-last: a single one is used as it is
    (the usual case when the crop covers the plane), several are copied once into the batch.
    """
    import torch

    if device.type != "cpu":
        return torch.stack(crops).to(device)
    if len(crops) == 1:
        crop = crops[0]
        channels, height, width = crop.shape
        if crop.stride() == (1, width * channels, channels):
            # no copy; a plain unsqueeze would give the batch a stride of C, which torch reads
            # as an ambiguous layout and pools ~20x slower
            return crop.as_strided(
                (1, channels, height, width), (crop.numel(), 1, width * channels, channels)
            )
    batch = torch.empty(
        (len(crops), *crops[0].shape), dtype=crops[0].dtype, memory_format=torch.channels_last
    )
    for b, crop in enumerate(crops):
        batch[b].copy_(crop)
    return batch


class Augmenter:
    """Random flips / 90 degree rotations and intensity jitter of training crops.

    rng: numpy Generator (every random choice); torch_rng: torch Generator for the noise bank
    (its own, so that another trainer in the process does not shift this one's noise).
    Without it the network memorises the few labelled pixels and the rest stays noisy.
    """

    def __init__(self, rng: np.random.Generator, torch_rng, device):
        self.rng = rng
        self.torch_rng = torch_rng
        self.device = device
        self._bank = None
        self._pooled_banks: dict = {}

    def __call__(self, x, *maps):
        """``x`` (C, h, w) and label / weight maps (h, w) under one random flip / transpose
        (transpose only for square crops); then ``x`` gets a per-channel gain and bias and
        Gaussian noise. Returns (x, *maps); the new ``x`` is laid out channels-last (strides
        (1, w C, C)), ready for `stack_batch`."""
        dims, transpose, maps = self._geometry(x.shape, maps)
        x = _oriented(x, dims, transpose)
        gain, bias = self._jitter(x.shape[0], x.device)
        return (_jittered(x, gain, bias, self.noise(x.shape)), *maps)

    def pooled(self, x, pooled_x, factor: int, *maps) -> tuple:
        """``x`` (C, H, W, sides multiples of ``factor``) under one random draw, as `__call__`
        gives it, but never built at full resolution: an `AugmentedPlane` for a network that
        reads its input average-pooled by ``factor`` (``pooled_x``: ``x`` pooled, (C, H/f,
        W/f)) and at windows around the labelled pixels (`models.ScaledInput.forward_at`).
        The flips, gain, bias and noise commute with the pooling; the noise window starts at
        a multiple of ``factor`` so that its pooled version is a window of the pooled bank.
        Returns (plane, *maps) with the label / weight maps (H, W) flipped as the plane."""
        dims, transpose, maps = self._geometry(x.shape, maps)
        channels, height, width = x.shape
        if transpose:
            height, width = width, height
        gain, bias = self._jitter(channels, x.device)
        y0, x0 = self._noise_origin(channels, height, width, factor)
        plane = AugmentedPlane(x, pooled_x, factor, dims, transpose, gain, bias, self, (y0, x0))
        return (plane, *maps)

    def _geometry(self, shape, maps):
        """One random flip / transpose: (flipped dims, transposed?, the maps under it)."""
        rng = self.rng
        dims = [dim for dim in (-1, -2) if rng.random() < 0.5]
        if dims:
            maps = tuple(m.flip(dims) for m in maps)
        transpose = shape[-1] == shape[-2] and rng.random() < 0.5
        if transpose:
            maps = tuple(m.transpose(-1, -2) for m in maps)
        return dims, transpose, maps

    def _jitter(self, channels: int, device):
        """Per-channel gain and bias, float32 (C, 1, 1)."""
        import torch

        rng = self.rng
        gain = torch.from_numpy(rng.uniform(0.85, 1.15, (channels, 1, 1)).astype(np.float32)).to(device)
        bias = torch.from_numpy(rng.normal(0, 0.1, (channels, 1, 1)).astype(np.float32)).to(device)
        return gain, bias

    def noise(self, shape):
        """Gaussian noise of ``shape`` (C, h, w): a random window of a bank drawn once
        (drawing ~2 M fresh values per 256² crop cost ~10 % of an iteration), stored
        channels-last like the crops it is added to."""
        channels, height, width = shape
        y0, x0 = self._noise_origin(channels, height, width, 1)
        return self._bank[:, y0 : y0 + height, x0 : x0 + width]

    def _noise_origin(self, channels: int, height: int, width: int, step: int) -> tuple[int, int]:
        """A random origin (multiple of ``step``) of a (channels, height, width) window of the
        noise bank, drawn anew when it is too small."""
        import torch

        bank = self._bank
        if bank is None or bank.shape[0] != channels or bank.shape[1] < height or bank.shape[2] < width:
            side = max(height, width) + 64
            bank = torch.randn((channels, side, side), generator=self.torch_rng).to(self.device)
            bank = bank.permute(1, 2, 0).contiguous().permute(2, 0, 1)
            self._bank, self._pooled_banks = bank, {}
        y0 = step * int(self.rng.integers((bank.shape[1] - height) // step + 1))
        x0 = step * int(self.rng.integers((bank.shape[2] - width) // step + 1))
        return y0, x0

    def pooled_bank(self, factor: int):
        """The noise bank average-pooled by ``factor`` (C, side / f, side / f), computed once."""
        import torch.nn.functional as F

        if factor not in self._pooled_banks:
            self._pooled_banks[factor] = F.avg_pool2d(self._bank[None], factor)[0]
        return self._pooled_banks[factor]


def _oriented(x, dims, transpose: bool):
    """``x`` (C, h, w) flipped along ``dims`` (one copy for both: torch has no negative
    strides), then transposed (a view) if asked."""
    if dims:
        x = x.flip(dims)
    return x.transpose(-1, -2) if transpose else x


def _jittered(x, gain, bias, noise):
    """``x`` (C, h, w) x ``gain`` + ``bias`` (C, 1, 1) + 5 % of ``noise`` (C, h, w): one pass
    for the gain and bias, one for the noise, written straight into the channels-last layout
    the network reads (a copy per operation cost ~30 % of a CPU iteration on 512² planes)."""
    import torch

    channels, height, width = x.shape
    out = torch.empty((height, width, channels), dtype=x.dtype, device=x.device).permute(2, 0, 1)
    torch.addcmul(bias, x, gain, out=out)
    return out.add_(noise, alpha=0.05)


class AugmentedPlane:
    """One draw of `Augmenter` on a whole plane, read two ways: average-pooled (`pooled`) and
    at windows of full-resolution pixels (`window`); ``shape`` is that of the batch (1, C, H,
    W) it stands for. A network at a third of the resolution never reads the rest of the
    full-resolution plane: building it cost ~15 ms of a ~70 ms iteration on a 26-channel 512²
    plane (docs/training.md, twelfth session)."""

    def __init__(self, x, pooled_x, factor, dims, transpose, gain, bias, augmenter, origin):
        import torch

        self._x, self._pooled_x, self.factor = x, pooled_x, factor
        self._dims, self._transpose = dims, transpose
        self._gain, self._bias = gain, bias
        self._augmenter, self._origin = augmenter, origin
        channels, height, width = x.shape
        if transpose:
            height, width = width, height
        self.shape = torch.Size((1, channels, height, width))
        self.device, self.dtype = x.device, x.dtype

    def pooled(self, factor: int):
        """(1, C, H / f, W / f) channels-last: the augmented plane average-pooled by ``factor``
        (the factor it was made for)."""
        if factor != self.factor:
            raise ValueError(f"made for pooling by {self.factor}, not {factor}")
        p = _oriented(self._pooled_x, self._dims, self._transpose)
        _, height, width = p.shape
        f, (y0, x0) = factor, self._origin
        noise = self._augmenter.pooled_bank(f)[:, y0 // f : y0 // f + height, x0 // f : x0 // f + width]
        return stack_batch([_jittered(p, self._gain, self._bias, noise)], p.device)

    def dense(self):
        """The augmented plane at full resolution (1, C, H, W) channels-last, as
        `Augmenter.__call__` builds it (for tests and for readers of every pixel)."""
        x = _oriented(self._x, self._dims, self._transpose)
        _, _, height, width = self.shape
        y0, x0 = self._origin
        noise = self._augmenter._bank[:, y0 : y0 + height, x0 : x0 + width]
        return stack_batch([_jittered(x, self._gain, self._bias, noise)], x.device)

    def window(self, batch, rows, cols):
        """Values (..., C) of the augmented full-resolution plane at pixels (rows, cols) (int
        tensors of one broadcast shape; ``batch`` must index image 0)."""
        del batch  # one plane
        height, width = self._x.shape[-2:]
        src_r, src_c = (cols, rows) if self._transpose else (rows, cols)
        if -2 in self._dims:
            src_r = height - 1 - src_r
        if -1 in self._dims:
            src_c = width - 1 - src_c
        y0, x0 = self._origin
        values = self._x.permute(1, 2, 0)[src_r, src_c]
        noise = self._augmenter._bank.permute(1, 2, 0)[rows + y0, cols + x0]
        return (values * self._gain[:, 0, 0] + self._bias[:, 0, 0]).add_(noise, alpha=0.05)
