"""The click forest as input channels (core/forest_input.py, PreparedImage, SparseTrainer)."""

import numpy as np
from _synth import TINY_SPEC, blobs, fast_config, random_points

from napari_pointseg.core.forest_input import ClickForest, ForestSpec, forest_features, n_forest_features
from napari_pointseg.core.inputs import InputSpec, PreparedImage
from napari_pointseg.core.session import make_trainer
from napari_pointseg.core.train_setup import TrainSetup


def test_forest_channels_are_neutral_until_fitted_and_out_of_bag_at_the_clicks():
    image, mask = blobs(48, 1)
    prep = PreparedImage(image)
    bank = prep.plane().shape[0]
    prep.use_forest(ForestSpec(classes=2, trees=20))
    assert prep.spec.in_channels == bank + 2
    x = prep.plane()
    assert x.shape == (bank + 2, 48, 48) and not x[bank:].any()
    pts = random_points(mask, 30, 3)
    yx = pts.pixel_coords()
    cls = pts.labels - 1
    prep.fit_forest(np.zeros(len(yx), np.int64), yx, cls)
    ch = prep.plane()[bank:]
    # the probabilities minus 1 / K (scale 1): the two channels sum to zero
    np.testing.assert_allclose(ch.sum(0), 0, atol=1e-5)
    assert ((ch[1] > 0) == (mask == 2)).mean() > 0.85
    # at the clicks: the out-of-bag probability, not the forest's own (in-bag) one
    forest = prep.forest
    inbag = forest.clf.predict_proba(prep.forest_features(0)[yx[:, 0] * 48 + yx[:, 1]])
    assert np.allclose(ch[:, yx[:, 0], yx[:, 1]].T, forest.oob - 0.5)
    assert not np.allclose(forest.oob, inbag)
    # ... until switched to the bag (after the final phase), then everywhere the forest's own
    assert prep.set_forest_out_of_bag(False)
    assert np.allclose(prep.plane()[bank:, yx[:, 0], yx[:, 1]].T, inbag - 0.5, atol=1e-6)
    assert not prep.set_forest_out_of_bag(False)


def test_forest_features_see_every_channel():
    rng = np.random.default_rng(0)
    img = rng.random((3, 32, 32)).astype(np.float32)
    f = forest_features(img)
    assert f.shape == (32 * 32, n_forest_features(3)) and f.dtype == np.float32
    # a contrast in one channel only, the others flat: the forest's features still show it
    one = np.zeros((3, 32, 32), np.float32)
    one[1, :, 16:] = 1
    assert forest_features(one).std(0).max() > 0.1


def test_a_forest_with_one_class_stays_neutral():
    forest = ClickForest(ForestSpec(classes=3, trees=5)).fit(
        np.zeros((4, 20), np.float32), np.ones(4, np.int64)
    )
    assert not forest.fitted
    assert not forest.channels(np.zeros((16, 20), np.float32), (4, 4)).any()


def test_trainer_refits_the_forest_as_points_are_admitted():
    image, mask = blobs(64, 2)
    pts = random_points(mask, 40, 2)
    tr = make_trainer(
        image, pts, setup=TrainSetup(spec=TINY_SPEC, config=fast_config(forest_on="always"), device="cpu")
    )
    sizes = []
    fit = tr.image.fit_forest

    def spy(z, yx, cls):
        sizes.append(len(yx))
        fit(z, yx, cls)

    tr.image.fit_forest = spy
    tr.train_all()
    assert not tr.image._forest_oob  # the final phase is over: in the bag
    # first at 8 points, then each time they grew by half, and once more on all of them
    assert sizes[0] == 8 and sizes[-1] == 40
    assert all(b >= 1.5 * a for a, b in zip(sizes[:-2], sizes[1:-1]))
    from napari_pointseg.core.metrics import segmentation_metrics

    # the last fit's channels on their own already segment the blobs; this tiny network, 90
    # iterations in all, only starts to use them (real images: docs/training.md)
    forest_only = np.argmax(tr.image.plane()[-2:], 0) + 1
    assert segmentation_metrics(mask, forest_only)["miou"] > 0.95
    assert segmentation_metrics(mask, tr.predict())["miou"] > 0.7


def test_no_forest_channels_when_switched_off():
    image, mask = blobs(48, 2)
    tr = make_trainer(
        image,
        random_points(mask, 12, 2),
        setup=TrainSetup(spec=TINY_SPEC, config=fast_config(forest_trees=0), device="cpu"),
    )
    assert tr.image.spec.forest is None and tr.image.forest is None
    assert tr.spec.in_channels == tr.image.spec.bank_channels


def test_input_spec_round_trips_the_forest_and_reads_old_headers():
    spec = InputSpec(3, forest=ForestSpec(classes=4, trees=30, seed=2))
    back = InputSpec.from_dict(spec.to_dict())
    assert back.forest == spec.forest and back.in_channels == spec.in_channels
    old = {k: v for k, v in spec.to_dict().items() if k != "forest"}
    assert InputSpec.from_dict(old).forest is None


def test_the_forest_channels_reach_the_head_only():
    import torch

    from napari_pointseg.core.models import ModelSpec, build_model

    spec = ModelSpec(
        in_channels=6,
        classes=2,
        encoder_depth=3,
        decoder_channels=[16, 8, 8],
        input_scale=2,
        head_only_channels=2,
    )
    model = build_model(spec).eval()
    assert model.net.encoder.conv1.in_channels == 4 and model.body_channels == 4
    x = torch.randn(1, 6, 32, 32)
    y = x.clone()
    y[:, 4:] += 1.0
    pooled = lambda t: torch.nn.functional.avg_pool2d(t, 2)  # noqa: E731
    with torch.no_grad():
        torch.testing.assert_close(model.body(pooled(x)), model.body(pooled(y)))
        torch.nn.init.normal_(model.refine[-1].weight)
        assert not torch.allclose(model(x), model(y))
        # the point-wise path agrees with the whole-plane one
        idx = torch.tensor([0, 0]), torch.tensor([3, 20]), torch.tensor([5, 30])
        torch.testing.assert_close(
            model.forward_at(x, *idx), model(x)[idx[0], :, idx[1], idx[2]], rtol=1e-4, atol=1e-4
        )


def test_trainer_sends_the_forest_to_the_head_of_reduced_networks():
    from napari_pointseg.core.models import ModelSpec

    image, mask = blobs(48, 2)
    spec = ModelSpec(encoder_depth=3, decoder_channels=[16, 8, 8], input_scale=2, refine_channels=8)
    tr = make_trainer(
        image,
        random_points(mask, 12, 2),
        setup=TrainSetup(spec=spec, config=fast_config(forest_on="always"), device="cpu"),
    )
    assert tr.spec.head_only_channels == 2 and tr.net.body_channels == tr.spec.in_channels - 2
    tr.train_all()
    allin = make_trainer(
        image,
        random_points(mask, 12, 2),
        setup=TrainSetup(spec=spec, config=fast_config(forest_on="always", forest_to="all"), device="cpu"),
    )
    assert allin.spec.head_only_channels == 0 and allin.net.body_channels == allin.spec.in_channels


def test_the_forest_joins_colour_images_only_by_default():
    """Grey images, and grey ones stored as RGB, get no forest: its features would repeat the
    filter bank's. Channels that differ get one."""
    image, mask = blobs(48, 2)
    pts = random_points(mask, 12, 2)
    setup = TrainSetup(spec=TINY_SPEC, config=fast_config(), device="cpu")
    assert make_trainer(image, pts, setup=setup).image.spec.forest is None
    rng = np.random.default_rng(0)
    grey_rgb = np.repeat(image[..., None], 3, -1) + rng.normal(0, 0.002, (48, 48, 3)).astype(np.float32)
    tr = make_trainer(grey_rgb, pts, setup=setup.but(rgb=True))
    assert tr.image.colour_share() < 1e-3 and tr.image.spec.forest is None
    colour = np.stack([image, rng.random((48, 48)), 1 - image], -1).astype(np.float32)
    tr = make_trainer(colour, pts, setup=setup.but(rgb=True))
    assert tr.image.colour_share() > 1e-3 and tr.image.spec.forest is not None
    assert tr.spec.in_channels == tr.image.spec.bank_channels + 2


def test_edited_points_leave_the_forest_at_once():
    """A deleted or relabelled admitted click must not stay in the forest (nor in a bundle)."""
    image, mask = blobs(48, 2)
    pts = random_points(mask, 20, 2)
    tr = make_trainer(
        image, pts, setup=TrainSetup(spec=TINY_SPEC, config=fast_config(forest_on="always"), device="cpu")
    )
    tr.train_all()
    assert len(tr.image.forest.y) == 20
    keep = np.arange(20) != 5
    tr.set_points(type(pts)(pts.coords[keep], pts.labels[keep]))
    tr.train_all()
    assert len(tr.image.forest.y) == 19
    np.testing.assert_array_equal(tr.image.forest.y, pts.labels[keep] - 1)
    relabelled = pts.labels[keep].copy()
    relabelled[0] = 3 - relabelled[0]
    tr.set_points(type(pts)(pts.coords[keep], relabelled))
    tr.train_all()
    np.testing.assert_array_equal(tr.image.forest.y, relabelled - 1)
    # the last admitted click deleted (Remove last point): it leaves the forest too
    tr.set_points(type(pts)(pts.coords[keep][:-1], relabelled[:-1]))
    tr.train_all()
    np.testing.assert_array_equal(tr.image.forest.y, relabelled[:-1] - 1)


def test_the_forest_has_as_many_trees_as_the_baseline_it_is_measured_against():
    """The default click forest is the baseline's forest size (100 trees; docs/training.md,
    twenty-third session), and a colour image's trainer builds it with the configured size."""
    from napari_pointseg.core.trainer import TrainConfig
    from napari_pointseg.oracle.baseline import BASELINE_TREES

    assert TrainConfig().forest_trees == ForestSpec(classes=2).trees == BASELINE_TREES
    image, mask = blobs(48, 2)
    rng = np.random.default_rng(0)
    colour = np.stack([image, rng.random((48, 48)), 1 - image], -1).astype(np.float32)
    setup = TrainSetup(spec=TINY_SPEC, config=fast_config(forest_trees=7), device="cpu", rgb=True)
    tr = make_trainer(colour, random_points(mask, 12, 2), setup=setup)
    assert tr.image.spec.forest.trees == 7


def test_forest_teacher_targets_the_forest_times_its_confidence_while_clicks_are_few():
    """The forest teacher (`TrainConfig.forest_teacher`): its soft target is the fitted click
    forest's probabilities times its confidence (zero on the padding); it starts at
    ``forest_teacher_from`` admitted points, its weight fades linearly to nothing at
    ``forest_teacher_until`` and it ends once points join
    the trained network; it rides with the consistency term's pixels outside the polishes
    only, and the oracle trains without it."""
    import pytest

    from napari_pointseg.core.oracle_loop import oracle_config

    image, mask = blobs(60, 2)
    cfg = fast_config(forest_on="always", forest_teacher=2.0, forest_teacher_from=0, forest_teacher_until=40)
    tr = make_trainer(
        image, random_points(mask, 12, 2), setup=TrainSetup(spec=TINY_SPEC, config=cfg, device="cpu")
    )
    assert tr.image.forest_probabilities(0) is None and tr._teacher_target(0) is None  # unfitted
    tr.train_all()
    proba = tr.image.forest_probabilities(0)
    assert proba.shape == (2, 60, 60)
    np.testing.assert_allclose(proba.sum(0), 1, atol=1e-5)
    soft = tr._teacher_target(0).numpy()
    padded = tr._plane(0).shape[-2:]
    assert soft.shape == (2, *padded) and padded != (60, 60)
    confidence = (proba.max(0) - 0.5) / 0.5
    np.testing.assert_allclose(soft[:, :60, :60], proba * confidence, atol=1e-6)
    assert not soft[:, 60:].any() and not soft[:, :, 60:].any()
    assert tr._teacher_weight() == pytest.approx(2.0 * (1 - 12 / 40))
    tr.config.forest_teacher_from = 13  # not before this many points
    assert tr._teacher_weight() == 0 and tr._teacher_target(0) is None
    tr.config.forest_teacher_from = 0
    tr._final_left = None
    batch = tr._batch(newest=0)
    assert len(batch) == 4 and batch[2] is None  # no consistency term in a first training
    assert batch[3].shape == (batch[1].shape[0], 2, *batch[1].shape[1:])
    tr._polishing = True  # the polishes must move the prediction at the clicks it contradicts
    assert tr._batch(newest=0)[3] is None
    tr._polishing = False
    tr.config.forest_teacher_until = 12  # faded out
    assert tr._teacher_weight() == 0 and tr._teacher_target(0) is None
    tr.config.forest_teacher_until, tr.config.forest_teacher = 40, 0.0  # off
    assert tr._teacher_target(0) is None
    tr.config.forest_teacher = 2.0
    assert tr._teacher_target(0) is not None
    # clicks join the trained network: from here on the consistency term holds what it taught
    more = random_points(mask, 3, 9)
    tr.add_points(more.coords, more.labels)
    tr._apply_pending()
    assert tr._teacher_weight() == 0 and tr._teacher_target(0) is None
    assert oracle_config(cfg).forest_teacher == 0


def test_forest_teacher_brings_a_few_clicks_network_towards_the_forest():
    """From 8 clicks, a network trained with the teacher agrees more with the forest's confident
    pixels, scores higher and still honours its clicks (this tiny network without it: 0.91
    agreement, mIoU 0.44, 7 of 8 clicks; with it 0.95, 0.53, 8 of 8)."""
    from napari_pointseg.core.metrics import segmentation_metrics

    image, mask = blobs(64, 3)
    pts = random_points(mask, 8, 4)
    agree, score, honoured = {}, {}, {}
    for weight in (0.0, 3.0):
        cfg = fast_config(forest_on="always", forest_teacher=weight, forest_teacher_from=0)
        tr = make_trainer(image, pts, setup=TrainSetup(spec=TINY_SPEC, config=cfg, device="cpu"))
        tr.train_all()
        proba = tr.image.forest_probabilities(0)
        sure = proba.max(0) > 0.8
        pred = tr.predict()
        agree[weight] = (pred == np.argmax(proba, 0) + 1)[sure].mean()
        score[weight] = segmentation_metrics(mask, pred)["miou"]
        honoured[weight] = tr.honoured()
    assert agree[3.0] > agree[0.0] + 0.02, agree
    assert score[3.0] > score[0.0] + 0.03, score
    assert honoured[3.0] == 1.0 and honoured[3.0] >= honoured[0.0]


def test_forest_teacher_on_the_pooled_path_and_never_against_a_class_the_forest_lacks():
    """At reduced resolution (the whole plane pooled, a full-resolution head) the teacher's
    target is augmented with the plane and an iteration trains on it; a class admitted since
    the forest's last fit (probability 0 everywhere in it) turns the teacher off."""
    from dataclasses import replace

    image, mask = blobs(96, 1)
    spec = replace(TINY_SPEC, input_scale=2)
    cfg = fast_config(forest_on="always", crop_size=None, batch_size=1, forest_teacher_from=0)
    tr = make_trainer(
        image, random_points(mask, 12, 5), setup=TrainSetup(spec=spec, config=cfg, device="cpu")
    )
    tr.train_all()
    tr._final_left = None
    x, tb, before, teacher = tr._batch(newest=0)
    assert before is None and teacher.shape == (1, 2, *tb.shape[1:])
    assert teacher.sum() > 0 and float(teacher.max()) <= 1.0
    loss, _ = tr._iterate(0)
    assert np.isfinite(loss)
    tr.image.forest.clf.classes_ = np.array([0])  # as if class 1 came after the last fit
    assert tr._teacher_target(0) is None
