"""`pointseg oracle / orders / samplers` through napari_pointseg.cli.main on tiny images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_pointseg.cli import main

FAST = [
    "--encoder-depth",
    "3",
    "--iters-per-point",
    "1",
    "--crop-size",
    "0",
    "--device",
    "cpu",
    "--quiet",
    "--threads",
    "2",
]


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    mask = np.ones((64, 64), np.uint8)
    mask[(yy - 24) ** 2 + (xx - 24) ** 2 < 150] = 2
    mask[40:56, 40:60] = 3
    image = (np.choose(mask - 1, [30, 200, 100]) + rng.normal(0, 8, mask.shape)).clip(0, 255).astype(np.uint8)
    paths = {
        "image": tmp_path / "img.tif",
        "mask": tmp_path / "mask.tif",
        "small": tmp_path / "small.tif",
        "one": tmp_path / "one.tif",
    }
    tifffile.imwrite(paths["image"], image)
    tifffile.imwrite(paths["mask"], mask)
    tifffile.imwrite(paths["small"], mask[:32])
    tifffile.imwrite(paths["one"], np.ones_like(mask))
    return {k: str(v) for k, v in paths.items()}


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0]
    return err[0]


def test_oracle_writes_outputs(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                "oracle",
                files["image"],
                files["mask"],
                "--out",
                str(out),
                "--budget",
                "0.005",
                "--target",
                "1",
                *FAST,
            ]
        )
        == 0
    )
    for name in ("points.csv", "prediction.tif", "metrics.json", "overlay.png", "model.safetensors"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_points"] == int(0.005 * 64 * 64) and 0 <= m["miou"] <= 1 and m["curve"]
    pred = tifffile.imread(out / "prediction.tif")
    assert pred.shape == (64, 64) and set(np.unique(pred)) <= {1, 2, 3}
    assert capsys.readouterr().out == ""  # --quiet


def test_oracle_summary_table(files, tmp_path, capsys):
    assert (
        main(
            [
                "oracle",
                files["image"],
                files["mask"],
                "--out",
                str(tmp_path / "o"),
                "--budget",
                "0.002",
                "--points-per-step",
                "4",
                *[a for a in FAST if a != "--quiet"],
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "mIoU" in out and "labelled fraction" in out


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--budget", "0"], "budget"),
        (["--budget", "1.5"], "budget"),
        (["--budget", "-0.1"], "budget"),
        (["--target", "0"], "target"),
        (["--target", "1.01"], "target"),
    ],
)
def test_oracle_bad_numbers(files, tmp_path, capsys, extra, words):
    line = _error(capsys, ["oracle", files["image"], files["mask"], "--out", str(tmp_path), *extra, *FAST])
    assert words in line


def test_oracle_mask_shape_mismatch(files, tmp_path, capsys):
    assert "shape" in _error(
        capsys, ["oracle", files["image"], files["small"], "--out", str(tmp_path), *FAST]
    )


def test_oracle_one_class_mask(files, tmp_path, capsys):
    assert "single class" in _error(
        capsys, ["oracle", files["image"], files["one"], "--out", str(tmp_path), *FAST]
    )


def test_orders_and_samplers_need_pairs(files, tmp_path, capsys):
    assert "pairs" in _error(capsys, ["orders", files["image"], "--out", str(tmp_path), *FAST])
    assert "no images" in _error(capsys, ["samplers", "--out", str(tmp_path), *FAST])
    assert "budget" in _error(
        capsys, ["orders", files["image"], files["mask"], "--budget", "2", "--out", str(tmp_path), *FAST]
    )


def test_orders_table(files, tmp_path):
    out = tmp_path / "orders"
    assert (
        main(
            [
                "orders",
                files["image"],
                files["mask"],
                "--out",
                str(out),
                "--seeds",
                "1",
                "--budget",
                "0.002",
                "--target",
                "1",
                *FAST,
            ]
        )
        == 0
    )
    t = json.loads((out / "orders.json").read_text())
    assert set(t["summary"]) == {"correct", "entire", "random", "reverse"}
    assert t["runs"][0]["n_points"] == int(0.002 * 64 * 64)
    assert (out / "orders.png").is_file()
