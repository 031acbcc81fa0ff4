"""Dataset-level pipeline: folder layout, stages, bad inputs, bundle, CLI (tiny images)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_pointseg.core.errors import InputError

TINY_IMAGE = dict(
    iters_per_step=2, min_iters_per_step=1, final_iters=3, crop_size=64, batch_size=2, step_growth=0.3
)
TINY_DATASET = dict(iterations=6, batch_size=2, crop_size=64, warmup_iters=2)
TINY_SPEC = dict(encoder_depth=3, decoder_channels=[32, 16, 8])
TINY_CLI = [
    "--iters-per-point",
    "2",
    "--crop-size",
    "64",
    "--iterations",
    "6",
    "--batch-size",
    "2",
    "--dataset-crop-size",
    "64",
    "--encoder-depth",
    "3",
    "--device",
    "cpu",
    "--threads",
    "1",
]


def tiny_options(data, out, **kw):
    from napari_pointseg.dataset.pipeline import PipelineOptions

    base = dict(
        data=data,
        out=out,
        device="cpu",
        image_config=TINY_IMAGE,
        dataset_config=TINY_DATASET,
        spec=TINY_SPEC,
        threads=1,
    )
    base.update(kw)
    return PipelineOptions(**base)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """train/ (3 images: 2 with points, 1 with only a mask -> oracle) and test/ (2 images)."""
    from napari_pointseg.samples.files import make_dataset

    root = tmp_path_factory.mktemp("ds")
    make_dataset(root / "train", n_images=3, size=64, seed=1)
    make_dataset(root / "test", n_images=2, size=64, seed=2)
    (root / "train" / "points" / "img_001.csv").unlink()
    shutil.rmtree(root / "test" / "points")
    return root


@pytest.fixture(scope="module")
def run_full(tiny, tmp_path_factory):
    """One complete in-process run with self-training (fraction 2/3)."""
    from napari_pointseg.dataset.pipeline import run_pipeline

    out = tmp_path_factory.mktemp("out")
    events = []
    summary = run_pipeline(
        tiny_options(tiny / "train", out, test=tiny / "test", fraction=0.67, rate=0.01),
        on_event=events.append,
    )
    return out, summary, events


def test_scan_folder_matches_by_stem(tiny, tmp_path):
    from napari_pointseg.dataset.layout import scan_folder

    lst = scan_folder(tiny / "train")
    assert [i.name for i in lst.items] == ["img_000", "img_001", "img_002"]
    assert lst.items[0].source() == "points" and lst.items[1].source() == "oracle"
    assert lst.items[1].source("points") is None
    (tmp_path / "images").mkdir()
    with pytest.raises(InputError, match="no images"):
        scan_folder(tmp_path)
    with pytest.raises(InputError, match="not found"):
        scan_folder(tmp_path / "nope")


def test_split_is_nested_and_keeps_one():
    from napari_pointseg.dataset.layout import Item
    from napari_pointseg.dataset.pipeline import split_items

    items = [Item(f"i{k}", Path(f"i{k}.tif"), Path("p.csv")) for k in range(10)]
    a3, _ = split_items(items, 0.3, 0, "auto")
    a5, r5 = split_items(items, 0.5, 0, "auto")
    assert len(a3) == 3 and len(a5) == 5 and {i.name for i in a3} <= {i.name for i in a5}
    assert len(r5) == 5
    assert len(split_items(items, 0.01, 0, "auto")[0]) == 1


def test_pipeline_outputs_and_metrics(run_full):
    out, s, events = run_full
    from napari_pointseg.dataset.events import Stage

    stages = [e.name for e in events if isinstance(e, Stage)]
    assert stages == ["pseudo-labels", "dataset network", "self-labels", "final network", "test"]
    assert s["n_annotated"] == 2 and s["n_self_labelled"] == 1
    sources = sorted(v["source"] for v in s["pseudo_labels"].values())
    assert len(sources) == 2
    for name in s["pseudo_labels"]:
        lab = tifffile.imread(out / "pseudo" / f"{name}_labels.tif")
        conf = tifffile.imread(out / "pseudo" / f"{name}_confidence.tif")
        assert lab.shape == conf.shape == (64, 64) and conf.dtype == np.float32
        assert set(np.unique(lab)) <= {1, 2} and 0 <= conf.min() and conf.max() <= 1
    assert (out / "self_labels").is_dir() and (out / "final.safetensors").is_file()
    m = json.loads((out / "metrics.json").read_text())
    assert 0 <= m["miou"] <= 1 and set(m["per_class_iou"]) == {"1", "2"}
    assert set(m["test"]["per_image"]) == {"img_000", "img_001"}
    assert m["fraction_labeled"] <= 0.01 + 1e-9
    assert len(list((out / "test_predictions").glob("*.tif"))) == 2


def test_final_bundle_works_with_predict_and_widget_api(run_full, tiny, tmp_path):
    out, s, _ = run_full
    from napari_pointseg.cli import main
    from napari_pointseg.core.bundle import load_bundle, predict_with_bundle
    from napari_pointseg.core.images import read_image

    b = load_bundle(out / "model.safetensors")
    assert b.classes == [1, 2] and b.extra["kind"] == "dataset"
    assert len(b.input_spec.feature_mean) == b.spec.in_channels == b.input_spec.in_channels
    img = read_image(tiny / "test" / "images" / "img_000.tif")
    pred = predict_with_bundle(b, img, device="cpu")
    saved = tifffile.imread(out / "test_predictions" / "img_000.tif")
    assert pred.shape == (64, 64) and (pred == saved).mean() > 0.99
    rc = main(
        [
            "predict",
            str(out / "model.safetensors"),
            str(tiny / "test" / "images" / "img_000.tif"),
            "--out",
            str(tmp_path),
            "--quiet",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0 and (tmp_path / "img_000_prediction.tif").is_file()


def test_rerun_resumes_everything(run_full, tiny):
    from napari_pointseg.dataset.events import Message
    from napari_pointseg.dataset.pipeline import run_pipeline

    out, first, _ = run_full
    events = []
    s = run_pipeline(
        tiny_options(tiny / "train", out, test=tiny / "test", fraction=0.67, rate=0.01),
        on_event=events.append,
    )
    texts = [e.text for e in events if isinstance(e, Message)]
    assert sum("complete outputs found" in t for t in texts) == 2
    assert sum("reused (resume)" in t for t in texts) == 2
    assert s["n_computed_stage1"] == 0 and s["miou"] == pytest.approx(first["miou"])


def _bad_folder(tiny, root: Path) -> Path:
    shutil.copytree(tiny / "train", root)
    for f in root.rglob("img_002*"):  # two good images are enough here
        f.unlink()
    (root / "images" / "broken.tif").write_bytes(b"not a tiff at all")
    (root / "points" / "broken.csv").write_text((root / "points" / "img_000.csv").read_text())
    tifffile.imwrite(root / "images" / "shape.tif", np.zeros((48, 48), np.uint16))
    tifffile.imwrite(root / "masks" / "shape.tif", np.ones((64, 64), np.uint8))
    rgb = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    tifffile.imwrite(root / "images" / "rgb.tif", rgb, photometric="rgb")
    shutil.copy(root / "points" / "img_000.csv", root / "points" / "rgb.csv")
    shutil.copy(root / "points" / "img_000.csv", root / "points" / "ghost.csv")
    return root


def test_bad_inputs_are_skipped_with_reasons(tiny, tmp_path, capsys):
    from napari_pointseg.cli import main

    data = _bad_folder(tiny, tmp_path / "bad")
    rc = main(["dataset", str(data), "--out", str(tmp_path / "out"), "--quiet", *TINY_CLI])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "Traceback" not in cap.err
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    reasons = {s["name"]: s["reason"] for s in m["skipped"]}
    assert set(reasons) == {"broken", "shape", "rgb", "ghost"}, reasons
    assert "cannot read image" in reasons["broken"]
    assert "mask shape" in reasons["shape"]
    assert "channel" in reasons["rgb"]
    assert "names no image" in reasons["ghost"]
    assert "skipping broken" in cap.err
    assert m["n_annotated"] == 2 and m["miou"] is None


@pytest.mark.parametrize(
    "setup, message",
    [
        ("empty", "no images found"),
        ("missing", "not found"),
        ("no_annotation", "points CSV or a mask"),
    ],
)
def test_cli_clear_errors(tmp_path, capsys, setup, message):
    from napari_pointseg.cli import main

    data = tmp_path / "d"
    if setup != "missing":
        (data / "images").mkdir(parents=True)
    if setup == "no_annotation":
        tifffile.imwrite(data / "images" / "a.tif", np.zeros((32, 32), np.uint8))
    rc = main(["dataset", str(data), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err


def test_grid_table_and_plot(tiny, tmp_path):
    """A 1 x 1 grid (+ the full-mask reference) writes grid.json and grid.png."""
    from napari_pointseg.cli.dataset import consume
    from napari_pointseg.dataset.grid import iter_grid

    opts = tiny_options(
        tiny / "train",
        tmp_path,
        test=tiny / "test",
        source="oracle",
        dataset_config={**TINY_DATASET, "iterations": 3},
    )
    done = consume(iter_grid(opts, [1.0], [0.005]), quiet=True)
    rows = done.summary["rows"]
    assert [(r["fraction"], r["rate"]) for r in rows] == [(1.0, 0.005), (1.0, "full")]
    assert rows[1]["fraction_labeled"] == 1.0 and rows[1]["pseudo_label_miou"] == 1.0
    table = json.loads((tmp_path / "grid.json").read_text())
    assert len(table["rows"]) == 2
    png = (tmp_path / "grid.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_test_stage_counts_every_pixel_and_lists_clashes(tmp_path):
    """The test metrics count mask values the network cannot predict as errors (not dropped),
    and a name clash in the test folder is listed in ``skipped``."""
    import tifffile

    from napari_pointseg.dataset.pipeline import PipelineOptions, _test_stage

    test = tmp_path / "test"
    (test / "images").mkdir(parents=True)
    (test / "masks").mkdir()
    img = np.zeros((8, 8), np.float32)
    tifffile.imwrite(test / "images" / "a.tif", img)
    mask = np.ones((8, 8), np.uint8)
    mask[:, 4:] = 3  # half the pixels hold a label the network does not know
    tifffile.imwrite(test / "masks" / "a.tif", mask)
    tifffile.imwrite(test / "images" / "b.tif", img)
    tifffile.imwrite(test / "images" / "b.png", (img * 0).astype(np.uint8))

    class Net:
        classes = np.array([1, 2])

        def predict(self, image):
            return np.ones((8, 8), np.int64)

    skipped = []
    gen = _test_stage(
        Net(), PipelineOptions(data=tmp_path, out=tmp_path / "o", test=test), tmp_path / "o", 1, skipped, None
    )
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        section = stop.value
    assert section["pixel_accuracy"] == 0.5
    assert section["per_class_iou"]["3"] == 0.0
    assert section["miou"] < 1.0
    assert any(s.name.startswith("test/b") for s in skipped)
