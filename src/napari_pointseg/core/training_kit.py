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
    """AdamW over ``params``; foreach: the per-tensor loop torch picks on the CPU by default
    cost ~8 ms per iteration."""
    import torch

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

    def __call__(self, x, *maps):
        """``x`` (C, h, w) and label / weight maps (h, w) under one random flip / transpose
        (transpose only for square crops); then ``x`` gets a per-channel gain and bias and
        Gaussian noise. Returns (x, *maps); the new ``x`` is laid out channels-last (strides
        (1, w C, C)), ready for `stack_batch`."""
        import torch

        rng = self.rng
        dims = [dim for dim in (-1, -2) if rng.random() < 0.5]
        if dims:
            # one copy for both flips (torch has no negative strides)
            x, maps = x.flip(dims), tuple(m.flip(dims) for m in maps)
        if x.shape[-1] == x.shape[-2] and rng.random() < 0.5:
            x, maps = x.transpose(-1, -2), tuple(m.transpose(-1, -2) for m in maps)
        channels, height, width = x.shape
        gain = torch.from_numpy(rng.uniform(0.85, 1.15, (channels, 1, 1)).astype(np.float32)).to(x.device)
        bias = torch.from_numpy(rng.normal(0, 0.1, (channels, 1, 1)).astype(np.float32)).to(x.device)
        noise = self.noise(x.shape)
        # one pass for the gain and bias, one for the noise, written straight into the layout
        # the network reads (a copy per operation cost ~30 % of a CPU iteration on 512² planes)
        out = torch.empty((height, width, channels), dtype=x.dtype, device=x.device).permute(2, 0, 1)
        torch.addcmul(bias, x, gain, out=out)
        out.add_(noise, alpha=0.05)
        return (out, *maps)

    def noise(self, shape):
        """Gaussian noise of ``shape`` (C, h, w): a random window of a bank drawn once
        (drawing ~2 M fresh values per 256² crop cost ~10 % of an iteration), stored
        channels-last like the crops it is added to."""
        import torch

        channels, height, width = shape
        bank = self._bank
        if bank is None or bank.shape[0] != channels or bank.shape[1] < height or bank.shape[2] < width:
            side = max(height, width) + 64
            bank = torch.randn((channels, side, side), generator=self.torch_rng).to(self.device)
            bank = bank.permute(1, 2, 0).contiguous().permute(2, 0, 1)
            self._bank = bank
        y0 = int(self.rng.integers(bank.shape[1] - height + 1))
        x0 = int(self.rng.integers(bank.shape[2] - width + 1))
        return bank[:, y0 : y0 + height, x0 : x0 + width]
