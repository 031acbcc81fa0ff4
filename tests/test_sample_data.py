"""Synthetic samples: determinism, documented layout, committed files, example points."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_pointseg.core.errors import InputError
from napari_pointseg.core.points import PointSet
from napari_pointseg.samples import synthetic
from napari_pointseg.samples.clicks import human_like_points
from napari_pointseg.samples.files import SAMPLE_NAMES, load_sample, make_dataset

# name -> (image shape, image dtype, mask classes, channel_axis, rgb) of the committed samples
SPEC = {
    "nuclei": ((512, 512), np.uint16, {1, 2}, None, False),
    "cells": ((2, 384, 384), np.uint16, {1, 2, 3}, 0, False),
    "tissue": ((512, 512, 3), np.uint8, {1, 2, 3}, -1, True),
    "stack": ((24, 256, 256), np.uint16, {1, 2}, None, False),
}
# small versions for the cheap tests: name -> (call, expected image shape)
SMALL = {
    "nuclei": (lambda seed: synthetic.make_nuclei(size=96, seed=seed), (96, 96)),
    "cells": (lambda seed: synthetic.make_cells(size=96, seed=seed), (2, 96, 96)),
    "tissue": (lambda seed: synthetic.make_tissue(size=128, seed=seed), (128, 128, 3)),
    "stack": (lambda seed: synthetic.make_stack(shape=(8, 64, 64), seed=seed), (8, 64, 64)),
}
MAKE_SAMPLES = Path(__file__).parents[1] / "sample_data" / "make_samples.py"


def _spatial(mask_shape, name):
    return mask_shape if name != "stack" else mask_shape[1:]


@pytest.fixture(scope="module")
def make_samples():
    if not MAKE_SAMPLES.is_file():
        pytest.skip("sample_data/make_samples.py not available")
    spec = importlib.util.spec_from_file_location("_make_samples", MAKE_SAMPLES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=SAMPLE_NAMES)
def sample(request):
    return request.param, load_sample(request.param)


# -- generators --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SMALL))
def test_generators_are_deterministic(name):
    generate, shape = SMALL[name]
    image1, mask1 = generate(3)
    image2, mask2 = generate(3)
    assert np.array_equal(image1, image2) and image1.dtype == image2.dtype
    assert np.array_equal(mask1, mask2)
    points1 = human_like_points(mask1, 0.002, seed=3)
    points2 = human_like_points(mask2, 0.002, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(points1, points2))
    other, _ = generate(4)
    assert not np.array_equal(image1, other)


@pytest.mark.parametrize("name", list(SMALL))
def test_generator_layout(name):
    generate, shape = SMALL[name]
    image, mask = generate(0)
    assert image.shape == shape
    assert image.dtype == SPEC[name][1]
    assert mask.dtype == np.uint8
    spatial = shape[1:] if name == "cells" else shape[:2] if name == "tissue" else shape
    assert mask.shape == spatial
    assert set(np.unique(mask).tolist()) == SPEC[name][2]
    if image.dtype == np.uint16:
        assert image.max() <= 4095  # 12-bit camera range


def test_human_like_points_basic_rules():
    mask = np.ones((60, 80), np.uint8)
    mask[10:30, 10:40] = 2
    mask[40:44, 60:64] = 3
    coords, labels = human_like_points(mask, fraction=0.001, seed=1)
    assert coords.dtype == np.float64 and labels.dtype == np.int64
    assert len(coords) == 6  # round(0.001 * 4800) = 5 < the minimum of 2 per class
    assert np.array_equal(mask[tuple(np.rint(coords).astype(int).T)], labels)
    assert set(labels[:3].tolist()) == {1, 2, 3}
    assert len(np.unique(coords, axis=0)) == len(coords)


def test_make_dataset_writes_expected_files(tmp_path):
    paths = make_dataset(tmp_path, kind="nuclei", n_images=3, size=64, seed=0)
    names = [f"img_{i:03d}" for i in range(3)]
    assert paths == [tmp_path / "images" / f"{n}.tif" for n in names]
    for n in names:
        image = tifffile.imread(tmp_path / "images" / f"{n}.tif")
        mask = tifffile.imread(tmp_path / "masks" / f"{n}.tif")
        points = PointSet.from_csv(tmp_path / "points" / f"{n}.csv")
        assert image.shape == mask.shape == (64, 64)
        points.validate(mask.shape)
        assert np.array_equal(mask[tuple(points.pixel_coords().T)], points.labels)
    first = tifffile.imread(paths[0])
    assert not np.array_equal(first, tifffile.imread(paths[1]))


@pytest.mark.parametrize("kind", ["cells", "tissue", "stack"])
def test_make_dataset_other_kinds(tmp_path, kind):
    (path,) = make_dataset(tmp_path, kind=kind, n_images=1, size=64, seed=1)
    image = tifffile.imread(path)
    mask = tifffile.imread(tmp_path / "masks" / "img_000.tif")
    points = PointSet.from_csv(tmp_path / "points" / "img_000.csv")
    assert points.ndim == mask.ndim
    assert np.array_equal(mask[tuple(points.pixel_coords().T)], points.labels)
    assert image.shape == {"cells": (2, 64, 64), "tissue": (64, 64, 3)}.get(kind, mask.shape)


def test_make_dataset_unknown_kind(tmp_path):
    with pytest.raises(InputError, match="nuclei"):
        make_dataset(tmp_path, kind="bananas", n_images=1, size=64)


# -- committed sample files ---------------------------------------------------------------------


def test_committed_files_equal_generator_output(sample, make_samples):
    name, s = sample
    image, mask = make_samples.SAMPLES[name][0]()
    coords, labels = human_like_points(mask, make_samples.POINTS_FRACTION, seed=make_samples.SEED)
    assert np.array_equal(s.image, image) and s.image.dtype == image.dtype
    assert np.array_equal(s.mask, mask) and s.mask.dtype == mask.dtype
    assert np.array_equal(s.points.coords, coords)
    assert np.array_equal(s.points.labels, labels)
    assert np.array_equal(s.points.order, np.arange(len(labels)))


def test_committed_layout(sample):
    name, s = sample
    shape, dtype, classes, channel_axis, rgb = SPEC[name]
    assert s.image.shape == shape and s.image.dtype == dtype
    assert s.mask.dtype == np.uint8
    assert set(np.unique(s.mask).tolist()) == classes
    assert (s.channel_axis, s.rgb) == (channel_axis, rgb)
    spatial = shape[1:] if channel_axis == 0 else shape[:-1] if channel_axis == -1 else shape
    assert s.mask.shape == spatial
    image, mask, points = s[:3]  # unpacks like a tuple
    assert image is s.image and mask is s.mask and points is s.points
    assert s.image_path.is_file() and s.mask_path.is_file() and s.points_path.is_file()


def test_points_lie_inside_and_match_the_mask(sample):
    _, s = sample
    s.points.validate(s.mask.shape, min_classes=len(np.unique(s.mask)))
    pix = s.points.pixel_coords()
    assert np.array_equal(s.mask[tuple(pix.T)], s.points.labels)
    assert len(np.unique(pix, axis=0)) == len(pix), "two points on the same pixel"


def test_points_count(sample):
    name, s = sample
    plane = s.mask.shape[-2] * s.mask.shape[-1]
    n_planes = len(np.unique(s.points.coords[:, 0])) if s.mask.ndim == 3 else 1
    if s.mask.ndim == 3:
        assert 3 <= n_planes <= 8, "a human annotates a handful of slices"
    assert 0.001 <= len(s.points) / (plane * n_planes) <= 0.003


def test_first_points_cover_all_classes(sample):
    _, s = sample
    classes = set(np.unique(s.mask).tolist())
    assert set(s.points.labels[:10].tolist()) == classes
    assert set(s.points.labels[: len(classes)].tolist()) == classes


def test_load_sample_unknown_name():
    with pytest.raises(InputError) as err:
        load_sample("bananas")
    assert all(n in str(err.value) for n in SAMPLE_NAMES)


# -- napari contributions (plain data: no viewer needed) -----------------------------------------


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_napari_sample_layers(name):
    from napari_pointseg.widgets import sample_data
    from napari_pointseg.widgets._layer_names import ground_truth_layer_name, points_layer_name

    layers = getattr(sample_data, f"sample_{name}")()
    kinds = [kind for _, _, kind in layers]
    assert kinds == ["image", "labels", "points"]
    (image, image_meta, _), (truth, truth_meta, _), (coords, points_meta, _) = layers
    s = load_sample(name)
    assert np.array_equal(image, s.image) and np.array_equal(truth, s.mask)
    assert truth_meta["name"] == ground_truth_layer_name(name) and truth_meta["visible"] is False
    assert points_meta["name"] == points_layer_name(name)
    assert np.array_equal(points_meta["features"]["label"], s.points.labels)
    assert coords.shape == (len(s.points), s.mask.ndim)
    assert image_meta.get("rgb", False) == (name == "tissue")
    assert image_meta.get("channel_axis") == (0 if name == "cells" else None)
