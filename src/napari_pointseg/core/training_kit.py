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


def stack_batch(crops, device):
    """(B, C, H, W) tensor of the crops (C, H, W) on ``device``, channels-last on the CPU."""
    import torch

    batch = torch.stack(crops).to(device)
    if device.type == "cpu":
        batch = batch.contiguous(memory_format=torch.channels_last)
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
        Gaussian noise. Returns (x, *maps)."""
        import torch

        rng = self.rng
        for dim in (-1, -2):
            if rng.random() < 0.5:
                x, maps = x.flip(dim), tuple(m.flip(dim) for m in maps)
        if x.shape[-1] == x.shape[-2] and rng.random() < 0.5:
            x, maps = x.transpose(-1, -2), tuple(m.transpose(-1, -2) for m in maps)
        channels = x.shape[0]
        gain = torch.from_numpy(rng.uniform(0.85, 1.15, (channels, 1, 1)).astype(np.float32))
        bias = torch.from_numpy(rng.normal(0, 0.1, (channels, 1, 1)).astype(np.float32))
        x = x * gain.to(x.device) + bias.to(x.device) + 0.05 * self.noise(x.shape)
        return (x, *maps)

    def noise(self, shape):
        """Gaussian noise of ``shape`` (C, h, w): a random window of a bank drawn once
        (drawing ~2 M fresh values per 256² crop cost ~10 % of an iteration)."""
        import torch

        channels, height, width = shape
        bank = self._bank
        if bank is None or bank.shape[0] != channels or bank.shape[1] < height or bank.shape[2] < width:
            side = max(height, width) + 64
            bank = torch.randn((channels, side, side), generator=self.torch_rng).to(self.device)
            self._bank = bank
        y0 = int(self.rng.integers(bank.shape[1] - height + 1))
        x0 = int(self.rng.integers(bank.shape[2] - width + 1))
        return bank[:, y0 : y0 + height, x0 : x0 + width]
