"""The training toolkit's memory layout (what makes a CPU iteration cheap) and the stem option."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pointseg.core.errors import InputError


def _ramp_plane(channels: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    ramp = (yy * size + xx).astype(np.float32) / size**2
    return np.stack([ramp * (c + 1) for c in range(channels)])


def test_augmenter_writes_channels_last_and_moves_maps_with_the_image():
    """Whatever layout the plane has, the augmented crop is laid out channels-last, equal for
    both layouts, and its label map went through the same flip / transpose."""
    import torch

    from napari_pointseg.core.training_kit import Augmenter, plane_tensor

    cpu = torch.device("cpu")
    plane = _ramp_plane(3, 16)
    ramp_index = torch.from_numpy(np.arange(16 * 16).reshape(16, 16))
    seen_flips = set()
    for seed in range(8):
        outs = []
        for x in (torch.from_numpy(plane.copy()), plane_tensor(plane, cpu)):
            aug = Augmenter(np.random.default_rng(seed), torch.Generator().manual_seed(seed), cpu)
            out, labels = aug(x, ramp_index)
            assert out.stride() == (1, 16 * 3, 3)
            outs.append((out, labels))
        torch.testing.assert_close(outs[0][0], outs[1][0])
        out, labels = outs[0]
        # the label map is the ramp's index: each channel must still follow it after the
        # same flip / transpose (gain, bias and 5 % noise keep the correlation near 1)
        for c in range(3):
            r = np.corrcoef(out[c].numpy().ravel(), labels.numpy().ravel())[0, 1]
            assert r > 0.98, (seed, c, r)
        seen_flips.add(tuple(labels[0, :2].tolist()))
    assert len(seen_flips) > 2  # the seeds did flip and transpose


def test_one_crop_becomes_the_batch_without_a_copy():
    """A channels-last crop is the batch itself (same memory, batch stride C H W, which avg
    pooling needs for its fast path); several crops stack into a channels-last batch."""
    import torch

    from napari_pointseg.core.training_kit import Augmenter, plane_tensor, stack_batch

    cpu = torch.device("cpu")
    x = plane_tensor(_ramp_plane(4, 32), cpu)
    aug = Augmenter(np.random.default_rng(0), torch.Generator().manual_seed(0), cpu)
    crop, _ = aug(x, torch.zeros(32, 32))
    batch = stack_batch([crop], cpu)
    assert batch.shape == (1, 4, 32, 32) and batch.data_ptr() == crop.data_ptr()
    assert batch.stride() == (4 * 32 * 32, 1, 32 * 4, 4)
    assert batch.is_contiguous(memory_format=torch.channels_last)
    view = x[:, 8:24, 8:24]  # an un-augmented crop: a view into the plane
    several = stack_batch([view, crop[:, :16, :16]], cpu)
    assert several.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(several, torch.stack([view, crop[:, :16, :16]]))
    single_view = stack_batch([view], cpu)
    assert single_view.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(single_view[0], view)


def test_augmented_plane_read_pooled_and_at_windows_equals_the_dense_plane():
    """The lazy augmented plane of a network at a third of the resolution gives, pooled and
    at windows of full-resolution pixels, what the plane augmented at full resolution gives;
    its label map went through the same flip / transpose; square and oblong planes."""
    import torch
    import torch.nn.functional as F

    from napari_pointseg.core.training_kit import Augmenter, plane_tensor

    cpu = torch.device("cpu")
    seen = set()
    for seed, (height, width) in enumerate([(18, 18)] * 6 + [(12, 21)] * 3):
        plane = _ramp_plane(3, max(height, width))[:, :height, :width].copy()
        x = plane_tensor(plane, cpu)
        pooled_x = F.avg_pool2d(x[None], 3)[0]
        index = torch.from_numpy(np.arange(height * width).reshape(height, width))
        aug = Augmenter(np.random.default_rng(seed), torch.Generator().manual_seed(seed), cpu)
        lazy, labels = aug.pooled(x, pooled_x, 3, index)
        dense = lazy.dense()
        assert lazy.shape == dense.shape and dense.shape[-2:] == labels.shape
        torch.testing.assert_close(lazy.pooled(3), F.avg_pool2d(dense, 3))
        assert lazy.pooled(3).is_contiguous(memory_format=torch.channels_last)
        g = torch.Generator().manual_seed(seed)
        rows = torch.randint(0, dense.shape[-2], (40, 1, 1), generator=g) + torch.arange(-1, 2)[None, :, None]
        cols = torch.randint(0, dense.shape[-1], (40, 1, 1), generator=g) + torch.arange(-1, 2)[None, None, :]
        rows, cols = rows.clamp(0, dense.shape[-2] - 1), cols.clamp(0, dense.shape[-1] - 1)
        batch = torch.zeros_like(rows)
        torch.testing.assert_close(lazy.window(batch, rows, cols), dense[batch, :, rows, cols])
        for c in range(3):
            r = np.corrcoef(dense[0, c].numpy().ravel(), labels.numpy().ravel())[0, 1]
            assert r > 0.9, (seed, c, r)
        seen.add((tuple(labels[0, :2].tolist()), lazy.shape[-2]))
    assert len(seen) > 3  # the seeds did flip and transpose


def test_network_reads_the_lazy_plane_as_the_dense_one():
    """`ScaledInput.forward_at` on the lazy augmented plane gives the logits it gives on the
    same plane built at full resolution."""
    import torch
    import torch.nn.functional as F

    from napari_pointseg.core.models import ModelSpec, build_model
    from napari_pointseg.core.training_kit import Augmenter, plane_tensor

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    spec = ModelSpec(
        encoder_depth=3,
        decoder_channels=[32, 16, 8],
        in_channels=3,
        classes=3,
        input_scale=3,
        refine_channels=8,
    )
    net = build_model(spec).eval()
    torch.nn.init.normal_(net.refine[-1].weight, std=0.5)  # not the zero start
    x = plane_tensor(
        _ramp_plane(3, 48) + np.random.default_rng(1).normal(size=(3, 48, 48)).astype(np.float32), cpu
    )
    aug = Augmenter(np.random.default_rng(3), torch.Generator().manual_seed(3), cpu)
    (lazy,) = aug.pooled(x, F.avg_pool2d(x[None], 3)[0], 3)
    b, y, xx = (torch.tensor(v) for v in ([0, 0, 0, 0, 0], [0, 47, 31, 1, 20], [0, 47, 0, 46, 25]))
    with torch.no_grad():
        torch.testing.assert_close(net.forward_at(lazy, b, y, xx), net.forward_at(lazy.dense(), b, y, xx))


def test_stem_kernel_replaces_the_first_convolution():
    import torch

    from napari_pointseg.core.models import ModelSpec, build_model

    spec = ModelSpec(in_channels=5, classes=3, encoder_depth=3, decoder_channels=[16, 8, 8], stem_kernel=3)
    net = build_model(spec)
    assert net.encoder.conv1.kernel_size == (3, 3) and net.encoder.conv1.stride == (2, 2)
    assert net(torch.zeros(1, 5, 32, 32)).shape == (1, 3, 32, 32)
    assert build_model(ModelSpec(in_channels=5)).encoder.conv1.kernel_size == (3, 3)  # the default
    assert build_model(ModelSpec(in_channels=5, stem_kernel=0)).encoder.conv1.kernel_size == (7, 7)
    # a bundle written before the option existed rebuilds the 7 x 7 stem its weights have
    old = {k: v for k, v in ModelSpec(in_channels=5).to_dict().items() if k != "stem_kernel"}
    assert ModelSpec.from_dict(old).stem_kernel == 0
    with pytest.raises(InputError, match="stem_kernel"):
        build_model(ModelSpec(in_channels=5, stem_kernel=4))
    # encoders without a ResNet stem keep their own
    mobile = build_model(
        ModelSpec(in_channels=5, encoder="mobilenet_v2", encoder_depth=3, decoder_channels=[16, 8, 8])
    )
    assert mobile(torch.zeros(1, 5, 32, 32)).shape == (1, 2, 32, 32)


def test_head_width_default_and_older_bundles():
    """Reduced-resolution networks get a full-resolution head of three layers of 32 channels; a
    spec written before the fields existed rebuilds the head of two layers of 16 its weights
    have."""
    import torch.nn as nn

    from napari_pointseg.core.models import ModelSpec, build_model

    def convs(net):
        return [m for m in net.refine if isinstance(m, nn.Conv2d)]

    spec = ModelSpec(in_channels=4, encoder_depth=3, decoder_channels=[16, 8, 8], input_scale=2)
    assert [c.out_channels for c in convs(build_model(spec))] == [32, 32, 32, 2]
    fields = ("refine_channels", "refine_layers", "stem_kernel")
    restored = ModelSpec.from_dict({k: v for k, v in spec.to_dict().items() if k not in fields})
    assert (restored.refine_channels, restored.refine_layers) == (16, 2)
    assert [c.out_channels for c in convs(build_model(restored))] == [16, 16, 2]


def test_group_norm_runs_in_float32_and_keeps_the_input_dtype():
    """The networks' GroupNorm is torch's, computed in float32: same parameters and state dict
    keys, the same output as nn.GroupNorm in float32, a bf16 input gives a bf16 output."""
    import torch
    import torch.nn as nn

    from napari_pointseg.core.models import ModelSpec, build_model, float32_group_norm

    torch.manual_seed(0)
    norm, ref = float32_group_norm(4, 16), nn.GroupNorm(4, 16)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    ref.load_state_dict(norm.state_dict())
    x = (torch.randn(2, 16, 8, 8) * 3 + 1).contiguous(memory_format=torch.channels_last)
    assert torch.allclose(norm(x), ref(x), atol=1e-5)
    y = norm(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    assert (y.float() - ref(x)).abs().max() < 0.1
    net = build_model(ModelSpec(in_channels=3, encoder_depth=3, decoder_channels=[16, 8, 8]))
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(type(m) is type(norm) for m in norms)


def test_encoder_stages_beyond_the_depth_are_not_built():
    """smp builds every ResNet stage whatever the depth; the ones the depth never runs are
    identities, so the weight average and the bundles do not carry them."""
    import torch

    from napari_pointseg.core.models import ModelSpec, build_model

    net = build_model(ModelSpec(in_channels=3, encoder_depth=4, input_scale=2))
    names = [n for n, _ in net.named_parameters()]
    assert any(".layer3." in n for n in names)
    assert not any(".layer4." in n for n in names)
    assert sum(p.numel() for p in net.parameters()) < 3_500_000
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)
