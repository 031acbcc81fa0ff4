"""Model bundle: one ``.safetensors`` file holding weights and everything needed to reuse them.

The safetensors header carries a JSON document under the key ``napari_pointseg``:
format version, model spec (architecture, encoder, channels, classes), the class-index ->
label-value mapping, input spec (filter bank, feature standardisation), the normalisation of
the training image, the ordered points and the training config. Loading never executes code
from the file (safetensors holds tensors and strings only), and the header is checked before any
tensor is read: numbers in it (classes, channels, filter sigmas, sizes) must lie within sane
bounds and the tensor names / shapes must be exactly those of the network the header
describes, so a foreign or tampered file is one InputError, never a huge allocation or a
``load_state_dict`` traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .files import atomic_write
from .images import Normalisation
from .inputs import InputSpec
from .models import ModelSpec
from .points import PointSet

FORMAT = "napari-pointseg-bundle"
FOREST_X, FOREST_Y = "forest.features", "forest.labels"
FORMAT_VERSION = 1
_KEY = "napari_pointseg"

# Sanity bounds of header numbers (far above anything the trainers write). They keep a
# tampered header from allocating: prediction memory grows with classes x pixels, the filter
# bank's kernels with sigma.
MAX_CLASSES = 1024
MAX_IMAGE_CHANNELS = 512
MAX_IN_CHANNELS = 8192
MAX_SIGMA = 64.0
MAX_SIGMAS = 16
MAX_DECODER_CHANNELS = 4096
MAX_TREES = 1000


@dataclass
class Bundle:
    """A trained network and its metadata.

    classes: label values, index i = network output channel i. state_dict: tensors on CPU.
    forest_data: (features (N, F) float32, class indices (N,) int64) the click forest of an
    input spec with a forest was fitted on (refitted wherever the bundle predicts).
    """

    spec: ModelSpec
    classes: list[int]
    input_spec: InputSpec
    normalisation: Normalisation | None
    state_dict: dict
    points: PointSet | None = None
    train_config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    forest_data: tuple | None = None

    def build(self, device="cpu"):
        """The network with the bundle's weights, in eval mode, on ``device``."""
        from .models import build_model, without_unused_stages

        model = build_model(self.spec)
        keep = without_unused_stages(self.state_dict, model.state_dict())
        try:
            model.load_state_dict({k: self.state_dict[k] for k in keep})
        except RuntimeError as e:  # a Bundle made in memory with weights of another network
            first = str(e).strip().splitlines()[-1].strip() if str(e).strip() else type(e).__name__
            raise InputError(
                f"the bundle's weights do not match its {self.spec.arch}/{self.spec.encoder} header ({first})"
            ) from None
        return model.to(device).eval()


def save_bundle(
    path: str | Path,
    model,
    spec: ModelSpec,
    classes,
    input_spec: InputSpec,
    normalisation: Normalisation | None = None,
    points: PointSet | None = None,
    train_config: dict | None = None,
    extra: dict | None = None,
    forest_data: tuple | None = None,
) -> Path:
    """Write a bundle (``.safetensors`` is appended if missing). Written atomically.

    forest_data: (features (N, F), class indices (N,)) of the click forest, required when
    ``input_spec`` has one (stored as the tensors ``forest.features`` / ``forest.labels``).
    """
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "classes": [int(c) for c in classes],
        "input": input_spec.to_dict(),
        "normalisation": normalisation.to_dict() if normalisation else None,
        "points": None
        if points is None
        else {
            "coords": points.coords.tolist(),
            "labels": points.labels.tolist(),
            "order": points.order.tolist(),
        },
        "train_config": train_config or {},
        "extra": extra or {},
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if input_spec.forest is not None:
        if forest_data is None:
            raise ValueError("an input spec with a click forest needs forest_data")
        x, y = forest_data
        state[FOREST_X] = torch.as_tensor(np.asarray(x, np.float32)).reshape(len(y), -1).contiguous()
        state[FOREST_Y] = torch.as_tensor(np.asarray(y, np.int64)).contiguous()
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata={_KEY: json.dumps(meta)})
    return path


def load_bundle(path: str | Path) -> Bundle:
    """Read a bundle. InputError for a missing, foreign, corrupt, inconsistent or newer-format
    file (the header is checked against the tensors before any of them is loaded)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model bundle not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            shapes = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
            if _KEY not in header:
                raise InputError(f"{path} is a safetensors file but not a napari-pointseg bundle")
            bundle = _bundle_from_header(path, header[_KEY])
            forest_shapes = {k: shapes.pop(k) for k in (FOREST_X, FOREST_Y) if k in shapes}
            check_forest(bundle.input_spec, forest_shapes, path)
            check_weights(bundle.spec, shapes, path)
            bundle.state_dict = {k: f.get_tensor(k) for k in shapes}
            if forest_shapes:
                y = f.get_tensor(FOREST_Y).numpy().astype(np.int64)
                if len(y) and not (0 <= y.min() and y.max() < bundle.input_spec.forest.classes):
                    raise InputError(
                        f"{path}: forest.labels holds a class index outside the forest's classes"
                    )
                x = f.get_tensor(FOREST_X).float().numpy()
                if not np.all(np.isfinite(x)):
                    raise InputError(f"{path}: forest.features holds non-finite values")
                bundle.forest_data = (x, y)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure = not a valid bundle
        raise InputError(
            f"{path} is not a readable model bundle ({type(e).__name__}: {_one_line(e)})"
        ) from None
    return bundle


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _bundle_from_header(path: Path, text: str) -> Bundle:
    """The Bundle (without tensors) a header describes; InputError unless every field is
    present, of the right type and within the sanity bounds above."""
    try:
        meta = json.loads(text)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError("wrong format tag")
        version = meta["format_version"]
        if not isinstance(version, int) or version < 1:
            raise ValueError(f"bad format_version {version!r}")
        if version > FORMAT_VERSION:
            raise InputError(
                f"{path} was written by a newer napari-pointseg (bundle format "
                f"{version} > {FORMAT_VERSION}); please upgrade"
            )
        spec = _check_spec(meta["spec"])
        classes = meta["classes"]
        if (
            not isinstance(classes, list)
            or not all(_is_int(c) for c in classes)
            or len(set(classes)) != len(classes)
        ):
            raise ValueError("classes must be a list of distinct integers")
        if not 2 <= len(classes) <= MAX_CLASSES:
            raise ValueError(f"{len(classes)} classes (2 to {MAX_CLASSES} are supported)")
        if not all(-(2**63) <= c < 2**63 for c in classes):
            raise ValueError("a class value is outside the 64-bit integer range")
        if len(classes) != spec.classes:
            raise ValueError(f"{len(classes)} class values for a network with {spec.classes} outputs")
        input_spec = _check_input(meta["input"], spec)
        norm = meta.get("normalisation")
        if norm is not None:
            norm = Normalisation.from_dict(norm)
            _floats(norm.low, input_spec.n_channels, "normalisation low")
            _floats(norm.high, input_spec.n_channels, "normalisation high")
        pts = meta.get("points")
        points = None
        if pts:
            points = PointSet(
                np.asarray(pts["coords"], float).reshape(len(pts["labels"]), -1), pts["labels"], pts["order"]
            )
            if not np.all(np.isfinite(points.coords)):
                raise ValueError("non-finite point coordinates")
        train_config, extra = meta.get("train_config", {}), meta.get("extra", {})
        if not isinstance(train_config, dict) or not isinstance(extra, dict):
            raise ValueError("train_config and extra must be objects")
        return Bundle(
            spec=spec,
            classes=[int(c) for c in classes],
            input_spec=input_spec,
            normalisation=norm,
            state_dict={},
            points=points,
            train_config=train_config,
            extra=extra,
        )
    except InputError as e:
        if str(path) in str(e):
            raise
        raise InputError(f"{path}: bad bundle header ({_one_line(e)})") from None
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path}: corrupt bundle metadata ({type(e).__name__}: {_one_line(e)})") from None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_spec(d) -> ModelSpec:
    """ModelSpec from the header, every size bounded (ValueError / InputError otherwise)."""
    from .models import ARCHITECTURES, validate_spec

    if not isinstance(d, dict):
        raise ValueError("spec must be an object")
    spec = ModelSpec.from_dict(d)
    if not isinstance(spec.arch, str) or spec.arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {spec.arch!r}")
    if not isinstance(spec.encoder, str):
        raise ValueError("encoder must be a name")
    for name, lo, hi in (
        ("in_channels", 1, MAX_IN_CHANNELS),
        ("classes", 2, MAX_CLASSES),
        ("encoder_depth", 1, 5),
        ("input_scale", 0, 8),
        ("refine_channels", 0, MAX_DECODER_CHANNELS),
        ("refine_layers", 1, 4),
        ("head_only_channels", 0, MAX_IN_CHANNELS),
    ):
        if not hasattr(spec, name):  # a field this version of ModelSpec does not have
            continue
        v = getattr(spec, name)
        if not _is_int(v) or not lo <= v <= hi:
            raise ValueError(f"spec {name} {v!r} is not an integer in [{lo}, {hi}]")
    dc = spec.decoder_channels
    if (
        not isinstance(dc, list)
        or not 1 <= len(dc) <= 8
        or not all(_is_int(c) and 1 <= c <= MAX_DECODER_CHANNELS for c in dc)
    ):
        raise ValueError("spec decoder_channels must be 1 to 8 integers in [1, 4096]")
    validate_spec(spec)  # encoder name and norm
    return spec


def _check_input(d, spec: ModelSpec) -> InputSpec:
    """InputSpec from the header: channel count, filter bank and standardisation bounded and
    consistent with the network's input channels."""
    if not isinstance(d, dict):
        raise ValueError("input must be an object")
    n = d.get("n_channels")
    if not _is_int(n) or not 1 <= n <= MAX_IMAGE_CHANNELS:
        raise ValueError(f"input n_channels {n!r} is not an integer in [1, {MAX_IMAGE_CHANNELS}]")
    fb = d.get("filter_bank")
    if fb is not None and (
        not isinstance(fb, dict)
        or not isinstance(fb.get("sigmas", []), list)
        or len(fb.get("sigmas", [])) > MAX_SIGMAS
    ):
        raise ValueError(f"filter_bank must hold at most {MAX_SIGMAS} sigmas")
    fo = d.get("forest")
    if fo is not None and (
        not isinstance(fo, dict)
        or not _is_int(fo.get("classes"))
        or fo["classes"] != spec.classes
        or not _is_int(fo.get("trees"))
        or not 1 <= fo["trees"] <= MAX_TREES
        or not _is_int(fo.get("seed", 0))
        or not isinstance(fo.get("scale", 1.0), (int, float))
        or not np.isfinite(fo.get("scale", 1.0))
    ):
        raise ValueError(f"forest must give the network's {spec.classes} classes and 1 to {MAX_TREES} trees")
    inp = InputSpec.from_dict(d)
    for s in inp.filter_bank.sigmas:
        if not (np.isfinite(s) and 0 < s <= MAX_SIGMA):
            raise ValueError(f"filter sigma {s:g} is outside (0, {MAX_SIGMA:g}]")
    if inp.in_channels != spec.in_channels:
        raise ValueError(
            f"the filter bank gives {inp.in_channels} input channels, the network takes {spec.in_channels}"
        )
    for name in ("feature_mean", "feature_std"):
        v = getattr(inp, name)
        if v is not None:
            _floats(v, inp.bank_channels, name)
    if inp.feature_std is not None and min(inp.feature_std) <= 0:
        raise ValueError("feature_std must be > 0")
    return inp


def _floats(values, n: int, what: str) -> None:
    if (
        not isinstance(values, list)
        or len(values) != n
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values)
    ):
        raise ValueError(f"{what} must be {n} finite numbers")


def check_weights(spec: ModelSpec, shapes: dict, path) -> None:
    """InputError unless ``shapes`` ({name: (shape, dtype)}, from the file's index) are exactly
    the tensors of the network ``spec`` describes. The network is built on torch's meta device,
    so nothing is allocated."""
    import torch

    from .models import build_model, without_unused_stages

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_model(spec).state_dict().items()}
    shapes = {k: shapes[k] for k in without_unused_stages(shapes, expected)}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k][0])
    if missing or unexpected or wrong:
        if wrong:
            k = wrong[0]
            detail = f"{k} has shape {list(shapes[k][0])}, the header's network needs {list(expected[k])}"
        elif missing:
            detail = f"{len(missing)} tensor(s) missing, e.g. {missing[0]}"
        else:
            detail = f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]}"
        raise InputError(
            f"{path}: the weights do not match the header's {spec.arch}/{spec.encoder} network ({detail})"
        )
    bad = sorted(k for k, (_, dt) in shapes.items() if not str(dt).upper().startswith(("F", "BF", "I")))
    if bad:
        raise InputError(f"{path}: tensor {bad[0]} has unsupported dtype {shapes[bad[0]][1]}")


def check_forest(input_spec: InputSpec, shapes: dict, path) -> None:
    """InputError unless the forest tensors (``shapes``: {name: (shape, dtype)}) are exactly
    what the input spec's click forest needs: none without one; with one, (N, F) features for
    the image's channels and N labels."""
    from .forest_input import n_forest_features

    if input_spec.forest is None:
        if shapes:
            raise InputError(f"{path}: click-forest tensors in a bundle whose input has no forest")
        return
    if set(shapes) != {FOREST_X, FOREST_Y}:
        raise InputError(f"{path}: the input has a click forest but the bundle lacks its tensors")
    (xs, xt), (ys, yt) = shapes[FOREST_X], shapes[FOREST_Y]
    f = n_forest_features(input_spec.n_channels)
    if len(xs) != 2 or xs[1] != f or len(ys) != 1 or ys[0] != xs[0]:
        raise InputError(
            f"{path}: forest tensors of shapes {list(xs)} / {list(ys)}, the input needs (N, {f}) / (N,)"
        )
    if not str(xt).upper().startswith(("F", "BF")) or not str(yt).upper().startswith("I"):
        raise InputError(f"{path}: forest tensors of dtypes {xt} / {yt}")


def save_trainer(path: str | Path, trainer, extra: dict | None = None) -> Path:
    """Bundle a SparseTrainer's current network, classes, input spec, points and click forest."""
    forest = trainer.image.forest
    return save_bundle(
        path,
        trainer.model,
        trainer.spec,
        trainer.classes,
        trainer.image.spec,
        trainer.image.normalisation,
        trainer.points,
        trainer.config.to_dict(),
        extra,
        forest_data=None if forest is None else forest_data_of(forest, trainer.image.n_channels),
    )


def forest_data_of(forest, n_channels: int) -> tuple:
    """(features, class indices) a ClickForest was fitted on; none (0 rows) when it never was."""
    from .forest_input import n_forest_features

    if forest.x is None or len(forest.x) == 0:
        return np.zeros((0, n_forest_features(n_channels)), np.float32), np.zeros(0, np.int64)
    return forest.x, forest.y


def predict_with_bundle(
    bundle: Bundle,
    image: np.ndarray,
    channel_axis="auto",
    rgb=None,
    device="auto",
    renormalise: bool = True,
    model=None,
) -> np.ndarray:
    """Label values for ``image`` (2D -> (H, W); 3D stack -> (Z, H, W)), int64.

    renormalise: fit the percentile normalisation on this image (default; images differ in
    brightness) instead of reusing the training image's.
    """
    from .inputs import PreparedImage
    from .models import choose_device, setup_torch
    from .predict import predict_proba

    setup_torch()
    dev = choose_device(device)
    prep = PreparedImage(
        image,
        channel_axis,
        rgb,
        spec=bundle.input_spec,
        normalisation=None if renormalise else bundle.normalisation,
        forest_data=bundle.forest_data,
    )
    model = model if model is not None else bundle.build(dev)
    classes = np.asarray(bundle.classes, dtype=np.int64)
    out = [
        classes[np.argmax(predict_proba(model, prep.plane(z), dev, stride=bundle.spec.stride), 0)]
        for z in range(prep.n_planes)
    ]
    return np.stack(out) if prep.is_3d else out[0]
