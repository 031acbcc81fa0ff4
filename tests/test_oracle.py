"""Oracle (Algorithm 1), samplers, suggest_points, RF baseline: fast checks on 64x64 images."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pointseg.core.errors import InputError
from napari_pointseg.core.models import ModelSpec
from napari_pointseg.core.oracle_loop import (
    OracleResult,
    blob_weights,
    run_oracle,
    sample_from_weights,
    weight_map,
)
from napari_pointseg.core.points import PointSet
from napari_pointseg.core.suggest import ACQUISITIONS, suggest_points
from napari_pointseg.core.train_setup import TrainSetup
from napari_pointseg.core.trainer import TrainConfig
from napari_pointseg.oracle import samplers
from napari_pointseg.oracle.baseline import rf_baseline

# a small, quick network for end-to-end runs
TINY_SPEC = ModelSpec(encoder="resnet18", encoder_depth=3, decoder_channels=[32, 16, 8])
TINY_CFG = TrainConfig(iters_per_step=2, min_iters_per_step=1, final_iters=2, crop_size=None, warmup_iters=2)
TINY_SETUP = TrainSetup(spec=TINY_SPEC, config=TINY_CFG, device="cpu")


def blobs(size=64, seed=0):
    """Two bright discs (label 2) and a dark square (label 3) on background (label 1) + noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = np.ones((size, size), np.int64)
    mask[(yy - 20) ** 2 + (xx - 20) ** 2 < 100] = 2
    mask[(yy - 44) ** 2 + (xx - 40) ** 2 < 64] = 2
    mask[5:15, 45:60] = 3
    image = np.choose(mask - 1, [0.3, 1.0, 0.0]) + rng.normal(0, 0.05, mask.shape)
    return image.astype(np.float32), mask


# -- weight map -------------------------------------------------------------------------------


def test_weight_map_centre_of_largest_blob():
    truth = np.ones((40, 40), np.int64)
    pred = truth.copy()
    pred[10:21, 10:21] = 2  # 11x11 wrong blob: the largest
    pred[30:33, 30:33] = 2  # a smaller one
    w = weight_map(pred, truth)
    assert w.dtype == np.float64 and w.shape == truth.shape
    assert w.sum() == pytest.approx(1.0)
    assert np.all(w[pred == truth] == 0)  # zero outside R
    assert np.all(w[30:33, 30:33] == 0)  # only the largest component
    assert np.unravel_index(np.argmax(w), w.shape) == (15, 15)  # maximal at the centre
    assert w[15, 15] > w[10, 10] > 0


def test_weight_map_no_error_and_whole_image():
    truth = np.ones((8, 8), np.int64)
    assert not weight_map(truth, truth).any()
    w = weight_map(truth + 1, truth)  # everything wrong: distance to the border
    assert w.sum() == pytest.approx(1.0) and w[4, 4] > w[0, 0] > 0


def test_weight_map_worst_class():
    truth = np.ones((30, 30), np.int64)
    truth[:, 15:] = 2
    pred = truth.copy()
    pred[2:12, 2:12] = 2  # big error inside class 1 (class 1 IoU still high)
    truth[20:24, 20:24] = 3  # class 3 never predicted: IoU 0 -> worst
    w = weight_map(pred, truth, restrict_to_worst_class=True)
    assert w.sum() == pytest.approx(1.0)
    assert np.all(w[truth != 3] == 0)


def test_blob_weights_one_map_per_blob():
    truth = np.ones((40, 40), np.int64)
    pred = truth.copy()
    pred[2:10, 2:10] = 2
    pred[20:24, 20:24] = 2
    maps = blob_weights(pred, truth, 5)
    assert len(maps) == 2
    assert maps[0][5, 5] > 0 and maps[1][21, 21] > 0 and maps[0][21, 21] == 0
    assert all(m.sum() == pytest.approx(1.0) for m in maps)


def test_sample_from_weights_no_duplicates_no_excluded():
    rng = np.random.default_rng(0)
    w = np.zeros((20, 20))
    w[5:10, 5:10] = 1.0
    ex = np.zeros((20, 20), bool)
    ex[5, 5:10] = True
    pts = sample_from_weights(w, 10, rng, exclude=ex)
    assert pts.shape == (10, 2) and pts.dtype == np.int64
    assert len({tuple(p) for p in pts}) == 10
    assert not ex[pts[:, 0], pts[:, 1]].any() and np.all(w[pts[:, 0], pts[:, 1]] > 0)
    # fewer pixels of positive weight than asked: all of them, no more
    assert len(sample_from_weights(w, 100, rng, exclude=ex)) == 20
    # excluded given as coordinates
    pts = sample_from_weights(w, 25, rng, exclude=np.array([[5, 5], [6, 6]]))
    assert len(pts) == 23


# -- samplers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", samplers.LABEL_BASED)
def test_label_based_samplers(kind):
    image, mask = blobs()
    pts = samplers.label_based_points(kind, image, mask, 30, np.random.default_rng(1))
    assert pts.shape == (30, 2) and pts.dtype == np.int64
    assert len({tuple(p) for p in pts}) == 30
    assert pts.min() >= 0 and pts[:, 0].max() < 64 and pts[:, 1].max() < 64
    if kind == "edge":
        from skimage.segmentation import find_boundaries

        assert find_boundaries(mask, mode="thick")[pts[:, 0], pts[:, 1]].all()


def test_samplers_respect_exclude():
    image, mask = blobs()
    ex = np.zeros(mask.shape, bool)
    ex[:, :60] = True  # only 4 columns free
    for fn in (samplers.random_points, samplers.grid_points):
        pts = fn(mask.shape, 50, np.random.default_rng(0), exclude=ex)
        assert len(pts) == 50 and not ex[pts[:, 0], pts[:, 1]].any()
    pts = samplers.geodesic_points(image, 20, np.random.default_rng(0), exclude=ex)
    assert len(pts) == 20 and not ex[pts[:, 0], pts[:, 1]].any()
    assert len({tuple(p) for p in pts}) == 20


@pytest.mark.parametrize("kind", ACQUISITIONS)
def test_suggest_points(kind):
    rng = np.random.default_rng(0)
    p = rng.dirichlet([1, 1, 1], size=(48, 40)).transpose(2, 0, 1).astype(np.float32)
    p[:, 10:20, 10:20] = 1 / 3  # maximally uncertain square
    ex = np.zeros((48, 40), bool)
    ex[12, 12] = True
    pts = suggest_points(p, 8, kind, exclude=ex, rng=0)
    assert pts.shape == (8, 2) and pts.dtype == np.int64
    assert len({tuple(q) for q in pts}) == 8
    assert not ex[pts[:, 0], pts[:, 1]].any()
    assert pts[:, 0].max() < 48 and pts[:, 1].max() < 40
    # the first picks come from the uncertain square and are spread out, not clumped
    inside = (pts[:, 0] >= 10) & (pts[:, 0] < 20) & (pts[:, 1] >= 10) & (pts[:, 1] < 20)
    assert inside.all()
    d = np.hypot(*(pts[:, None] - pts[None]).transpose(2, 0, 1))
    assert d[np.triu_indices(8, 1)].min() >= 2


def test_suggest_points_bad_input():
    with pytest.raises(InputError):
        suggest_points(np.ones((1, 4, 4), np.float32), 2)
    with pytest.raises(InputError):
        suggest_points(np.full((2, 4, 4), 0.5, np.float32), 2, kind="nope")
    assert len(suggest_points(np.full((2, 4, 4), 0.5, np.float32), 100)) == 16


# -- baseline ---------------------------------------------------------------------------------


def test_rf_baseline_label_values():
    image, mask = blobs()
    yx = samplers.grid_points(mask.shape, 60, np.random.default_rng(0))
    pts = PointSet(yx.astype(float), mask[yx[:, 0], yx[:, 1]])
    pred, secs = rf_baseline(image, pts)
    assert pred.shape == mask.shape and set(np.unique(pred)) <= {1, 2, 3}
    assert secs > 0
    assert (pred == mask).mean() > 0.9


# -- oracle -----------------------------------------------------------------------------------


def test_run_oracle_end_to_end():
    image, mask = blobs()
    rows = []
    res = run_oracle(
        image,
        mask,
        budget=0.006,
        target=1.0,
        seed=0,
        setup=TINY_SETUP,
        callback=rows.append,
    )
    assert isinstance(res, OracleResult)
    n_budget = int(0.006 * mask.size)
    assert len(res.points) == n_budget
    assert res.prediction.shape == mask.shape and set(np.unique(res.prediction)) <= {1, 2, 3}
    assert res.proba.shape == (3, 64, 64) and res.proba.dtype == np.float32
    m = res.metrics
    for key in (
        "miou",
        "pixel_accuracy",
        "per_class_iou",
        "n_points",
        "fraction_labeled",
        "seconds",
        "steps",
        "curve",
    ):
        assert key in m
    assert m["steps"] == len(m["curve"]) == len(rows)
    assert [r["n_points"] for r in m["curve"]] == sorted(r["n_points"] for r in m["curve"])
    assert m["curve"][0]["n_points"] == 1
    # labels are the mask's values at the points, points are distinct and in reveal order
    pix = res.points.pixel_coords()
    assert np.array_equal(res.points.labels, mask[pix[:, 0], pix[:, 1]])
    assert len({tuple(p) for p in pix}) == len(pix)
    assert np.array_equal(res.points.order, np.arange(len(pix)))


def test_run_oracle_stops_at_target_and_fixed_k():
    image, mask = blobs()
    res = run_oracle(image, mask, budget=0.02, target=0.01, setup=TINY_SETUP)
    assert res.metrics["steps"] == 1 and len(res.points) == 1
    res = run_oracle(
        image,
        mask,
        budget=0.01,
        target=1.0,
        points_per_step=8,
        iters_per_step=1,
        setup=TINY_SETUP,
    )
    assert [r["n_points"] for r in res.metrics["curve"]][:3] == [1, 9, 17]


@pytest.mark.parametrize(
    "kwargs, msg",
    [
        ({"budget": 0}, "budget"),
        ({"budget": 1.5}, "budget"),
        ({"target": 0}, "target"),
        ({"target": 1.2}, "target"),
    ],
)
def test_run_oracle_bad_numbers(kwargs, msg):
    image, mask = blobs()
    with pytest.raises(InputError, match=msg):
        run_oracle(image, mask, setup=TINY_SETUP, **kwargs)


def test_run_oracle_bad_masks():
    image, mask = blobs()
    with pytest.raises(InputError, match="shape"):
        run_oracle(image, mask[:32], setup=TINY_SETUP)
    with pytest.raises(InputError, match="single class"):
        run_oracle(image, np.ones_like(mask), setup=TINY_SETUP)
    with pytest.raises(InputError, match="2D"):
        run_oracle(
            np.stack([image] * 5),
            np.stack([mask] * 5),
            setup=TrainSetup(channel_axis=None, spec=TINY_SPEC, config=TINY_CFG, device="cpu"),
        )


def test_active_acquisition_points_reveal_the_mask_in_the_oracle_loop():
    """`samplers.active_points` (the sampler table's label-free acquisition): n distinct
    points, labelled from the mask, picked by the acquisition in the oracle's loop."""
    image, mask = blobs()
    res = samplers.active_points(image, mask, 12, "margin", seed=0, setup=TINY_SETUP)
    pix = res.points.pixel_coords()
    assert len(pix) == 12 and len({tuple(p) for p in pix}) == 12
    assert np.array_equal(res.points.labels, mask[pix[:, 0], pix[:, 1]])


def test_forest_with_its_own_oracle():
    """`rf_oracle`: Algorithm 1 with the forest as the predictor stops exactly at each budget,
    reveals the mask's labels at distinct pixels, and its points (picked where the forest is
    wrong) serve the forest better than as many random ones; bad budgets and 3D fail clearly."""
    from napari_pointseg.core.errors import InputError
    from napari_pointseg.core.metrics import miou
    from napari_pointseg.oracle.baseline import rf_baseline, rf_oracle

    image, mask = blobs(64, 0)
    low, high = rf_oracle(image, mask, (0.03, 0.01), seed=0)
    assert (low["fraction"], len(low["points"]), high["fraction"], len(high["points"])) == (
        0.01,
        40,
        0.03,
        122,
    )
    yx = high["points"].pixel_coords()
    assert len(np.unique(yx, axis=0)) == len(yx)
    np.testing.assert_array_equal(high["points"].labels, mask[yx[:, 0], yx[:, 1]])
    np.testing.assert_array_equal(low["points"].coords, high["points"].coords[:40])  # one run
    assert set(np.unique(high["prediction"])) <= set(np.unique(mask))
    assert high["miou"] == pytest.approx(miou(mask, high["prediction"]))
    yx = samplers.random_points(mask.shape, 122, np.random.default_rng(0))
    rand, _ = rf_baseline(image, PointSet(yx.astype(float), mask[yx[:, 0], yx[:, 1]]), seed=0)
    assert high["miou"] >= 0.99 > miou(mask, rand)
    with pytest.raises(InputError, match="budgets"):
        rf_oracle(image, mask, (0.0,))
    with pytest.raises(InputError):
        rf_oracle(np.stack([image] * 3), np.stack([mask] * 3), (0.01,), channel_axis=None)


def test_simulated_user_correcting_the_forest():
    """`rf_correcting_user`: the same first clicks as the network's user (5 per class), then
    region centres of the forest's mistakes; a checkpoint per fraction, the last one early
    when nothing is left to correct; bad fractions fail clearly."""
    from napari_pointseg.oracle.correcting_user import first_clicks, rf_correcting_user

    image, mask = blobs(64, 0)
    low, high = rf_correcting_user(image, mask, checkpoints=(0.03, 0.005), seed=0)
    assert (low["fraction"], high["fraction"]) == (0.005, 0.03)
    first = first_clicks(mask, 5, np.random.default_rng(0))
    np.testing.assert_array_equal(low["points"].pixel_coords()[: len(first)], first)
    assert len(low["points"]) >= 20 and low["rounds"] >= 2
    yx = high["points"].pixel_coords()
    assert len(np.unique(yx, axis=0)) == len(yx)
    np.testing.assert_array_equal(high["points"].labels, mask[yx[:, 0], yx[:, 1]])
    # each round clicks where the forest was wrong: it ends (nearly) right on this easy image
    assert high["miou"] >= 0.99
    with pytest.raises(InputError, match="checkpoints"):
        rf_correcting_user(image, mask, checkpoints=(1.5,))
