import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from _synth import blobs, random_points

from napari_pointseg.cli import build_parser, main

FAST = ["--iters-per-point", "2", "--crop-size", "32", "--encoder-depth", "3", "--device", "cpu", "--quiet"]


@pytest.fixture
def files(tmp_path):
    image, mask = blobs(64, 0)
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "mask.tif", mask.astype(np.uint8))
    random_points(mask, 12).to_csv(tmp_path / "pts.csv")
    return tmp_path


def _err_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_train_writes_outputs_and_predict_uses_bundle(files, capsys):
    out = files / "out"
    assert (
        main(
            [
                "train",
                str(files / "img.tif"),
                str(files / "pts.csv"),
                "--out",
                str(out),
                "--mask",
                str(files / "mask.tif"),
                *FAST,
            ]
        )
        == 0
    )
    pred = tifffile.imread(out / "prediction.tif")
    assert pred.shape == (64, 64)
    assert set(np.unique(pred)) <= {1, 2}  # the point label values
    m = json.loads((out / "metrics.json").read_text())
    for key in ("miou", "pixel_accuracy", "per_class_iou", "n_points", "fraction_labeled", "seconds"):
        assert key in m
    assert 0 <= m["miou"] <= 1 and m["n_points"] == 12
    assert (out / "overlay.png").stat().st_size > 1000
    assert (
        main(
            [
                "predict",
                str(out / "model.safetensors"),
                str(files / "img.tif"),
                "--out",
                str(files / "pred"),
                "--quiet",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    again = tifffile.imread(files / "pred" / "img_prediction.tif")
    assert again.shape == (64, 64)
    assert (again == pred).mean() > 0.95  # renormalised on the same image: (nearly) the same


def test_entropy_weight_option_reaches_the_bundle(files):
    from napari_pointseg.core.bundle import load_bundle

    out = files / "no_entropy"
    assert (
        main(
            [
                "train",
                str(files / "img.tif"),
                str(files / "pts.csv"),
                "--out",
                str(out),
                "--entropy-weight",
                "0",
                *FAST,
            ]
        )
        == 0
    )
    assert load_bundle(out / "model.safetensors").train_config["entropy_weight"] == 0.0


@pytest.mark.parametrize("forest, classes", [("always", 2), ("off", None)])
def test_forest_option_reaches_the_bundle(files, forest, classes):
    """--forest always gives this grey image the click forest (its two classes' channels),
    --forest off none; the written prediction comes from the bundle either way."""
    from napari_pointseg.core.bundle import load_bundle

    out = files / f"forest_{forest}"
    args = ["train", str(files / "img.tif"), str(files / "pts.csv"), "--out", str(out), "--forest", forest]
    assert main([*args, *FAST]) == 0
    b = load_bundle(out / "model.safetensors")
    assert (b.input_spec.forest.classes if b.input_spec.forest else None) == classes
    assert (b.forest_data is not None) == (classes is not None)
    assert tifffile.imread(out / "prediction.tif").shape == (64, 64)


def test_every_subcommand_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:
        r = subprocess.run(
            [sys.executable, "-m", "napari_pointseg", name, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0 and "usage: pointseg" in r.stdout, name


def _bad_inputs(tmp):
    image, mask = blobs(64, 0)
    nan = image.copy()
    nan[3, 3] = np.nan
    tifffile.imwrite(tmp / "nan.tif", nan)
    tifffile.imwrite(tmp / "inf.tif", np.where(nan != nan, np.inf, nan).astype(np.float32))
    tifffile.imwrite(tmp / "5d.tif", np.zeros((2, 5, 6, 16, 16), np.uint8))
    (tmp / "notimage.tif").write_text("hello")
    (tmp / "outside.csv").write_text("order,label,y,x\n0,1,5,5\n1,2,100,5\n")
    (tmp / "oneclass.csv").write_text("order,label,y,x\n0,1,5,5\n1,1,10,5\n")
    (tmp / "malformed.csv").write_text("order,label,y,x\n0,1,5\n")
    img, pts = str(tmp / "img.tif"), str(tmp / "pts.csv")
    return {
        "missing image": ([str(tmp / "nope.tif"), pts], "not found"),
        "unreadable image": ([str(tmp / "notimage.tif"), pts], "cannot read"),
        "missing points": ([img, str(tmp / "nope.csv")], "not found"),
        "nan image": ([str(tmp / "nan.tif"), pts], "NaN"),
        "inf image": ([str(tmp / "inf.tif"), pts], "NaN or infinite"),
        "5d image": ([str(tmp / "5d.tif"), pts], "dimensionality"),
        "points outside": ([img, str(tmp / "outside.csv")], "outside the image"),
        "one class": ([img, str(tmp / "oneclass.csv")], "at least 2 classes"),
        "malformed csv": ([img, str(tmp / "malformed.csv")], "expected 4 fields"),
        "unknown arch": ([img, pts, "--arch", "transformer9000"], "unknown architecture"),
        "unknown encoder": ([img, pts, "--encoder", "resnet9999"], "unknown encoder"),
        "missing mask": ([img, pts, "--mask", str(tmp / "nomask.tif")], "not found"),
        "negative entropy weight": ([img, pts, "--entropy-weight", "-1"], "--entropy-weight must be >= 0"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing image",
        "unreadable image",
        "missing points",
        "nan image",
        "inf image",
        "5d image",
        "points outside",
        "one class",
        "malformed csv",
        "unknown arch",
        "unknown encoder",
        "missing mask",
        "negative entropy weight",
    ],
)
def test_bad_input_is_one_line_exit_2(files, capsys, case):
    args, msg = _bad_inputs(files)[case]
    code = main(["train", *args, "--out", str(files / "o"), "--quiet", "--device", "cpu"])
    assert code == 2
    line = _err_line(capsys)
    assert line.startswith("pointseg train: error:") and msg in line


def test_device_cuda_without_cuda(files, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    code = main(
        [
            "train",
            str(files / "img.tif"),
            str(files / "pts.csv"),
            "--out",
            str(files / "o"),
            "--device",
            "cuda",
            "--quiet",
        ]
    )
    assert code == 2 and "CUDA is not available" in _err_line(capsys)


def test_predict_with_bad_bundle(files, capsys):
    (files / "bad.safetensors").write_bytes(b"nope")
    code = main(
        ["predict", str(files / "bad.safetensors"), str(files / "img.tif"), "--out", str(files / "o")]
    )
    assert code == 2 and "bundle" in _err_line(capsys)


def test_console_script_entry_point():
    r = subprocess.run(
        [sys.executable, "-m", "napari_pointseg", "models"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and "resnet18" in r.stdout
