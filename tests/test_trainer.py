import threading

import numpy as np
import pytest
from _synth import TINY_SPEC, blobs, fast_config, random_points

from napari_pointseg.core.errors import InputError
from napari_pointseg.core.metrics import miou
from napari_pointseg.core.predict import uncertainty
from napari_pointseg.core.session import make_trainer
from napari_pointseg.core.train_setup import TrainSetup


def _trainer(n=24, seed=0, **cfg):
    image, mask = blobs(64, seed)
    pts = random_points(mask, n, seed)
    tr = make_trainer(
        image, pts, setup=TrainSetup(spec=TINY_SPEC, config=fast_config(seed=seed, **cfg), device="cpu")
    )
    return tr, image, mask


def test_trains_to_useful_segmentation():
    tr, image, mask = _trainer(n=40, iters_per_step=6, final_iters=60, crop_size=None)
    tr.train_all()
    pred = tr.predict()
    assert set(np.unique(pred)) <= {1, 2}  # label values, not class indices
    assert miou(mask, pred) >= 0.8


def test_entropy_term_makes_unlabelled_pixels_confident():
    """The entropy term acts on every crop pixel, not only the points: with it the mean
    prediction entropy over the image ends lower than without, from the same seed."""

    def mean_entropy(weight):
        tr, _, _ = _trainer(n=12, final_iters=60, entropy_weight=weight, entropy_ramp_iters=5)
        tr.train_all()
        return float(uncertainty(tr.predict_proba(), "entropy").mean())

    without, with_term = mean_entropy(0.0), mean_entropy(1.0)
    assert with_term < 0.8 * without, (with_term, without)


def test_correct_order_admits_points_step_by_step():
    tr, _, _ = _trainer(n=12, final_iters=0)
    seen = [u.n_active for u in tr.run()]
    assert seen[-1] == len(tr.points)
    # admission grows by points_per_step (4) and never shrinks
    assert sorted(set(seen)) == [4, 8, 12] and seen == sorted(seen)


def test_stop_between_iterations():
    tr, _, _ = _trainer(n=24)
    n = 0
    for _update in tr.run():
        n += 1
        if n == 3:
            tr.stop()
    assert n == 3 and tr.iteration == 3
    # resume continues from the current weights and state
    tr.train_all()
    assert tr.n_admitted == len(tr.points) and tr.iteration > 3


def test_stop_from_another_thread():
    """stop() from another thread ends run() while it waits for new points (how the widget
    stops it). run() goes on in a daemon thread: a regression fails after a timeout instead
    of hanging the suite (run() with wait_for_points never ends on its own)."""
    tr, _, _ = _trainer(n=8, wait_for_points=True, final_iters=2)
    waiting = threading.Event()
    ended = threading.Event()

    def consume():
        for u in tr.run():
            if u.waiting:
                waiting.set()
        ended.set()

    threading.Thread(target=consume, daemon=True).start()
    assert waiting.wait(60), "run() never reached the waiting state"
    assert not ended.wait(0.3)  # waiting for points: it does not end by itself
    tr.stop()
    assert ended.wait(10), "run() did not end after stop() from another thread"
    assert tr.stopped


def test_points_appended_while_running_join_in_order():
    tr, _, mask = _trainer(n=8, final_iters=0)
    extra = random_points(mask, 6, seed=5)
    added = False
    for u in tr.run():
        if not added and u.n_active == 4:
            tr.add_points(extra.coords, extra.labels)
            added = True
    assert tr.n_admitted == len(tr.points) == 8 + len(extra)
    # the new points come after the original ones
    assert tr.points.order.tolist() == list(range(len(tr.points)))
    np.testing.assert_array_equal(tr.points.coords[-len(extra) :], extra.coords)


def test_set_points_rejects_unknown_class():
    tr, _, _ = _trainer(n=8)
    pts = tr.points.append([[1, 1]], [9])
    with pytest.raises(InputError, match="not among"):
        tr.set_points(pts)


def test_reproducible_on_cpu():
    a, _, _ = _trainer(n=12, seed=3)
    b, _, _ = _trainer(n=12, seed=3)
    a.train_all()
    b.train_all()
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    np.testing.assert_array_equal(a.predict(), b.predict())


def test_predictions_yielded_when_due():
    tr, _, _ = _trainer(n=12, predict_every_steps=1)
    preds = [u.prediction for u in tr.run() if u.prediction is not None]
    assert preds and preds[0].shape == (64, 64)


def test_3d_stack_trains_on_planes_with_points():
    image, mask = blobs(48, 1)
    stack = np.stack([image, image[::-1], image])
    mstack = np.stack([mask, mask[::-1], mask])
    coords = np.array([[0, 5, 5], [0, 40, 40], [2, 10, 30], [2, 30, 10], [0, 20, 20], [2, 24, 24]])
    from napari_pointseg.core.points import PointSet

    pts = PointSet(coords, mstack[tuple(coords.T)])
    assert len(pts.classes) >= 2, "the fixed seed must draw points of both classes"
    # 3 planes would be guessed as channels: say there are none
    tr = make_trainer(
        stack, pts, setup=TrainSetup(channel_axis=None, spec=TINY_SPEC, config=fast_config(), device="cpu")
    )
    tr.train_all()
    assert tr.predict(None).shape == (3, 48, 48)
    assert tr.predict(1).shape == (48, 48)


def test_device_cuda_without_cuda_is_clear():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    image, mask = blobs(32)
    with pytest.raises(InputError, match="CUDA is not available"):
        make_trainer(image, random_points(mask, 4), setup=TrainSetup(device="cuda"))


@pytest.mark.parametrize("order", ["correct", "entire", "random", "reverse"])
def test_trainer_admits_points_as_the_schedule_plans(order):
    """The trainer's own admission (not only `schedule.plan`): which points are in the loss at
    each step, in which order, and how many iterations each step gets."""
    from napari_pointseg.core.schedule import plan

    image, mask = blobs(48, 5)
    pts = random_points(mask, 9, 5)
    cfg = fast_config(
        order=order,
        points_per_step=2,
        step_growth=0.0,
        iters_per_step=3,
        min_iters_per_step=3,
        fit_threshold=2.0,
        final_iters=0,
        polish_iters=0,
        head_polish_iters=0,
        seed=3,
    )
    tr = make_trainer(image, pts, setup=TrainSetup(spec=TINY_SPEC, config=cfg, device="cpu"))
    seen = {}
    for update in tr.run():
        if not update.done:
            admitted = tr._perm[: tr.n_admitted].tolist()
            first_iter, _ = seen.get(update.step, (update.iteration, None))
            seen[update.step] = (first_iter, admitted)
    steps = plan(len(pts), order, points_per_step=2, iters_per_step=3, seed=3)
    assert [admitted for _, admitted in seen.values()] == [s.active.tolist() for s in steps]
    starts = [first for first, _ in seen.values()] + [tr.iteration + 1]
    assert [b - a for a, b in zip(starts, starts[1:])] == [s.iters for s in steps]
