"""The real-data recipe's guarantees: clicks are honoured, the oracle's final phase runs, the
filter bank on the channel mean, the simulated correcting user, CPU sharing between trainings."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from _synth import TINY_SPEC, blobs, fast_config, random_points

from napari_pointseg.core import cpu_share
from napari_pointseg.core.features import FilterBank
from napari_pointseg.core.oracle_loop import run_oracle
from napari_pointseg.core.session import make_trainer
from napari_pointseg.core.train_setup import TrainSetup
from napari_pointseg.oracle.correcting_user import (
    first_clicks,
    honoured_fraction,
    max_drop_after,
    region_centres,
    run_correcting_user,
)


def _hard_points(mask, seed=0):
    """Random points plus points right on the class borders (the clicks a user makes to
    correct a prediction, the hardest to fit)."""
    pts = random_points(mask, 30, seed)
    edge = np.argwhere((mask != np.roll(mask, 1, 0)) | (mask != np.roll(mask, 1, 1)))
    edge = edge[np.random.default_rng(seed).choice(len(edge), 20, replace=False)]
    return pts.append(edge.astype(float), mask[edge[:, 0], edge[:, 1]])


def test_final_prediction_honours_the_points():
    """After training, the prediction agrees with (nearly) every point it was trained on, even
    border points, and `honoured` says so; without the polish phase and the hard-point term the
    same run leaves more of them contradicted."""
    image, mask = blobs(64, 1)
    pts = _hard_points(mask)

    def run(**cfg):
        tr = make_trainer(
            image,
            pts,
            setup=TrainSetup(spec=TINY_SPEC, config=fast_config(crop_size=None, **cfg), device="cpu"),
        )
        tr.train_all()
        return tr, honoured_fraction(tr.predict(), tr.points)

    tr, share = run()
    assert share >= 0.98
    assert tr.honoured() == pytest.approx(share)
    _, share_off = run(polish_iters=0, hard_weight=0.0, final_iters=2)
    assert share_off <= share


def test_wrong_points_are_tracked_from_predictions():
    image, mask = blobs(64, 2)
    pts = random_points(mask, 20, 2)
    tr = make_trainer(
        image, pts, setup=TrainSetup(spec=TINY_SPEC, config=fast_config(final_iters=0), device="cpu")
    )
    tr.train_all()
    proba = tr.predict_proba(0)
    wrong = tr.classes[proba.argmax(0)][tuple(pts.pixel_coords().T)] != pts.labels
    assert sorted(tr._wrong.tolist()) == np.flatnonzero(wrong).tolist()
    assert tr.predict_proba(0) is proba  # one prediction per iteration and plane


def test_oracle_runs_its_final_phase():
    """The oracle's last round trains ``final_iters`` more iterations (it used to stop one
    round early, before they ran)."""
    from napari_pointseg.core.trainer import TrainConfig

    image, mask = blobs(48, 3)
    cfg = TrainConfig(
        iters_per_step=1, min_iters_per_step=1, final_iters=15, polish_iters=0, crop_size=None, warmup_iters=2
    )
    res = run_oracle(
        image, mask, budget=0.004, target=1.0, setup=TrainSetup(spec=TINY_SPEC, config=cfg, device="cpu")
    )
    assert res.trainer.final_done
    assert res.metrics["iterations"] >= res.metrics["steps"] + 15


def test_filter_bank_on_the_channel_mean():
    rgb = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    fb = FilterBank((1.0, 2.0))
    out = fb.apply(rgb)
    assert out.shape == (3 + 10, 32, 32) and fb.n_outputs(3) == 13
    np.testing.assert_array_equal(out[:3], rgb)  # raw channels first
    per_channel = FilterBank((1.0, 2.0), on_mean=False)
    assert per_channel.apply(rgb).shape[0] == per_channel.n_outputs(3) == 33
    grey = rgb[:1]
    assert fb.apply(grey).shape[0] == fb.n_outputs(1) == 11
    # a bundle written before the option existed filtered every channel
    assert FilterBank.from_dict({"sigmas": [1.0]}).on_mean is False
    assert FilterBank.from_dict(fb.to_dict()) == fb


def test_region_centres_pick_the_largest_wrong_regions():
    truth = np.zeros((40, 40), np.int64)
    truth[5:25, 5:25] = 1
    pred = np.zeros_like(truth)  # the 20x20 square is missed ...
    pred[30:33, 30:33] = 1  # ... and a 3x3 false positive
    clicked = np.zeros(truth.shape, bool)
    c = region_centres(pred, truth, 5, clicked)
    assert c.tolist()[0] in ([14, 14], [14, 15], [15, 14], [15, 15])
    assert c.tolist()[1] == [31, 31] and len(c) == 2
    clicked[31, 31] = True  # a clicked pixel is not clicked again
    assert [31, 31] not in region_centres(pred, truth, 5, clicked).tolist()
    assert len(region_centres(truth, truth, 5, clicked)) == 0


def test_first_clicks_cover_every_class():
    _, mask = blobs(32, 0)
    yx = first_clicks(mask, 5, np.random.default_rng(0))
    assert len(yx) == 10 and set(mask[yx[:, 0], yx[:, 1]]) == {1, 2}


def test_correcting_user_run():
    image, mask = blobs(48, 4)
    cfg = fast_config(crop_size=None, final_iters=4, polish_iters=10)
    res = run_correcting_user(
        image,
        mask,
        budget=0.02,
        checkpoints=(0.01, 0.02),
        seed=0,
        setup=TrainSetup(spec=TINY_SPEC, config=cfg, device="cpu"),
    )
    assert all(c["n_points"] >= int(f * mask.size) for c, f in zip(res.checkpoints, (0.01, 0.02)))
    assert len(res.checkpoints) == 2 and res.curve
    assert res.checkpoints[-1]["miou"] > 0.5
    assert 0.0 <= res.checkpoints[-1]["honoured"] <= 1.0
    assert set(np.unique(res.points.labels)) <= {1, 2}
    assert max_drop_after([{"miou": 0.7}, {"miou": 0.85}, {"miou": 0.8}, {"miou": 0.9}]) == pytest.approx(
        0.05
    )


def test_cpu_share_counts_live_trainings(tmp_path, monkeypatch):
    monkeypatch.setenv("POINTSEG_RUN_DIR", str(tmp_path))
    monkeypatch.setattr(cpu_share, "_REGISTERED", None)
    assert cpu_share.running_trainings() == 1  # nobody registered: still "1"
    cpu_share.register()
    (tmp_path / "999999999.trainer").write_text("")  # a process that died uncleanly
    assert cpu_share.running_trainings() == 1
    assert not (tmp_path / "999999999.trainer").exists()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / f"{sleeper.pid}.trainer").write_text("")
        assert cpu_share.running_trainings() == 2
        assert cpu_share.fair_threads(4) == 2 and cpu_share.fair_threads(2) == 1
    finally:
        sleeper.kill()
        sleeper.wait()
    assert cpu_share.running_trainings() == 1
    cpu_share.unregister()
    assert not (tmp_path / f"{os.getpid()}.trainer").exists()


def test_bench_real_writes_its_table(tmp_path, capsys, bench_module):
    """benchmarks/bench_real.py on a tiny stand-in for the development data: one row per
    image with the network, the RF on the same points, clicks honoured and seconds."""
    from skimage import io

    bench = bench_module("bench_real")
    data = tmp_path / "data"
    for k, name in enumerate(("grey_set", "rgb_set")):
        image, mask = blobs(64, k)
        (data / name).mkdir(parents=True)
        img8 = (np.clip(image, 0, 1) * 255).astype(np.uint8)
        io.imsave(
            data / name / "image_0.png", img8 if k == 0 else np.stack([img8] * 3, -1), check_contrast=False
        )
        io.imsave(data / name / "mask_0.png", (mask - 1).astype(np.uint8), check_contrast=False)
    out = tmp_path / "bench.json"
    assert (
        bench.main(
            [
                "--data",
                str(data),
                "--images",
                "0",
                "--modes",
                "oracle3,user,rforacle,rfuser,first",
                "--user-budget",
                "0.003",
                "--first-per-class",
                "2,3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    import json

    result = json.loads(out.read_text())
    assert [r["image"] for r in result["rows"]] == ["grey_set/0", "rgb_set/0"]
    # the same code runs ~2x slower without AMX: a result file says which CPU it ran on
    assert result["machine"]["cpu"] and isinstance(result["machine"]["amx"], bool)
    for row in result["rows"]:
        o = row["oracle3"]
        assert o["n_points"] == int(0.003 * 64 * 64)
        for key in ("miou", "rf_miou", "honoured", "rf_honoured", "seconds", "rf_seconds"):
            assert 0 <= o[key] and (key.endswith("seconds") or o[key] <= 1)
        assert set(row["user"]["checkpoints"]) == {"0.05%", "0.10%", "0.30%"}
        # the forest's own runs: its oracle at both budgets, the user correcting it at each mark
        assert {k: v["n_points"] for k, v in row["rforacle"].items()} == {"0.10%": 4, "0.30%": 12}
        assert set(row["rfuser"]) == {"0.05%", "0.10%", "0.30%"}
        # a first Train on random clicks of every class (2 classes), the forest on the same clicks
        assert {k: v["n_points"] for k, v in row["first"].items()} == {"2": 4, "3": 6}
        for f in row["first"].values():
            assert 0 <= f["miou"] <= 1 and 0 <= f["rf_miou"] <= 1 and f["iterations"] > 0
    assert result["summary"]["oracle3"]["n"] == 2
    assert result["summary"]["first@3"]["n"] == 2
    assert result["summary"]["rforacle@0.30%"]["compared"] == 2
    assert result["summary"]["rfuser@0.30%"]["compared"] == 2
    assert "median net" in capsys.readouterr().out
    assert result["filter_bank"] == FilterBank().to_dict()
    assert bench.main(["--data", str(tmp_path / "missing")]) == 2
    assert bench.main(["--data", str(data), "--first-per-class", "0"]) == 2
    assert "--first-per-class" in capsys.readouterr().err
    # --filter-bank overrides the bank's fields; a bad one is one line and exit code 2
    bank = bench.setup_from_json("{}", "{}", "cpu", '{"on_mean": false}').filter_bank
    assert bank == FilterBank(on_mean=False)
    assert bench.main(["--data", str(data), "--filter-bank", '{"sigmas": 3}']) == 2
    assert "--filter-bank" in capsys.readouterr().err


def test_bench_phases_splits_the_time_of_a_run(tmp_path, capsys, monkeypatch, bench_module):
    """benchmarks/bench_phases.py on a tiny stand-in with a full-resolution head: the phases
    add up to at most the run's time, the polish and the oracle's predictions are counted, and
    the trainer's methods are restored afterwards."""
    import json

    from skimage import io

    from napari_pointseg.core.trainer import SparseTrainer

    bench = bench_module("bench_phases")
    image, mask = blobs(96, 0)
    (tmp_path / "data" / "grey_set").mkdir(parents=True)
    io.imsave(
        tmp_path / "data" / "grey_set" / "image_0.png",
        (np.clip(image, 0, 1) * 255).astype(np.uint8),
        check_contrast=False,
    )
    io.imsave(
        tmp_path / "data" / "grey_set" / "mask_0.png", (mask - 1).astype(np.uint8), check_contrast=False
    )
    before = SparseTrainer._iterate, SparseTrainer._polish_head, SparseTrainer.predict_proba
    out = tmp_path / "phases.json"
    argv = ["--data", str(tmp_path / "data"), "--budget", "0.01", "--out", str(out)]
    assert bench.main([*argv, "--spec", '{"input_scale": 3}', "--config", '{"head_polish_iters": 20}']) == 0
    assert (SparseTrainer._iterate, SparseTrainer._polish_head, SparseTrainer.predict_proba) == before
    (row,) = json.loads(out.read_text())["rows"]
    assert row["image"] == "grey_set/0" and row["n_points"] == int(0.01 * 96 * 96)
    assert row["iterations_n"] > 0 and row["predictions_n"] > 0 and row["polish_steps"] > 0
    assert min(row[k] for k in ("iterations", "head_polish", "predictions")) > 0
    assert row["rest"] >= 0 and row["iterations"] + row["head_polish"] + row["predictions"] <= row["seconds"]
    assert 0 <= row["miou"] <= 1 and 0 <= row["honoured"] <= 1
    assert "median s per 512²" in capsys.readouterr().out
    assert bench.main([*argv, "--budget", "2"]) == 2
    assert bench.main([*argv, "--pairs", "grey_set/7"]) == 2


def test_input_scale_is_chosen_from_the_plane_size():
    """Planes up to FULL_RES_MAX_SIDE px train at full resolution, larger ones at a third; an
    explicit scale is kept; the stride grows with the scale."""
    from napari_pointseg.core.models import FULL_RES_MAX_SIDE, ModelSpec, resolve_input_scale

    auto = ModelSpec()
    assert resolve_input_scale(auto, (FULL_RES_MAX_SIDE, 100)).input_scale == 1
    assert resolve_input_scale(auto, (100, FULL_RES_MAX_SIDE + 1)).input_scale == 3
    assert resolve_input_scale(ModelSpec(input_scale=2), (4000, 4000)).input_scale == 2
    assert resolve_input_scale(ModelSpec(input_scale=1), (4000, 4000)).input_scale == 1
    assert ModelSpec(input_scale=2).stride == 2 * ModelSpec(input_scale=1).stride


def test_half_resolution_network_shapes_and_refine_head():
    """The half-resolution network gives full-size logits; its full-resolution head starts at
    zero (the plain upsampled prediction) and still receives gradients; without the head the
    output is exactly the upsampled logits of the inner network."""
    import torch
    import torch.nn.functional as F

    from napari_pointseg.core.models import ModelSpec, build_model

    spec = ModelSpec(**{**TINY_SPEC.to_dict(), "in_channels": 3, "classes": 3, "input_scale": 2})
    net = build_model(spec)
    x = torch.randn(1, 3, 64, 64)
    out = net(x)
    assert out.shape == (1, 3, 64, 64)
    inner = F.interpolate(net.net(F.avg_pool2d(x, 2)), size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, inner)  # zero-initialised head: no change at first
    out.square().mean().backward()
    assert net.refine[0].weight.grad is not None
    plain = build_model(ModelSpec(**{**spec.to_dict(), "refine_channels": 0}))
    assert plain.refine is None and hasattr(plain, "encoder")


def test_reduced_resolution_trainer_fits_and_round_trips(tmp_path):
    """A plane larger than FULL_RES_MAX_SIDE trains at a third of the resolution (whole plane
    each iteration), reaches a useful mIoU, and its bundle records the scale and the head and
    predicts the same."""
    from napari_pointseg.core.bundle import load_bundle, predict_with_bundle, save_trainer
    from napari_pointseg.core.metrics import miou

    image, mask = blobs(336, 3)
    pts = random_points(mask, 60, 3)
    tr = make_trainer(
        image, pts, setup=TrainSetup(spec=TINY_SPEC, config=fast_config(), device="cpu")
    ).train_all()
    assert tr.spec.input_scale == 3
    pred = tr.predict()
    assert miou(mask, pred) > 0.7
    b = load_bundle(save_trainer(tmp_path / "m", tr))
    assert b.spec.input_scale == 3 and b.spec.refine_channels == tr.spec.refine_channels
    assert b.spec.refine_layers == tr.spec.refine_layers == 3
    np.testing.assert_array_equal(predict_with_bundle(b, image, device="cpu", renormalise=False), pred)


def test_logits_at_points_equal_the_full_forward():
    """`forward_at` (training: the full-resolution head only around the labelled pixels) gives
    exactly the full forward pass's logits there, at image corners and edges too, for heads of
    one to three layers and at a third of the resolution."""
    import torch

    from napari_pointseg.core.models import ModelSpec, build_model

    for refine, layers, scale in ((16, 2, 2), (0, 2, 2), (8, 3, 3), (8, 1, 2)):
        torch.manual_seed(0)
        spec = ModelSpec(
            **{
                **TINY_SPEC.to_dict(),
                "in_channels": 4,
                "classes": 3,
                "input_scale": scale,
                "refine_channels": refine,
                "refine_layers": layers,
            }
        )
        net = build_model(spec).eval()
        if refine:
            torch.nn.init.normal_(net.refine[-1].weight, std=0.5)  # not the zero start
        x = torch.randn(2, 4, 48, 96)  # a multiple of every stride here
        full = net(x)
        b, y, xx = (torch.tensor(v) for v in ([0, 1, 1, 0, 1], [0, 47, 31, 1, 20], [0, 95, 0, 94, 50]))
        torch.testing.assert_close(net.forward_at(x, b, y, xx), full[b, :, y, xx])


@pytest.mark.parametrize("shared_below", [1.01, 0.0])
def test_sparse_head_equals_the_head_on_windows(monkeypatch, shared_below):
    """`SparseHead` (each head layer once per pixel some window needs; or, where windows
    barely overlap, the windows themselves) gives the head's correction that `head_at` gives
    on the windows around the same pixels: on two planes, at corners and edges, for repeated
    pixels and in a given order; and its gradient reaches the head's parameters."""
    import torch

    from napari_pointseg.core import sparse_head
    from napari_pointseg.core.models import ModelSpec, build_model
    from napari_pointseg.core.sparse_head import SparseHead

    monkeypatch.setattr(sparse_head, "SHARED_BELOW", shared_below)

    torch.manual_seed(0)
    spec = ModelSpec(
        **{**TINY_SPEC.to_dict(), "in_channels": 4, "classes": 3, "input_scale": 3, "refine_channels": 8}
    )
    net = build_model(spec).eval()
    torch.nn.init.normal_(net.refine[-1].weight, std=0.5)  # not the zero start
    rng = np.random.default_rng(0)
    planes, feats, insides = [], [], []
    for _ in range(2):
        x = torch.randn(1, 4, 48, 72)
        low = net.net(torch.nn.functional.avg_pool2d(x, 3))
        rows = np.concatenate([rng.integers(0, 48, 30), [0, 47, 0, 47, 5, 5, 6]])
        cols = np.concatenate([rng.integers(0, 72, 30), [0, 71, 71, 0, 9, 9, 9]])
        planes.append((x, low, rows, cols))
        index = (torch.zeros(len(rows), dtype=torch.long), torch.from_numpy(rows), torch.from_numpy(cols))
        _, feat, inside = net.point_inputs(x, low, *index)
        feats.append(feat)
        insides.append(inside)
    order = rng.permutation(2 * 37)
    with torch.no_grad():
        expected = net.head_at(torch.cat(feats), torch.cat(insides))[torch.from_numpy(order)]
    head = SparseHead(net, planes, order)
    assert (head.windows is not None) == (shared_below == 0.0)
    got = head()
    torch.testing.assert_close(got, expected)
    got.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.refine.parameters())


def test_head_polish_honours_border_clicks_at_reduced_resolution():
    """At a third of the resolution, clicks on class borders fall on the wrong side of the upsampled
    boundary; polishing the full-resolution head alone makes the prediction honour them, and
    barely changes the rest of the image."""
    from napari_pointseg.core.metrics import miou

    image, mask = blobs(336, 4)
    pts = random_points(mask, 60, 4)
    edge = np.argwhere((mask != np.roll(mask, 1, 0)) | (mask != np.roll(mask, 1, 1)))
    # enough border clicks that the network alone misses some (with the 3 x 3 stem it fits
    # 60 of them without the polish)
    edge = edge[np.random.default_rng(4).choice(len(edge), 200, replace=False)]
    pts = pts.append(edge.astype(float), mask[edge[:, 0], edge[:, 1]])

    def run(head_polish_iters):
        cfg = fast_config(head_polish_iters=head_polish_iters, polish_iters=10)
        tr = make_trainer(image, pts, setup=TrainSetup(spec=TINY_SPEC, config=cfg, device="cpu")).train_all()
        assert tr.spec.input_scale == 3
        return tr, tr.predict()

    tr, pred = run(300)
    share = honoured_fraction(pred, tr.points)
    _, pred_off = run(0)
    assert share >= 0.97
    assert share > honoured_fraction(pred_off, tr.points)
    assert tr.honoured() == pytest.approx(share)
    assert miou(mask, pred) >= miou(mask, pred_off) - 0.03


def border_clicks(seed: int):
    """A 336² blobs image (4 classes) and 340 clicks on it: 40 at random, then 300 on class
    borders, more than the head polish can honour in a few steps."""
    image, mask = blobs(336, 4)
    edge = np.argwhere((mask != np.roll(mask, 1, 0)) | (mask != np.roll(mask, 1, 1)))
    edge = edge[np.random.default_rng(seed).choice(len(edge), 300, replace=False)]
    return image, random_points(mask, 40, seed).append(edge.astype(float), mask[edge[:, 0], edge[:, 1]])


def test_head_polish_goes_past_its_budget_only_while_clicks_are_contradicted():
    """After ``head_polish_iters`` the head keeps training (up to ``head_polish_max_iters``)
    only while the prediction honours fewer than ``honour_floor`` of the clicks."""
    image, pts = border_clicks(5)

    def honoured(**polish):
        # the head alone (no whole-network polish after it)
        cfg = fast_config(polish_iters=10, net_polish_iters=0, final_iters=2, iters_per_step=2, **polish)
        tr = make_trainer(image, pts, setup=TrainSetup(spec=TINY_SPEC, config=cfg, device="cpu")).train_all()
        return honoured_fraction(tr.predict(), tr.points)

    short = honoured(head_polish_iters=5, head_polish_max_iters=5)
    assert short < 0.99  # the case this test is about: 5 steps do not honour the border clicks
    longer = honoured(head_polish_iters=5, head_polish_max_iters=2000)
    assert longer > short and longer >= 0.985  # stops once its own count reaches honour_floor


def test_whole_network_polishes_when_the_head_polish_ends_below_the_floor():
    """A head polish that ends honouring fewer than ``honour_floor`` of the clicks (here cut
    short at 5 steps) is followed by up to ``net_polish_iters`` iterations of the whole network on
    the points it gets wrong, and the head polishes once more: more clicks honoured."""
    image, pts = border_clicks(5)

    short_head = dict(head_polish_iters=5, head_polish_max_iters=5)

    def run(net_polish_iters):
        cfg = fast_config(net_polish_iters=net_polish_iters, final_iters=2, iters_per_step=2, **short_head)
        tr = make_trainer(image, pts, setup=TrainSetup(spec=TINY_SPEC, config=cfg, device="cpu")).train_all()
        return tr, honoured_fraction(tr.predict(), tr.points)

    _, head_only = run(0)
    assert head_only < 0.99  # the head polish alone ends below the floor
    tr, both = run(40)
    assert both > head_only + 0.005 and both >= 0.97
    assert tr.honoured() == pytest.approx(both)


def test_head_polish_ends_in_its_best_state():
    """Adam at a fixed lr hops between head states a few clicks apart: the polish ends in the
    state that honoured the most clicks, not in its last one."""
    from dataclasses import replace

    from napari_pointseg.core.head_polish import polish_head

    image, pts = border_clicks(6)
    cfg = fast_config(polish_iters=10, final_iters=2, iters_per_step=2, head_polish_iters=0)
    tr = make_trainer(image, pts, setup=TrainSetup(spec=TINY_SPEC, config=cfg, device="cpu")).train_all()
    # an lr high enough to hop, and targets it cannot reach: the polish runs all its steps
    tr.config = replace(
        cfg,
        head_polish_iters=150,
        head_polish_max_iters=150,
        head_polish_lr=0.05,
        honour_target=1.01,
        honour_floor=1.01,
    )
    trace, final = polish_head(tr)
    assert len(trace) == 150
    assert any(trace[i] < max(trace[:i]) for i in range(1, len(trace)))  # it did hop back
    assert final == max(trace)


def test_head_polish_anchors_keep_clear_of_the_clicks():
    """No anchor of the head polish lies within ``clearance`` px of a click (there the click,
    not the prediction before, decides the boundary); the rest of the plane still gets them."""
    import torch

    from napari_pointseg.core.head_polish import boundary_anchors

    class Halves:
        def from_low(self, x, low):
            return low

    low = torch.zeros((1, 2, 64, 64))
    low[0, 1, :, 32:] = 1  # class boundary between columns 31 and 32
    rows, cols = np.array([10, 30, 50]), np.array([31, 32, 5])
    for clearance in (0, 3):
        anchors = boundary_anchors(
            Halves(), low, low, (64, 64), 200, np.random.default_rng(0), (rows, cols), clearance
        )
        assert len(anchors) == 200
        gap = np.abs(anchors[:, None, :] - np.stack([rows, cols], 1)[None]).max(2).min(1)
        assert gap.min() > clearance or clearance == 0
        assert (np.abs(anchors[:, 1] - 31.5) <= 3).mean() >= 0.7  # mostly along the boundary


def _opposite_pairs(seed):
    """(image, points) of blobs whose labels are drawn 3 px off the visible edge: 60 random
    clicks, then 60 pairs of opposite clicks a pixel apart across a class boundary."""
    image, mask = blobs(336, 7)
    mask = np.roll(mask, 3, 1)
    across = np.argwhere(mask[:, :-1] != mask[:, 1:])
    across = across[np.random.default_rng(seed).choice(len(across), 60, replace=False)]
    pairs = np.concatenate([across, across + [0, 1]]).astype(float)
    labels = mask[pairs[:, 0].astype(int), pairs[:, 1].astype(int)]
    return image, random_points(mask, 60, seed).append(pairs, labels)


def test_head_polish_honours_pairs_of_opposite_clicks_a_pixel_apart():
    """Pairs of clicks on both sides of a class boundary, one pixel apart, on labels drawn
    3 px off the visible edge (a careful user's corrections along an edge): the network alone
    contradicts many of them at a third of the resolution; after the head polish the
    prediction honours them."""
    image, pts = _opposite_pairs(7)

    def honoured(head_polish_iters):
        cfg = fast_config(polish_iters=10, head_polish_iters=head_polish_iters, head_polish_max_iters=300)
        tr = make_trainer(image, pts, setup=TrainSetup(spec=TINY_SPEC, config=cfg, device="cpu")).train_all()
        return honoured_fraction(tr.predict(), tr.points)

    without = honoured(0)
    assert without < 0.95  # the case this test is about
    assert honoured(300) >= 0.99


def test_head_polish_steps_through_shares_of_its_anchors(monkeypatch):
    """With ``head_polish_anchor_batches`` B each polish step evaluates the head at every
    click and at a 1/B share of the anchors: the same anchors one batch would hold, split
    without overlap, so a step is cheaper. The polish still honours the clicks."""
    import copy
    from dataclasses import replace

    from napari_pointseg.core import head_polish

    image, pts = _opposite_pairs(9)
    cfg = fast_config(polish_iters=10, head_polish_iters=0)
    tr = make_trainer(image, pts, setup=TrainSetup(spec=TINY_SPEC, config=cfg, device="cpu")).train_all()
    built = []  # the pixels (rows, cols) of every SparseHead the polish builds, points first

    class Recording(head_polish.SparseHead):
        def __init__(self, model, planes, order=None):
            built.append(np.concatenate([np.stack([r, c]) for _, _, r, c in planes], 1))
            super().__init__(model, planes, order)

    monkeypatch.setattr(head_polish, "SparseHead", Recording)
    state = copy.deepcopy(tr.rng.bit_generator.state)
    n, anchors, sizes = tr.n_admitted, {}, {}
    for b in (1, 4):
        tr.rng.bit_generator.state = copy.deepcopy(state)
        tr.config = replace(cfg, head_polish_anchor_batches=b)
        built.clear()
        batches, target = head_polish._polish_inputs(tr, tr.inference_model(), 0)
        assert len(batches) == len(built) == b and len(target) == n
        for pix, (base, _, before) in zip(built, batches, strict=True):
            assert (pix[:, :n] == built[0][:, :n]).all()  # every click in every share
            assert len(base) == pix.shape[1] and len(before) == pix.shape[1] - n
        shares = [pix[:, n:] for pix in built]
        anchors[b] = np.concatenate(shares, 1)
        sizes[b] = [s.shape[1] for s in shares]
    order = [np.lexsort(anchors[b]) for b in (1, 4)]
    assert (anchors[1][:, order[0]] == anchors[4][:, order[1]]).all()  # the same anchors
    assert sizes[1] == [cfg.head_polish_anchors]
    assert all(0.2 <= k / cfg.head_polish_anchors <= 0.3 for k in sizes[4])

    tr.config = replace(cfg, head_polish_iters=300, head_polish_max_iters=300, head_polish_anchor_batches=4)
    _, final = head_polish.polish_head(tr)
    tr._proba_cache = None
    assert final >= 0.99
    assert honoured_fraction(tr.predict(), tr.points) >= 0.99


def _trained_pairs_recording_clearances(monkeypatch):
    """A trainer trained on `_opposite_pairs` without a head polish, its config, and the list
    the clearance of every later `boundary_anchors` call is appended to."""
    from napari_pointseg.core import head_polish

    image, pts = _opposite_pairs(8)
    cfg = fast_config(polish_iters=10, head_polish_iters=0)
    tr = make_trainer(image, pts, setup=TrainSetup(spec=TINY_SPEC, config=cfg, device="cpu")).train_all()
    clearances = []
    anchors = head_polish.boundary_anchors

    def recorded(*args):
        clearances.append(args[-1])
        return anchors(*args)

    monkeypatch.setattr(head_polish, "boundary_anchors", recorded)
    return tr, cfg, clearances


def test_head_polish_starts_over_clear_of_the_clicks_when_far_from_honouring(monkeypatch):
    """Honouring fewer than RESTART_BELOW of the clicks after ``head_polish_iters`` steps, and
    gaining less than RESTART_GAIN over the last PLATEAU_STEPS, the polish starts over from the
    head it began with, its anchors clear of the clicks, and ends in the best state of either
    attempt."""
    from dataclasses import replace

    from napari_pointseg.core import head_polish

    tr, cfg, clearances = _trained_pairs_recording_clearances(monkeypatch)
    monkeypatch.setattr(head_polish, "RESTART_BELOW", 1.01)  # whatever it honours at step 5
    monkeypatch.setattr(head_polish, "RESTART_GAIN", 1.01)  # ... and whatever it gained
    tr.config = replace(cfg, head_polish_iters=5, head_polish_max_iters=300, honour_target=1.01)
    trace, final = head_polish.polish_head(tr)
    assert clearances == [0, tr.inference_model().reach]
    assert trace[6] == trace[0]  # step 6 counts the head it began with again
    assert final == max(trace) >= 0.99


def test_head_polish_starts_over_when_it_gains_nothing_below_the_floor(monkeypatch):
    """Close to the floor but no better for 2 x PLATEAU_STEPS steps past
    ``head_polish_iters``, the polish starts over too (once), and a second attempt no better
    for 2 x PLATEAU_STEPS ends it, long before its budget: a polish at lr 0 never gains."""
    from dataclasses import replace

    from napari_pointseg.core import head_polish

    tr, cfg, clearances = _trained_pairs_recording_clearances(monkeypatch)
    monkeypatch.setattr(head_polish, "RESTART_BELOW", 0.0)  # never "far below"
    monkeypatch.setattr(head_polish, "PLATEAU_STEPS", 3)
    tr.config = replace(
        cfg,
        head_polish_iters=5,
        head_polish_max_iters=100,
        honour_target=1.01,
        honour_floor=1.01,
        head_polish_lr=0.0,
    )
    trace, _ = head_polish.polish_head(tr)
    assert clearances == [0, tr.inference_model().reach]
    # restart at step 5; the second attempt's best at step 6, no better through step 12
    assert len(trace) == 13 and len(set(trace)) == 1


def test_head_polish_counts_a_click_honoured_only_with_a_lead():
    """The head polish counts a point honoured when its own class's logit leads every other
    by more than ``honour_margin`` (it counts in fp32; the bf16 prediction moves a lead by a
    few hundredths), whatever the number of classes."""
    import torch

    from napari_pointseg.core.head_polish import _leads

    logits = torch.tensor([[1.0, 0.97, 0.0], [0.0, 2.0, 1.0], [0.5, 0.5, 0.6], [3.0, 0.0, 2.9]])
    target = torch.tensor([0, 1, 2, 0])
    assert _leads(logits, target, 0.0).tolist() == [True, True, True, True]
    assert _leads(logits, target, 0.05).tolist() == [False, True, True, True]
    assert _leads(logits, target, 0.2).tolist() == [False, True, False, False]
    assert _leads(logits[:2, :2], target[:2], 0.05).tolist() == [False, True]


def test_bench_widget_scores_the_overlay_the_user_saw(bench_module):
    """benchmarks/bench_widget.py's scoring: a corrected batch counts from its click to the
    first overlay showing all its labels (not the first overlay after it); one no overlay
    shows is counted as never shown; the drop after 0.8 ignores the climb before it."""
    bench = bench_module("bench_widget")
    coords = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
    labels = np.array([2, 2, 1, 2])
    ones = np.ones((2, 2), np.int64)
    half = ones.copy()
    half[0, 0] = 2  # the first point shown, the second not yet
    both = np.array([[2, 2], [1, 1]])
    overlays, times = [ones, half, both], [0.5, 1.5, 3.0]
    # batch 0-2 clicked at 1.0 s: shown at 3.0 s; batch 2-4 at 1.2 s: never (point 3 stays 1)
    delays, never = bench.clicks_shown(overlays, times, [(1.0, 0, 2), (1.2, 2, 4)], coords, labels)
    assert delays == [2.0] and never == 1
    assert bench.drop_after([0.5, 0.2, 0.85, 0.9, 0.82, 0.88, 0.86], 0.8) == pytest.approx(0.08)
    assert bench.drop_after([0.5, 0.7], 0.8) is None
    assert bench.drop_after([0.8, 0.9], 0.8) == 0.0
