"""Scribbles (painted label images) as ordered point annotations: core and CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from _synth import blobs

from napari_pointseg.cli import main
from napari_pointseg.core.errors import InputError
from napari_pointseg.core.points import PointSet
from napari_pointseg.core.scribbles import (
    ScribbleHistory,
    merge_points,
    scribble_points,
    strokes_from_labels,
    thin_stroke,
)


def _line(shape, y, x0, x1, width=1):
    """Flat indices of a horizontal brush stroke painted left to right."""
    ys, xs = np.meshgrid(np.arange(y, y + width), np.arange(x0, x1), indexing="ij")
    order = np.argsort(xs.reshape(-1), kind="stable")  # column by column: paint order
    return np.ravel_multi_index((ys.reshape(-1)[order], xs.reshape(-1)[order]), shape)


def test_thin_stroke_spacing_and_cap():
    pixels = np.stack([np.full(100, 5), np.arange(100)], axis=1)  # 1 px line, 100 long
    keep = thin_stroke(pixels, spacing=10, max_points=0)
    assert len(keep) == 10 and np.all(np.diff(keep) > 0)
    assert thin_stroke(pixels, spacing=1, max_points=0).tolist() == list(range(100))
    capped = thin_stroke(pixels, spacing=1, max_points=5)
    assert capped.tolist() == [0, 25, 50, 74, 99]  # evenly along the stroke, ends kept
    assert len(thin_stroke(pixels[:0], 4, 4)) == 0
    with pytest.raises(InputError):
        thin_stroke(pixels, spacing=0)


def test_history_orders_strokes_thins_and_erases():
    shape = (40, 60)
    labels = np.zeros(shape, np.uint8)
    history = ScribbleHistory(shape)
    first = _line(shape, 5, 0, 50, width=3)
    labels.reshape(-1)[first] = 2
    assert history.add_stroke(labels, first, after=-1) == 0
    second = _line(shape, 30, 10, 20)
    labels.reshape(-1)[second] = 1
    history.add_stroke(labels, second, after=3)
    pts = first = history.points(labels, spacing=5, max_per_stroke=0)
    assert pts.stroke.tolist() == [0] * 10 + [1] * 2
    assert set(pts.labels[pts.stroke == 0].tolist()) == {2} and set(pts.labels[pts.stroke == 1]) == {1}
    assert np.all(np.diff(pts.coords[pts.stroke == 0, 1]) > 0)  # along the stroke
    assert pts.after.tolist() == [-1] * 10 + [3] * 2
    # erase the right half of the first stroke: its pixels leave training
    erased = _line(shape, 5, 25, 50, width=3)
    labels.reshape(-1)[erased] = 0
    assert history.add_stroke(labels, erased, after=4) == -1
    pts = history.points(labels, spacing=5, max_per_stroke=0)
    assert pts.coords[pts.stroke == 0, 1].max() < 25 and len(pts) == 5 + 2
    # paint over part of the second stroke with class 2: moved to the new stroke
    over = _line(shape, 30, 15, 20)
    labels.reshape(-1)[over] = 2
    history.add_stroke(labels, over, after=4)
    pts = history.points(labels, spacing=1, max_per_stroke=0)
    assert (pts.stroke == 1).sum() == 5 and (pts.stroke == 2).sum() == 5
    assert set(pts.labels[pts.stroke == 2].tolist()) == {2}
    # an undo (no stroke event): update() finds it
    labels.reshape(-1)[over] = 1
    assert history.update(labels, after=4) == 5
    pts = history.points(labels, spacing=1, max_per_stroke=0)
    assert set(pts.labels[pts.coords[:, 0] == 30].tolist()) == {1}
    # undo of the erase: the pixels return to their stroke, in their place
    labels.reshape(-1)[erased] = 2
    assert history.update(labels, after=6) == len(erased)
    restored = history.points(labels, spacing=5, max_per_stroke=0)
    np.testing.assert_array_equal(restored.coords[restored.stroke == 0], first.coords[first.stroke == 0])
    assert restored.stroke.max() == 2  # no new stroke
    with pytest.raises(InputError):
        history.points(np.zeros((3, 3), np.uint8))


def test_merge_points_puts_strokes_after_their_click():
    clicks = PointSet([[0, 0], [1, 1], [2, 2]], [1, 2, 1], [0, 5, 9])
    labels = np.zeros((10, 10), np.uint8)
    history = ScribbleHistory(labels.shape)
    for after, (y, value) in zip([-1, 5, 5], [(3, 2), (5, 1), (7, 2)]):
        stroke = _line(labels.shape, y, 0, 2)
        labels.reshape(-1)[stroke] = value
        history.add_stroke(labels, stroke, after=after)
    merged = merge_points(clicks, history.points(labels, spacing=1, max_per_stroke=0))
    assert merged.order.tolist() == list(range(9))
    assert merged.coords[:, 0].tolist() == [3, 3, 0, 1, 5, 5, 7, 7, 2]
    assert merged.labels.tolist() == [2, 2, 1, 2, 1, 1, 2, 2, 1]
    assert len(merge_points(clicks, history.points(np.zeros_like(labels)))) == 3


def test_strokes_without_history_interleave_classes_largest_first():
    labels = np.zeros((20, 20), np.int64)
    labels[0:2, 0:2] = 1  # small class-1 component (4 px)
    labels[10:15, 0:5] = 1  # large class-1 component (25 px)
    labels[0:3, 10:13] = 7  # class-7 component (9 px)
    labels[19, 19] = 7  # single pixel
    strokes = strokes_from_labels(labels)
    sizes_values = [(len(s), int(labels.reshape(-1)[s[0]])) for s in strokes]
    assert sizes_values == [(25, 1), (9, 7), (4, 1), (1, 7)]
    assert all(np.all(np.diff(s) > 0) for s in strokes)  # raster order within a stroke
    pts = scribble_points(labels, spacing=1, max_per_stroke=3)
    assert pts.labels.tolist() == [1, 1, 1, 7, 7, 7, 1, 1, 1, 7]
    with pytest.raises(InputError, match="no painted"):
        scribble_points(np.zeros((4, 4), np.uint8))
    # a 3D stack: components are 3D
    stack = np.zeros((3, 8, 8), np.uint8)
    stack[:, 2, 2] = 2
    stack[1, 6, 6] = 1
    assert [len(s) for s in strokes_from_labels(stack)] == [1, 3]


@pytest.fixture
def files(tmp_path):
    image, mask = blobs(64, 0)
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "mask.tif", mask.astype(np.uint8))
    scribbles = np.zeros_like(mask, dtype=np.uint8)
    for value in (1, 2):  # a few short strokes well inside each class
        ys, xs = np.nonzero(mask == value)
        pick = np.random.default_rng(value).choice(len(ys), 4, replace=False)
        for y, x in zip(ys[pick], xs[pick]):
            scribbles[y, max(x - 3, 0) : x + 4] = np.where(mask[y, max(x - 3, 0) : x + 4] == value, value, 0)
    tifffile.imwrite(tmp_path / "scribbles.tif", scribbles)
    PointSet([[1, 1]], [1]).to_csv(tmp_path / "one.csv")
    return tmp_path


FAST = ["--iters-per-point", "2", "--crop-size", "32", "--encoder-depth", "3", "--device", "cpu", "--quiet"]


def test_cli_trains_from_scribbles_alone_and_with_points(files):
    out = files / "o"
    args = ["train", str(files / "img.tif"), "--scribbles", str(files / "scribbles.tif")]
    assert main([*args, "--out", str(out), "--mask", str(files / "mask.tif"), *FAST, "--threads", "1"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_points"] > 8 and metrics["miou"] > 0.5
    out2 = files / "o2"
    with_csv = ["train", str(files / "img.tif"), str(files / "one.csv"), "--scribbles"]
    code = main([*with_csv, str(files / "scribbles.tif"), "--scribble-max", "2", "--out", str(out2), *FAST])
    assert code == 0
    assert (out2 / "prediction.tif").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "give a points CSV"),
        (["--scribbles", "missing.tif"], "scribbles file not found"),
        (["--scribbles", "mask.tif", "--scribble-spacing", "0"], "--scribble-spacing must be >= 1"),
        (["--scribbles", "small.tif"], "have shape (8, 8), the image (64, 64)"),
        (["--scribbles", "empty.tif"], "no painted"),
    ],
)
def test_cli_scribble_errors(files, capsys, extra, message):
    tifffile.imwrite(files / "small.tif", np.ones((8, 8), np.uint8))
    tifffile.imwrite(files / "empty.tif", np.zeros((64, 64), np.uint8))
    extra = [str(files / e) if e.endswith(".tif") else e for e in extra]
    code = main(["train", str(files / "img.tif"), *extra, "--out", str(files / "o"), *FAST])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pointseg train: error:") and message in err[0]
