"""Model bundle: one ``.safetensors`` file holding weights and everything needed to reuse them.

The safetensors header carries a JSON document under the key ``napari_pointseg``:
format version, model spec (architecture, encoder, channels, classes), the class-index ->
label-value mapping, input spec (filter bank, feature standardisation), the normalisation of
the training image, the ordered points and the training config. Loading never executes code
from the file (safetensors holds tensors and strings only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .images import Normalisation
from .inputs import InputSpec
from .models import ModelSpec
from .points import PointSet

FORMAT = "napari-pointseg-bundle"
FORMAT_VERSION = 1
_KEY = "napari_pointseg"


@dataclass
class Bundle:
    """A trained network and its metadata.

    classes: label values, index i = network output channel i. state_dict: tensors on CPU.
    """

    spec: ModelSpec
    classes: list[int]
    input_spec: InputSpec
    normalisation: Normalisation | None
    state_dict: dict
    points: PointSet | None = None
    train_config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def build(self, device="cpu"):
        """The network with the bundle's weights, in eval mode, on ``device``."""
        from .models import build_model

        model = build_model(self.spec)
        model.load_state_dict(self.state_dict)
        return model.to(device).eval()


def save_bundle(path: str | Path, model, spec: ModelSpec, classes, input_spec: InputSpec,
                normalisation: Normalisation | None = None, points: PointSet | None = None,
                train_config: dict | None = None, extra: dict | None = None) -> Path:
    """Write a bundle (``.safetensors`` is appended if missing). Written atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spec": spec.to_dict(),
        "classes": [int(c) for c in classes],
        "input": input_spec.to_dict(),
        "normalisation": normalisation.to_dict() if normalisation else None,
        "points": None if points is None else {
            "coords": points.coords.tolist(), "labels": points.labels.tolist(),
            "order": points.order.tolist()},
        "train_config": train_config or {},
        "extra": extra or {},
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={_KEY: json.dumps(meta)})
    tmp.replace(path)
    return path


def load_bundle(path: str | Path) -> Bundle:
    """Read a bundle. InputError for a missing, foreign, corrupt or newer-format file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model bundle not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any parse failure = not a valid bundle
        raise InputError(f"{path} is not a readable model bundle ({type(e).__name__}: {e})") from None
    if _KEY not in header:
        raise InputError(f"{path} is a safetensors file but not a napari-pointseg bundle")
    try:
        meta = json.loads(header[_KEY])
        if meta.get("format") != FORMAT:
            raise ValueError("wrong format tag")
        if int(meta["format_version"]) > FORMAT_VERSION:
            raise InputError(
                f"{path} was written by a newer napari-pointseg (bundle format "
                f"{meta['format_version']} > {FORMAT_VERSION}); please upgrade")
        pts = meta.get("points")
        points = None if not pts else PointSet(np.asarray(pts["coords"], float).reshape(len(pts["labels"]), -1),
                                               pts["labels"], pts["order"])
        norm = meta.get("normalisation")
        return Bundle(
            spec=ModelSpec.from_dict(meta["spec"]),
            classes=[int(c) for c in meta["classes"]],
            input_spec=InputSpec.from_dict(meta["input"]),
            normalisation=Normalisation.from_dict(norm) if norm else None,
            state_dict=state,
            points=points,
            train_config=meta.get("train_config", {}),
            extra=meta.get("extra", {}),
        )
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path}: corrupt bundle metadata ({type(e).__name__}: {e})") from None


def save_trainer(path: str | Path, trainer, extra: dict | None = None) -> Path:
    """Bundle a SparseTrainer's current network, classes, input spec and points."""
    return save_bundle(path, trainer.model, trainer.spec, trainer.classes, trainer.image.spec,
                       trainer.image.normalisation, trainer.points, trainer.config.to_dict(), extra)


def predict_with_bundle(bundle: Bundle, image: np.ndarray, channel_axis="auto", rgb=None,
                        device="auto", renormalise: bool = True, model=None) -> np.ndarray:
    """Label values for ``image`` (2D -> (H, W); 3D stack -> (Z, H, W)), int64.

    renormalise: fit the percentile normalisation on this image (default; images differ in
    brightness) instead of reusing the training image's.
    """
    from .inputs import PreparedImage
    from .models import choose_device, setup_torch
    from .predict import predict_proba

    setup_torch()
    dev = choose_device(device)
    prep = PreparedImage(image, channel_axis, rgb, spec=bundle.input_spec,
                         normalisation=None if renormalise else bundle.normalisation)
    model = model if model is not None else bundle.build(dev)
    classes = np.asarray(bundle.classes, dtype=np.int64)
    out = [classes[np.argmax(predict_proba(model, prep.plane(z), dev, stride=bundle.spec.stride), 0)]
           for z in range(prep.n_planes)]
    return np.stack(out) if prep.is_3d else out[0]
