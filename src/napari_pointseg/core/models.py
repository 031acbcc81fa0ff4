"""Model factory (segmentation-models-pytorch, random init), device choice, torch set-up.

Every network starts from random weights (``encoder_weights=None``): no download ever. A user
may initialise the encoder from a LOCAL weights file (`load_encoder_weights`).

BatchNorm is replaced by GroupNorm: we train on one image with batches of a few crops, where
batch statistics are noisy and running statistics meaningless; GroupNorm behaves the same in
training and inference and works at batch size 1 (DeepLabV3+'s ASPP pooling fails with
BatchNorm at batch 1).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

from .errors import InputError
from .serial import dataclass_from_dict, dataclass_to_dict

ARCHITECTURES = {
    "unet": "Unet",
    "unetplusplus": "UnetPlusPlus",
    "manet": "MAnet",
    "linknet": "Linknet",
    "fpn": "FPN",
    "pspnet": "PSPNet",
    "deeplabv3": "DeepLabV3",
    "deeplabv3plus": "DeepLabV3Plus",
    "pan": "PAN",
}
_DEPTH_ARCHS = {"unet", "unetplusplus", "manet", "linknet"}


@dataclass
class ModelSpec:
    """Everything needed to rebuild a network (stored in the bundle).

    arch: key of ARCHITECTURES; encoder: an smp encoder name; in_channels / classes: network
    input channels and output classes; encoder_depth / decoder_channels: size knobs (Unet
    family); norm: 'group' (GroupNorm, default) or 'batch'; input_scale: the network runs on
    the input average-pooled by this factor and its logits are upsampled back (0: chosen from
    the plane size when training starts, `resolve_input_scale`; a bundle stores the value used);
    stem_kernel: kernel size of the first convolution of ResNet-style encoders (those with a
    ``conv1`` stem; others keep their own); 0: the encoder's own (7 x 7 for ResNets). 3 by
    default: that convolution sees every input channel at half the network's resolution, and
    7 x 7 made it a third of the network's arithmetic (docs/training.md, eighth session).
    refine_channels: width of the full-resolution head of reduced-resolution networks (32: 16
    could not fit the clicks along some smooth boundaries, docs/training.md, ninth session);
    refine_layers: its 3 x 3 convolutions, i.e. how many pixels around it each output sees (3:
    at a third of the resolution two did not fit the clicks along smooth boundaries, tenth
    session). encoder_depth 3 (4 until the twentieth session): the fourth stage held two thirds
    of the weights for an 11 x 11 map, and its weight traffic (casts, AdamW, the weight
    average) a fifth of an iteration; the ten-image and all-30 runs lost ~0.01 median mIoU for
    ~23 % less time per run. decoder_channels keeps four widths so that depth 4 still builds.
    """

    arch: str = "unet"
    encoder: str = "resnet18"
    in_channels: int = 1
    classes: int = 2
    encoder_depth: int = 3  # 4 until the twentieth session (docs/training.md)
    decoder_channels: list[int] = field(default_factory=lambda: [64, 32, 16, 16])
    norm: str = "group"
    input_scale: int = 0  # the network sees the input average-pooled by this factor (0: auto)
    refine_channels: int = 32  # with input_scale > 1: width of the full-resolution head (0: none)
    stem_kernel: int = 3  # first encoder convolution's kernel (0: the encoder's own)
    refine_layers: int = 3  # 3 x 3 convolutions of the full-resolution head (its reach in px)
    head_only_channels: int = 0  # with a head: the last this many input channels reach the head only

    def to_dict(self) -> dict:
        return dataclass_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        # bundles written before a field existed have the encoder's own stem, a head of two layers of 16
        return dataclass_from_dict(
            cls, d, legacy={"stem_kernel": 0, "refine_channels": 16, "refine_layers": 2}
        )

    @property
    def stride(self) -> int:
        """Input height/width must be a multiple of this."""
        base = 2**self.encoder_depth if self.arch in _DEPTH_ARCHS else 32
        return base * self.scale

    @property
    def scale(self) -> int:
        """The input downsampling factor in use (an unresolved 0 counts as 1)."""
        return max(1, int(self.input_scale))


# planes up to this size train at full resolution; larger ones at REDUCED_SCALE (docs/training.md)
FULL_RES_MAX_SIDE = 320
# ... the U-Net then sees the input average-pooled 3 x 3 (2 x 2 until the tenth session, at
# ~1.6x the time per iteration; with a head of three layers the development images lost nothing)
REDUCED_SCALE = 3


def resolve_input_scale(spec: ModelSpec, plane_shape) -> ModelSpec:
    """``spec`` with an automatic ``input_scale`` (0) fixed for planes of ``plane_shape``
    (H, W): 1 up to FULL_RES_MAX_SIDE px, else REDUCED_SCALE, so that the network sees the
    whole plane (up to 768 px) in every iteration at the cost of a 256² crop. An explicit
    value is kept."""
    from dataclasses import replace

    if int(spec.input_scale) > 0:
        return spec
    return replace(spec, input_scale=1 if max(plane_shape) <= FULL_RES_MAX_SIDE else REDUCED_SCALE)


def encoder_names() -> list[str]:
    """Names of the encoders segmentation-models-pytorch offers here."""
    import segmentation_models_pytorch as smp

    return sorted(smp.encoders.get_encoder_names())


def validate_spec(spec: ModelSpec) -> None:
    """InputError for an unknown architecture / encoder or bad sizes, before any heavy work."""
    if spec.arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture '{spec.arch}'; choose one of {', '.join(ARCHITECTURES)}")
    names = encoder_names()
    if spec.encoder not in names and not spec.encoder.startswith("tu-"):
        close = [n for n in names if spec.encoder.split("_")[0] in n][:6]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise InputError(f"unknown encoder '{spec.encoder}'{hint}; `pointseg models` lists them")
    if spec.norm not in ("group", "batch"):
        raise InputError(f"norm must be 'group' or 'batch', got '{spec.norm}'")
    if spec.classes < 2:
        raise InputError("a network needs at least 2 classes")
    if spec.stem_kernel and not (1 <= int(spec.stem_kernel) <= 7 and int(spec.stem_kernel) % 2):
        raise InputError(f"stem_kernel must be 0 (the encoder's own) or odd, 1 to 7, got {spec.stem_kernel}")
    if not 0 <= int(spec.input_scale) <= 8:
        raise InputError(f"input_scale must be 0 (auto) to 8, got {spec.input_scale}")
    if not 1 <= int(spec.refine_layers) <= 4:
        raise InputError(f"refine_layers must be 1 to 4, got {spec.refine_layers}")
    if not 0 <= int(spec.head_only_channels) < int(spec.in_channels):
        raise InputError(f"head_only_channels must be 0 to in_channels - 1, got {spec.head_only_channels}")


def build_model(spec: ModelSpec):
    """A randomly initialised smp network ``(B, in_channels, H, W) -> (B, classes, H, W)``."""
    import segmentation_models_pytorch as smp

    validate_spec(spec)
    kwargs = {}
    if spec.arch in _DEPTH_ARCHS:
        kwargs["encoder_depth"] = spec.encoder_depth
        if spec.arch != "linknet":
            kwargs["decoder_channels"] = list(spec.decoder_channels)[: spec.encoder_depth]
    cls = getattr(smp, ARCHITECTURES[spec.arch])
    try:
        model = cls(
            encoder_name=spec.encoder,
            encoder_weights=None,
            in_channels=spec.in_channels - body_skip(spec),
            classes=spec.classes,
            **kwargs,
        )
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise InputError(f"cannot build {spec.arch} with encoder {spec.encoder}: {e}") from None
    if spec.stem_kernel:
        set_stem_kernel(model.encoder, int(spec.stem_kernel))
    drop_unused_stages(model.encoder)
    if spec.norm == "group":
        model = batchnorm_to_groupnorm(model)
    if spec.scale > 1:
        model = scaled_input(
            model, spec.scale, spec.in_channels, spec.classes, spec.refine_channels, spec.refine_layers
        )
        model.body_channels = spec.in_channels - body_skip(spec)
    return model


def body_skip(spec: ModelSpec) -> int:
    """Input channels the U-Net body does not read (``head_only_channels``, when there is a head)."""
    has_head = spec.scale > 1 and spec.refine_channels > 0
    return int(spec.head_only_channels) if has_head else 0


def set_stem_kernel(encoder, kernel: int) -> None:
    """Replace ``encoder.conv1`` (ResNet-style stems) by a fresh convolution with the same
    channels and stride and a ``kernel`` x ``kernel`` window; encoders without such a stem
    keep their own."""
    import torch.nn as nn

    conv = getattr(encoder, "conv1", None)
    if not isinstance(conv, nn.Conv2d):
        return
    encoder.conv1 = nn.Conv2d(
        conv.in_channels, conv.out_channels, kernel, stride=conv.stride, padding=kernel // 2, bias=False
    )


def drop_unused_stages(encoder) -> None:
    """Replace the stages of a ResNet-style encoder (``layer1`` .. ``layer4``) that its depth
    never runs by parameter-free identities. smp builds them anyway: at depth 4, ``layer4``
    held 8.4 of the network's 11.5 M parameters, copied into the weight average every
    iteration and written to every bundle. Other encoders are left as they are."""
    import torch.nn as nn

    depth = getattr(encoder, "_depth", None)
    if depth is None:
        return
    for k in range(max(int(depth), 1), 5):  # depth d runs layer1 .. layer(d - 1)
        if isinstance(getattr(encoder, f"layer{k}", None), nn.Module):
            setattr(encoder, f"layer{k}", nn.Identity())


_UNUSED_STAGE_KEY = re.compile(r"(^|\.)encoder\.layer[1-4]\.")


def without_unused_stages(names, expected) -> list:
    """The tensor ``names`` (of a stored state dict) minus those of encoder stages the network
    no longer builds (`drop_unused_stages`): older bundles carry them; ``expected``: the names
    the network's state dict has."""
    return [k for k in names if k in expected or not _UNUSED_STAGE_KEY.search(k)]


_SCALED_INPUT = None


def scaled_input(net, factor: int, in_channels: int, classes: int, refine: int, layers: int):
    """``net`` wrapped to run on its input average-pooled by ``factor``, with the logits
    upsampled (bilinear) back to the input size and corrected by a small full-resolution head
    on the input (``layers`` 3 x 3 convolutions of ``refine`` channels; 0: none).
    ``.encoder`` stays reachable."""
    global _SCALED_INPUT
    if _SCALED_INPUT is None:
        _SCALED_INPUT = _scaled_input_class()
    return _SCALED_INPUT(net, factor, in_channels, classes, refine, layers)


def _scaled_input_class():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class ScaledInput(nn.Module):
        """Runs ``net`` on the input average-pooled by ``factor`` and upsamples its logits
        (bilinear) back to the input size: the whole plane in every iteration at 1/factor² of
        the cost (see docs/training.md, fifth session)."""

        def __init__(self, net, factor: int, in_channels: int, classes: int, refine: int, layers: int):
            super().__init__()
            self.net = net
            self.factor = factor
            self.refine = None
            self.reach = 0
            if refine > 0:
                # thin structures (vessels, membranes) vanish in the pooled input: this head
                # sees the full-resolution channels and the upsampled logits; its last layer
                # starts at zero so that training starts from the plain upsampled prediction
                last = nn.Conv2d(refine, classes, 1)
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)
                hidden = []
                for k in range(layers):
                    hidden += [nn.Conv2d(refine if k else in_channels + classes, refine, 3, padding=1)]
                    hidden += [nn.ReLU(inplace=True)]
                self.refine = nn.Sequential(*hidden, last)
                self.reach = layers
            self.body_channels = in_channels

        @property
        def encoder(self):
            return self.net.encoder

        def body(self, pooled):
            """The network's logits on the pooled input (B, C, h, w): its first
            ``body_channels`` only; the rest (the click forest's) reach the head alone."""
            if pooled.shape[1] != self.body_channels:
                pooled = pooled[:, : self.body_channels]
            return self.net(pooled)

        def forward(self, x):
            return self.from_low(x, self.body(F.avg_pool2d(x, self.factor)))

        def from_low(self, x, low):
            """Full-resolution logits of ``x`` (B, C, H, W) given the network's logits ``low``
            on the pooled input: upsampled (bilinear), plus the head's correction."""
            y = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)
            if self.refine is not None:
                y = y + self.refine(torch.cat([x, y.to(x.dtype)], 1))
            return y

        def forward_at(self, x, bi, yi, xi):
            """Logits (N, K) at the pixels (bi[n], :, yi[n], xi[n]) of ``x`` (B, C, H, W):
            equal to ``forward(x)[bi, :, yi, xi]``, but the full-resolution head runs only on
            the window around each pixel it sees (5 x 5 for two layers). Training needs logits
            at the labelled pixels only, and the head over a whole 512² plane cost ~25 % of an
            iteration. ``x`` may be a `training_kit.AugmentedPlane` (a batch of one)."""
            pooled = x.pooled(self.factor) if hasattr(x, "pooled") else F.avg_pool2d(x, self.factor)
            low = self.body(pooled)
            base, feat, inside = self.point_inputs(x, low, bi, yi, xi)
            return base if feat is None else base + self.head_at(feat, inside)

        def point_inputs(self, x, low, bi, yi, xi):
            """What the full-resolution head needs at pixels (bi, yi, xi) of ``x`` given the
            network's low-resolution logits ``low`` (B, K, h, w): the upsampled logits there
            (N, K), the head's input windows (N, C + K, S, S) and which window pixels lie
            inside the image (N, S, S), S = 2 reach + 1 (None, None without a head)."""
            big_h, big_w = x.shape[-2:]
            small_h, small_w = low.shape[-2:]
            reach = self.reach  # one pixel per 3 x 3 convolution of the head
            offsets = torch.arange(-reach, reach + 1, device=x.device)
            rows = yi[:, None, None] + offsets[None, :, None]
            cols = xi[:, None, None] + offsets[None, None, :]
            inside = (rows >= 0) & (rows < big_h) & (cols >= 0) & (cols < big_w)
            rows, cols = rows.clamp(0, big_h - 1), cols.clamp(0, big_w - 1)
            batch = bi[:, None, None]
            up = _bilinear_at(low, batch, rows, cols, small_h / big_h, small_w / big_w)
            base = up[:, :, reach, reach]
            if self.refine is None:
                return base, None, None
            window = x.window(batch, rows, cols) if hasattr(x, "window") else x[batch, :, rows, cols]
            window = window.permute(0, 3, 1, 2)  # (N, C, S, S)
            # zero outside the image, as the head's zero padding sees it
            feat = torch.cat([window, up.to(window.dtype)], 1) * inside[:, None]
            return base, feat, inside

        def pixel_inputs(self, x, low, bi, yi, xi):
            """The head's input at pixels (bi, yi, xi) of ``x`` (B, C, H, W) given the
            network's logits ``low``: (N, C + K), the channels of ``x`` then the upsampled
            logits (as `point_inputs` windows hold them, one pixel each)."""
            b, r, c = (v[:, None, None] for v in (bi, yi, xi))
            up = _bilinear_at(low, b, r, c, low.shape[-2] / x.shape[-2], low.shape[-1] / x.shape[-1])
            return torch.cat([x[bi, :, yi, xi], up[:, :, 0, 0].to(x.dtype)], 1)

        def head_at(self, feat, inside):
            """The head's correction (N, K) at the centres of windows from `point_inputs`
            (valid convolutions; window pixels outside the image are zero after each layer,
            as the head's zero padding sees them)."""
            *convs, last = [m for m in self.refine if isinstance(m, nn.Conv2d)]
            hidden = feat
            for k, conv in enumerate(convs, 1):
                hidden = F.relu(F.conv2d(hidden, conv.weight, conv.bias))
                if k < len(convs):
                    hidden = hidden * inside[:, None, k:-k, k:-k]
            return last(hidden)[:, :, 0, 0]

    def _bilinear_at(low, batch, rows, cols, scale_h: float, scale_w: float):
        """``F.interpolate(low, bilinear, align_corners=False)`` read at full-resolution
        pixels (rows, cols) of images ``batch`` only: (N, K, *rows.shape[1:])."""

        def taps(pos, scale, size):
            src = ((pos.to(torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
            first = src.floor().long()
            return first, (first + 1).clamp(max=size - 1), src - first

        y0, y1, wy = taps(rows, scale_h, low.shape[-2])
        x0, x1, wx = taps(cols, scale_w, low.shape[-1])
        top = low[batch, :, y0, x0] * (1 - wx)[..., None] + low[batch, :, y0, x1] * wx[..., None]
        bottom = low[batch, :, y1, x0] * (1 - wx)[..., None] + low[batch, :, y1, x1] * wx[..., None]
        return (top * (1 - wy)[..., None] + bottom * wy[..., None]).permute(0, 3, 1, 2)

    return ScaledInput


def batchnorm_to_groupnorm(module):
    """Replace every BatchNorm2d in ``module`` (in place) by a GroupNorm with up to 8 groups
    that normalises in float32 (`float32_group_norm`; same parameters as ``nn.GroupNorm``)."""
    import torch.nn as nn

    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            c = child.num_features
            groups = math.gcd(8, c)
            setattr(module, name, float32_group_norm(groups, c, eps=child.eps))
        else:
            batchnorm_to_groupnorm(child)
    return module


_FLOAT32_GROUP_NORM = None


def float32_group_norm(groups: int, channels: int, eps: float = 1e-5):
    """An ``nn.GroupNorm`` (same state dict) whose statistics and normalisation run in
    float32 whatever the input's dtype; the output has the input's dtype. Under bf16 autocast
    on channels-last tensors torch's bf16 GroupNorm backward was ~20 % of a training
    iteration; in float32 the same work takes about a third of that (docs/training.md, tenth
    session), with float32 statistics as a bonus."""
    global _FLOAT32_GROUP_NORM
    if _FLOAT32_GROUP_NORM is None:
        import torch.nn as nn
        import torch.nn.functional as F

        class Float32GroupNorm(nn.GroupNorm):
            def forward(self, x):
                y = F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps)
                return y.to(x.dtype)

        _FLOAT32_GROUP_NORM = Float32GroupNorm
    return _FLOAT32_GROUP_NORM(groups, channels, eps=eps, affine=True)


def load_encoder_weights(model, path) -> tuple[int, int]:
    """Copy matching tensors from a LOCAL weights file into ``model.encoder``.

    Accepts a safetensors file or a torch state dict loaded with ``weights_only=True`` (never
    executes code). Keys may be prefixed with ``encoder.``. Returns (matched, total) counts.
    """
    from pathlib import Path

    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(f"weights file not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
    except Exception as e:  # noqa: BLE001 - any failure means "not a weights file"
        raise InputError(f"cannot read weights file {p}: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict):
        raise InputError(f"weights file {p} does not hold a state dict")
    target = model.encoder.state_dict()
    matched = {}
    for k, v in state.items():
        key = k[len("encoder.") :] if k.startswith("encoder.") else k
        if key in target and tuple(target[key].shape) == tuple(v.shape):
            matched[key] = v
    if not matched:
        raise InputError(f"no tensor in {p} matches the encoder ({len(target)} tensors)")
    model.encoder.load_state_dict(matched, strict=False)
    return len(matched), len(target)


def choose_device(name: str = "auto"):
    """'auto' -> cuda if available, else mps, else cpu. InputError if a named one is missing."""
    import torch

    name = (name or "auto").lower()
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if has_mps else torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--device cuda was asked for, but CUDA is not available here")
        return torch.device(name)
    if name == "mps":
        if not has_mps:
            raise InputError("--device mps was asked for, but MPS is not available here")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device '{name}'; use auto, cpu, cuda or mps")


_SET_UP = False
_AUTO_THREADS = False


def setup_torch(threads: int | None = None) -> None:
    """Once per process: CPU thread count and flushing denormals.

    Denormal floats made one CPU training run 20x slower; flushing them must happen before the
    first parallel op. ``threads`` None: the POINTSEG_THREADS environment variable if set,
    else a fair share of the cores between the training processes running on this machine
    (`cpu_share`; kept up to date by `rebalance_threads` while training).
    """
    global _SET_UP, _AUTO_THREADS
    import torch

    if threads is None and os.environ.get("POINTSEG_THREADS"):
        threads = int(os.environ["POINTSEG_THREADS"])
    if threads:
        torch.set_num_threads(int(threads))
        _AUTO_THREADS = False
    elif _SET_UP and not _AUTO_THREADS:
        pass  # a count given earlier in this process stays (same threads, same bf16 results)
    else:
        from . import cpu_share

        cpu_share.register()
        _AUTO_THREADS = True
        torch.set_num_threads(cpu_share.fair_threads())
    if not _SET_UP:
        torch.set_flush_denormal(True)
        _SET_UP = True


def rebalance_threads() -> None:
    """Re-read how many trainings share the machine and adjust torch's threads (no-op when
    the thread count was given explicitly). Cheap: a directory listing."""
    if not _AUTO_THREADS:
        return
    import torch

    from . import cpu_share

    n = cpu_share.fair_threads()
    if n != torch.get_num_threads():
        torch.set_num_threads(n)


_BF16_NATIVE: bool | None = None


def use_bf16(precision: str, device) -> bool:
    """Whether the network runs under bf16 autocast (training and prediction): ``precision``
    'bf16', or 'auto' on a CPU with native bf16 instructions (1.6-3x faster there, much slower
    elsewhere). ``device``: a torch.device."""
    global _BF16_NATIVE
    if precision != "auto":
        return precision == "bf16"
    if device.type != "cpu":
        return False
    if _BF16_NATIVE is None:
        import torch

        try:
            _BF16_NATIVE = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            _BF16_NATIVE = False
    return _BF16_NATIVE
