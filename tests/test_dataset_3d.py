"""3D stacks in the dataset pipeline (issue 13 part 4): planes in, stacks out (tiny inputs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from test_dataset import TINY_CLI, tiny_options

Z = 6  # > 4: with channel_axis 'auto' a first axis of <= 4 would be read as channels
POINT_PLANES = (1, 4)


def _plane_points(mask: np.ndarray, z: int, n: int, seed: int) -> np.ndarray:
    """n random pixels of plane z (at least one per class) as (order-free) rows z, y, x, label."""
    rng = np.random.default_rng(seed)
    rows = []
    for v in np.unique(mask[z]):
        ys, xs = np.nonzero(mask[z] == v)
        i = rng.integers(len(ys))
        rows.append((z, ys[i], xs[i], v))
    for flat in rng.choice(mask[z].size, n, replace=False):
        y, x = np.unravel_index(flat, mask[z].shape)
        rows.append((z, y, x, mask[z, y, x]))
    return np.array(rows, np.int64)


def _write_points_csv(path, rows: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["order,label,z,y,x"] + [f"{i},{r[3]},{r[0]},{r[1]},{r[2]}" for i, r in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """train/: stack 'vol' (Z x 64 x 64) with points on planes 1 and 4 + a 2D image with
    points; test/: a stack and its mask stack."""
    from napari_pointseg.samples.files import make_dataset
    from napari_pointseg.samples.synthetic import make_stack

    root = tmp_path_factory.mktemp("ds3d")
    make_dataset(root / "train", n_images=1, size=64, seed=1)  # img_000: 2D, with points
    image, mask = make_stack((Z, 64, 64), seed=3)
    tifffile.imwrite(root / "train" / "images" / "vol.tif", image)
    rows = np.concatenate([_plane_points(mask, z, 10, seed=z) for z in POINT_PLANES])
    _write_points_csv(root / "train" / "points" / "vol.csv", rows)
    (root / "test" / "images").mkdir(parents=True)
    (root / "test" / "masks").mkdir()
    timage, tmask = make_stack((Z, 64, 64), seed=4)
    tifffile.imwrite(root / "test" / "images" / "tvol.tif", timage)
    tifffile.imwrite(root / "test" / "masks" / "tvol.tif", tmask)
    return root, mask


@pytest.fixture(scope="module")
def run3d(stacks, tmp_path_factory):
    from napari_pointseg.dataset.pipeline import run_pipeline

    root, _ = stacks
    out = tmp_path_factory.mktemp("out3d")
    summary = run_pipeline(tiny_options(root / "train", out, test=root / "test"))
    return out, summary


def test_expand_stacks_points_and_mask_planes(stacks, tmp_path):
    from napari_pointseg.dataset.layout import Item, scan_folder
    from napari_pointseg.dataset.stacks import annotated_planes, expand_stacks, is_stack

    root, mask = stacks
    items = scan_folder(root / "train").items
    jobs, skipped = expand_stacks(items, "auto")
    assert not skipped
    assert [(j.name, j.plane, j.stack) for j in jobs] == [
        ("img_000", None, None),
        ("vol_z001", 1, "vol"),
        ("vol_z004", 4, "vol"),
    ]
    # masks: every plane for the full-mask source, planes with two classes for the oracle
    m = mask.copy()
    m[0] = 1
    m[5] = 2
    tifffile.imwrite(tmp_path / "m.tif", m)
    it = Item("vol", root / "train" / "images" / "vol.tif", None, tmp_path / "m.tif")
    assert annotated_planes(it, "mask") == list(range(Z))
    assert annotated_planes(it, "oracle") == [z for z in range(1, 5) if len(np.unique(m[z])) == 2]
    # 2D points for a stack, or a mask of another shape: the stack is skipped with a reason
    tifffile.imwrite(tmp_path / "bad.tif", m[:, :32])
    bad = Item("vol", it.image, root / "train" / "points" / "img_000.csv", tmp_path / "bad.tif")
    jobs, skipped = expand_stacks([bad], "auto")
    assert not jobs and "3D stack" in skipped[0].reason and "coordinates" in skipped[0].reason
    jobs, skipped = expand_stacks([bad], "oracle")
    assert not jobs and "mask shape" in skipped[0].reason
    # a grey stack of <= 4 planes reads as channels under 'auto': channel axis None makes it a stack
    tifffile.imwrite(tmp_path / "three.tif", np.zeros((3, 32, 32), np.uint8))
    three = Item("three", tmp_path / "three.tif")
    assert not is_stack(three) and is_stack(three, None)


def test_stack_pipeline_planes_in_stacks_out(run3d, stacks):
    out, s = run3d
    root, mask = stacks
    # pseudo-labels for the annotated planes only (and the 2D image)
    assert sorted(s["pseudo_labels"]) == ["img_000", "vol_z001", "vol_z004"]
    assert s["n_annotated"] == 3 and not s["skipped"]
    for z in POINT_PLANES:
        rec = json.loads((out / "pseudo" / f"vol_z{z:03d}.json").read_text())
        assert rec["stack"] == "vol" and rec["plane"] == z and rec["shape"] == [64, 64]
        lab = tifffile.imread(out / "pseudo" / f"vol_z{z:03d}_labels.tif")
        assert lab.shape == (64, 64) and set(np.unique(lab)) <= {1, 2}
        pts = np.loadtxt(out / "pseudo" / f"vol_z{z:03d}_points.csv", delimiter=",", skiprows=1)
        assert pts.shape[1] == 4  # order,label,y,x: the plane's points only
        assert np.array_equal(pts[:, 1], mask[z][pts[:, 2].astype(int), pts[:, 3].astype(int)])
    assert not list((out / "pseudo").glob("vol_z000*")) and not list((out / "pseudo").glob("vol_z002*"))
    assert (out / "stage2.safetensors").is_file() and (out / "model.safetensors").is_file()
    # the test stack is predicted as a stack of the same shape; the metrics count every voxel
    pred = tifffile.imread(out / "test_predictions" / "tvol.tif")
    tmask = tifffile.imread(root / "test" / "masks" / "tvol.tif").astype(np.int64)
    assert pred.shape == tmask.shape == (Z, 64, 64)
    cm = np.zeros((2, 2), np.int64)
    for t in (1, 2):
        for p in (1, 2):
            cm[t - 1, p - 1] = np.sum((tmask == t) & (pred == p))
    assert cm.sum() == Z * 64 * 64
    iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    assert s["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert s["per_class_iou"]["1"] == pytest.approx(iou[0]) and s["per_class_iou"]["2"] == pytest.approx(
        iou[1]
    )
    assert s["miou"] == pytest.approx(iou.mean())
    assert list(s["test"]["per_image"]) == ["tvol"]


def test_stack_bundle_predicts_stacks_and_rerun_resumes(run3d, stacks):
    from napari_pointseg.core.bundle import load_bundle, predict_with_bundle
    from napari_pointseg.dataset.pipeline import run_pipeline

    out, s = run3d
    root, _ = stacks
    img = tifffile.imread(root / "test" / "images" / "tvol.tif")
    pred = predict_with_bundle(load_bundle(out / "model.safetensors"), img, device="cpu")
    saved = tifffile.imread(out / "test_predictions" / "tvol.tif")
    assert pred.shape == saved.shape and (pred == saved).mean() > 0.99
    again = run_pipeline(tiny_options(root / "train", out, test=root / "test"))
    assert again["n_computed_stage1"] == 0 and again["miou"] == pytest.approx(s["miou"])


def test_unannotated_stack_is_self_labelled_per_plane(stacks, tmp_path):
    """A stack without points or mask: the stage-2 network labels all its planes (stack
    TIFFs in self_labels/), and the final network trains on them."""
    import shutil

    from napari_pointseg.dataset.pipeline import run_pipeline

    root, _ = stacks
    data = tmp_path / "data"
    shutil.copytree(root / "train", data)
    shutil.copy(root / "test" / "images" / "tvol.tif", data / "images" / "other.tif")
    s = run_pipeline(
        tiny_options(
            data,
            tmp_path / "out",
            dataset_config={"iterations": 3, "batch_size": 2, "crop_size": 64, "warmup_iters": 1},
        )
    )
    assert s["n_self_labelled"] == Z
    lab = tifffile.imread(tmp_path / "out" / "self_labels" / "other_labels.tif")
    conf = tifffile.imread(tmp_path / "out" / "self_labels" / "other_confidence.tif")
    assert lab.shape == conf.shape == (Z, 64, 64) and conf.dtype == np.float32
    assert (tmp_path / "out" / "final.safetensors").is_file()


def test_cli_runs_a_stack_folder(stacks, tmp_path, capsys):
    from napari_pointseg.cli import main

    root, _ = stacks
    rc = main(
        [
            "dataset",
            str(root / "train"),
            "--out",
            str(tmp_path / "o"),
            "--test",
            str(root / "test"),
            "--quiet",
            *TINY_CLI,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert sorted(m["pseudo_labels"]) == ["img_000", "vol_z001", "vol_z004"]
    assert tifffile.imread(tmp_path / "o" / "test_predictions" / "tvol.tif").shape == (Z, 64, 64)


def test_planes_are_separate_dask_tasks(stacks, tmp_path):
    """The annotated planes of a stack run as one Dask task each (a worker process: the plane
    items are pickled)."""
    distributed = pytest.importorskip("distributed")
    from test_dataset import TINY_IMAGE, TINY_SPEC

    from napari_pointseg.dataset.layout import scan_folder
    from napari_pointseg.dataset.pseudo_labels import PseudoLabelOptions, pseudo_label_job
    from napari_pointseg.dataset.runner import run_jobs
    from napari_pointseg.dataset.stacks import expand_stacks

    root, _ = stacks
    vol = [it for it in scan_folder(root / "train").items if it.name == "vol"]
    jobs, _ = expand_stacks(vol, "auto")
    opts = PseudoLabelOptions(config=TINY_IMAGE, spec=TINY_SPEC)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None, silence_logs=40
    ) as cluster:
        res = list(run_jobs(pseudo_label_job, jobs, tmp_path, opts, scheduler=cluster.scheduler_address))
    assert sorted((r["name"], r["status"]) for r in res) == [("vol_z001", "done"), ("vol_z004", "done")]
    assert tifffile.imread(tmp_path / "vol_z004_labels.tif").shape == (64, 64)
