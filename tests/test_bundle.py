import numpy as np
import pytest
import torch
from _synth import TINY_SPEC, blobs, fast_config, random_points

from napari_pointseg.core.bundle import load_bundle, predict_with_bundle, save_trainer
from napari_pointseg.core.errors import InputError
from napari_pointseg.core.session import make_trainer
from napari_pointseg.core.train_setup import TrainSetup


def test_bundle_round_trip_predicts_identically(tmp_path):
    image, mask = blobs(64, 2)
    pts = random_points(mask, 16, 2)
    tr = make_trainer(
        image, pts, setup=TrainSetup(spec=TINY_SPEC, config=fast_config(forest_trees=0), device="cpu")
    ).train_all()
    path = save_trainer(tmp_path / "model", tr)
    assert path.name == "model.safetensors"
    b = load_bundle(path)
    assert b.classes == [1, 2]
    assert b.spec == tr.spec
    np.testing.assert_array_equal(b.points.coords, pts.coords)
    np.testing.assert_array_equal(b.points.order, pts.order)
    direct = tr.predict()
    again = predict_with_bundle(b, image, device="cpu", renormalise=False)
    np.testing.assert_array_equal(direct, again)


def test_bundle_keeps_the_click_forest(tmp_path):
    """The forest's training set travels in the bundle and is refitted where it predicts. After
    the final phase the trainer reads the forest in the bag at the clicks, as the bundle does,
    so the two predict the training image identically."""
    image, mask = blobs(64, 2)
    pts = random_points(mask, 24, 2)
    setup = TrainSetup(spec=TINY_SPEC, config=fast_config(forest_on="always"), device="cpu")
    tr = make_trainer(image, pts, setup=setup)
    tr.train_all()
    assert tr.image.spec.forest is not None and tr.image.forest.fitted
    assert tr.spec.in_channels == tr.image.spec.bank_channels + 2
    b = load_bundle(save_trainer(tmp_path / "model", tr))
    assert b.input_spec.forest == tr.image.spec.forest
    x, y = b.forest_data
    assert x.shape == (24, 20) and y.tolist() == (np.searchsorted([1, 2], pts.labels)).tolist()
    direct = tr.predict()
    again = predict_with_bundle(b, image, device="cpu", renormalise=False)
    np.testing.assert_array_equal(direct, again)


def test_bundle_forest_tensors_are_checked(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    image, mask = blobs(48, 2)
    tr = make_trainer(
        image,
        random_points(mask, 12, 2),
        setup=TrainSetup(spec=TINY_SPEC, config=fast_config(forest_on="always"), device="cpu"),
    ).train_all()
    path = save_trainer(tmp_path / "model", tr)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    bad = dict(tensors)
    bad["forest.features"] = torch.zeros(12, 7)
    save_file(bad, str(tmp_path / "shape.safetensors"), metadata=meta)
    with pytest.raises(InputError, match="forest tensors of shapes"):
        load_bundle(tmp_path / "shape.safetensors")
    gone = {k: v for k, v in tensors.items() if not k.startswith("forest.")}
    save_file(gone, str(tmp_path / "gone.safetensors"), metadata=meta)
    with pytest.raises(InputError, match="lacks its tensors"):
        load_bundle(tmp_path / "gone.safetensors")
    labels = dict(tensors)
    labels["forest.labels"] = torch.full((12,), 5, dtype=torch.int64)
    save_file(labels, str(tmp_path / "labels.safetensors"), metadata=meta)
    with pytest.raises(InputError, match="outside the forest's classes"):
        load_bundle(tmp_path / "labels.safetensors")


def test_foreign_and_corrupt_files_give_clear_errors(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(InputError, match="not a napari-pointseg bundle"):
        load_bundle(tmp_path / "foreign.safetensors")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(InputError, match="not a readable model bundle"):
        load_bundle(tmp_path / "corrupt.safetensors")
    with pytest.raises(InputError, match="not found"):
        load_bundle(tmp_path / "missing.safetensors")


def test_pickle_file_is_not_executed(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(InputError):
        load_bundle(tmp_path / "evil.safetensors")
    assert not (tmp_path / "pwned").exists()


def test_bundle_rejects_wrong_channel_count(tmp_path):
    image, mask = blobs(64, 2)
    tr = make_trainer(
        image, random_points(mask, 8), setup=TrainSetup(spec=TINY_SPEC, config=fast_config(), device="cpu")
    ).train_all()
    b = load_bundle(save_trainer(tmp_path / "m", tr))
    with pytest.raises(InputError, match="channel"):
        predict_with_bundle(b, np.zeros((64, 64, 3), np.uint8), device="cpu")


def test_older_bundles_with_unused_encoder_stages_still_load(tmp_path):
    """Bundles written before the unused encoder stages were dropped carry their tensors: they
    load, and predict as before; any other stray tensor is still refused."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    image, mask = blobs(64, 2)
    tr = make_trainer(
        image, random_points(mask, 8), setup=TrainSetup(spec=TINY_SPEC, config=fast_config(), device="cpu")
    ).train_all()
    path = save_trainer(tmp_path / "m", tr)
    with safe_open(str(path), framework="pt", device="cpu") as f:
        header, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    assert not any(".layer3." in k for k in tensors)  # TINY_SPEC: depth 3 runs layer1, layer2
    old = dict(tensors, **{"encoder.layer3.0.conv1.weight": torch.zeros(4, 4, 3, 3)})
    save_file(old, str(tmp_path / "old.safetensors"), metadata=header)
    expected = predict_with_bundle(load_bundle(path), image, device="cpu")
    got = predict_with_bundle(load_bundle(tmp_path / "old.safetensors"), image, device="cpu")
    assert np.array_equal(got, expected)
    stray = dict(tensors, **{"encoder.extra.weight": torch.zeros(2)})
    save_file(stray, str(tmp_path / "stray.safetensors"), metadata=header)
    with pytest.raises(InputError, match="unexpected"):
        load_bundle(tmp_path / "stray.safetensors")
