"""Hostile input over every `pointseg` subcommand (issue 12).

A table of bad inputs: each must end with exit code 2, exactly one line on stderr, no
traceback, no numpy repr, and every file that existed before must be unchanged afterwards.
Then property-based fuzzing (hypothesis) of the three readers of user files: points CSV,
image, model bundle. Everything is tiny: the whole module runs in well under a minute.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from _synth import blobs, fast_config, random_points
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_pointseg.cli import main
from napari_pointseg.core.errors import InputError
from napari_pointseg.core.train_setup import TrainSetup

QUICK = [
    "--iters-per-point",
    "2",
    "--crop-size",
    "32",
    "--encoder-depth",
    "3",
    "--device",
    "cpu",
    "--quiet",
    "--threads",
    "1",
]
KEY = "napari_pointseg"


def _small_spec():
    """A network whose bundle is 9 MB, not 45 MB (resnet18 keeps all its layers): the table
    and the fuzzing write many edited copies."""
    from napari_pointseg.core.models import ModelSpec

    return ModelSpec(arch="unet", encoder="mobilenet_v2", encoder_depth=3, decoder_channels=[16, 8, 8])


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A folder of valid tiny inputs (image, mask, points, a trained bundle) plus the broken
    files the table needs. Copied per test, so each case sees pristine files."""
    d = tmp_path_factory.mktemp("base")
    image, mask = blobs(32, 0)
    tifffile.imwrite(d / "img.tif", image)
    tifffile.imwrite(d / "mask.tif", mask.astype(np.uint8))
    pts = random_points(mask, 8)
    pts.to_csv(d / "pts.csv")
    from napari_pointseg.core.bundle import save_trainer
    from napari_pointseg.core.session import make_trainer

    tr = make_trainer(
        image,
        pts,
        setup=TrainSetup(
            spec=_small_spec(),
            config=fast_config(iters_per_step=1, final_iters=1, polish_iters=0),
            device="cpu",
        ),
    ).train_all()
    save_trainer(d / "model.safetensors", tr)
    _write_broken_files(d, image, mask)
    return d


def _write_broken_files(d: Path, image, mask) -> None:
    nan = image.copy()
    nan[3, 3] = np.nan
    tifffile.imwrite(d / "nan.tif", nan)
    tifffile.imwrite(d / "5d.tif", np.zeros((2, 3, 2, 16, 16), np.uint8))
    tifffile.imwrite(d / "rgb.tif", np.zeros((32, 32, 3), np.uint8))
    tifffile.imwrite(d / "small_mask.tif", mask[:16].astype(np.uint8))
    tifffile.imwrite(d / "other_mask.tif", (mask * 100).astype(np.uint8))  # values 100, 200
    tifffile.imwrite(d / "frac_mask.tif", mask.astype(np.float32) + 0.5)
    tifffile.imwrite(d / "prediction.tif", image)  # an input named like a train output
    tifffile.imwrite(d / "x.tif", image)
    tifffile.imwrite(d / "x_prediction.tif", image)  # predict x.tif --out d would replace it
    (d / "garbage.tif").write_bytes(b"II*\x00garbage" * 8)
    from skimage.io import imsave

    imsave(d / "img.png", (mask * 100).astype(np.uint8), check_contrast=False)
    (d / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (d / "afile").write_text("I am a file, not a folder")
    (d / "a").mkdir()
    (d / "b").mkdir()
    tifffile.imwrite(d / "a" / "img.tif", image)
    tifffile.imwrite(d / "b" / "img.tif", image)
    head = "order,label,y,x\n"
    csvs = {
        "label_inf": "0,1,5,5\n1,inf,9,9\n",
        "label_1e30": "0,1,5,5\n1,1e30,9,9\n",
        "label_nan": "0,1,5,5\n1,nan,9,9\n",
        "label_frac": "0,1,5,5\n1,1.5,9,9\n",
        "label_huge": "0,1,5,5\n1,99999999999999999999,9,9\n",
        "order_inf": "0,1,5,5\ninf,2,9,9\n",
        "order_1e30": "0,1,5,5\n1e30,2,9,9\n",
        "order_dup": "0,1,5,5\n0,2,9,9\n",
        "coord_1e300": "0,1,5,5\n1,2,1e300,9\n",
        "coord_neg": "0,1,5,5\n1,2,-5,9\n",
        "coord_nan": "0,1,5,5\n1,2,nan,9\n",
        "coord_text": "0,1,5,5\n1,2,five,9\n",
        "one_class": "0,1,5,5\n1,1,9,9\n",
        "short_row": "0,1,5\n",
        "no_points": "",
        "3d_points": None,
    }
    for name, rows in csvs.items():
        text = "order,label,z,y,x\n0,1,0,5,5\n1,2,0,9,9\n" if rows is None else head + rows
        (d / f"{name}.csv").write_text(text)
    (d / "no_header.csv").write_text("1,2,3\n4,5,6\n")
    (d / "empty.csv").write_text("")
    (d / "binary.csv").write_bytes(b"\xff\xfe\x00\x81garbage\x00\x9c")
    _write_bundles(d)
    (d / "weights.pt").write_bytes(b"not a torch file at all")
    # dataset layouts
    for name in ("ds", "ds_empty"):
        (d / name / "images").mkdir(parents=True)
    for sub in ("images", "masks"):
        (d / "ds" / sub).mkdir(exist_ok=True)
        tifffile.imwrite(d / "ds" / sub / "a.tif", mask.astype(np.uint8) if sub == "masks" else image)
    (d / "ds" / "notes.txt").write_text("not an image")


def _write_bundles(d: Path) -> None:
    """Bundles whose header was edited after training (the tensors are the real ones)."""

    def edit(name, change):
        header, tensors = _read_bundle(d / "model.safetensors")
        change(header)
        _write_bundle(d / f"{name}.safetensors", header, tensors)

    def set_(path, value):
        def change(h):
            node = h
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = value

        return change

    edit("no_classes", set_(["classes"], []))
    edit("one_class", lambda h: (h.update(classes=[1]), h["spec"].update(classes=1)))
    edit("dup_classes", set_(["classes"], [1, 1]))
    edit("huge_sigma", set_(["input", "filter_bank", "sigmas"], [1.0, 2.0, 4.0, 8.0, 1e9]))
    edit("three_classes", lambda h: (h.update(classes=[1, 2, 3]), h["spec"].update(classes=3)))
    edit("wrong_arch", set_(["spec", "arch"], "fpn"))
    edit("newer", set_(["format_version"], 99))
    edit("bad_json_type", set_(["spec"], "unet"))
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(d / "foreign.safetensors"))
    (d / "garbage.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage" * 4)


def _read_bundle(path: Path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()[KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return header, tensors


def _write_bundle(path: Path, header: dict, tensors: dict) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={KEY: json.dumps(header)})


@pytest.fixture
def d(base, tmp_path):
    """A private copy of ``base`` (hard links: fast; a run that replaces a file gets a new
    inode, one that writes into it changes its size / time, both seen by `_hashes`)."""
    work = tmp_path / "w"
    shutil.copytree(base, work, copy_function=os.link)
    return work


def _hashes(root: Path) -> dict:
    """{relative path: fingerprint}: the content hash of small files, inode + size + mtime of
    the big bundles (hashing those for every case would dominate the run time)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (
                hashlib.sha256(p.read_bytes()).hexdigest()
                if st.st_size < 200_000
                else (st.st_ino, st.st_size, st.st_mtime_ns)
            )
    return out


# -- the table ------------------------------------------------------------------------------
# name -> (argv with {d} for the work folder, a substring of the error line)


def _train(*extra, image="img.tif", points="pts.csv", out="out"):
    return ["train", f"{{d}}/{image}", f"{{d}}/{points}", "--out", f"{{d}}/{out}", *QUICK, *extra]


def _predict(*images, bundle="model.safetensors", out="out", extra=()):
    return [
        "predict",
        f"{{d}}/{bundle}",
        *[f"{{d}}/{i}" for i in images or ("img.tif",)],
        "--out",
        f"{{d}}/{out}",
        "--device",
        "cpu",
        "--quiet",
        *extra,
    ]


def _oracle(*extra, mask="mask.tif", out="out"):
    return ["oracle", "{d}/img.tif", f"{{d}}/{mask}", "--out", f"{{d}}/{out}", *QUICK, *extra]


def _dataset(*extra, data="ds", out="dout"):
    return ["dataset", f"{{d}}/{data}", "--out", f"{{d}}/{out}", "--quiet", "--device", "cpu", *extra]


CASES = {
    # options: finite, in range, integers where integers are meant
    "negative seed": (_train("--seed", "-1"), "--seed must be >= 0"),
    "huge seed": (_train("--seed", str(2**70)), "--seed"),
    "seed not a number": (_train("--seed", "abc"), "invalid int value"),
    "iters-per-point nan": (_train("--iters-per-point", "nan"), "--iters-per-point"),
    "iters-per-point negative": (_train("--iters-per-point", "-3"), "--iters-per-point"),
    "lr nan": (_train("--lr", "nan"), "--lr must be > 0"),
    "lr inf": (_train("--lr", "inf"), "--lr"),
    "lr zero": (_train("--lr", "0"), "--lr"),
    "crop size negative": (_train("--crop-size", "-32"), "--crop-size"),
    "threads zero": (_train("--threads", "0"), "--threads"),
    "entropy weight inf": (_train("--entropy-weight", "inf"), "--entropy-weight"),
    "encoder depth 9": (_train("--encoder-depth", "9"), "--encoder-depth"),
    "unknown option": (_train("--frobnicate"), "unrecognized arguments"),
    "bad channel axis": (_train("--channel-axis", "sideways"), "channel axis"),
    "channel axis out of range": (_train("--channel-axis", "7"), "does not exist"),
    "unknown architecture": (_train("--arch", "transformer9000"), "unknown architecture"),
    "unknown encoder": (_train("--encoder", "resnet9999"), "unknown encoder"),
    "unknown device": (_train("--device", "tpu"), "unknown device"),
    "unknown order": (_train("--order", "sideways"), "invalid choice"),
    # --out
    "out is a file": (_train(out="afile"), "existing file"),
    "out under a file": (_train(out="afile/sub"), "which is a file"),
    "out would overwrite the input image": (_train(image="prediction.tif", out="."), "overwrite the input"),
    # input files
    "missing image": (_train(image="nope.tif"), "not found"),
    "image is a folder": (_train(image="a"), "is not a file"),
    "unreadable image": (_train(image="garbage.tif"), "cannot read image"),
    "nan image": (_train(image="nan.tif"), "NaN"),
    "5d image": (_train(image="5d.tif"), "dimensionality"),
    "missing points": (_train(points="nope.csv"), "not found"),
    # points CSV
    "label inf": (_train(points="label_inf.csv"), "not an integer"),
    "label 1e30": (_train(points="label_1e30.csv"), "64-bit"),
    "label nan": (_train(points="label_nan.csv"), "not an integer"),
    "label fraction": (_train(points="label_frac.csv"), "not an integer"),
    "label beyond int64": (_train(points="label_huge.csv"), "64-bit"),
    "order inf": (_train(points="order_inf.csv"), "order"),
    "order 1e30": (_train(points="order_1e30.csv"), "64-bit"),
    "duplicate order": (_train(points="order_dup.csv"), "duplicate"),
    "coordinate 1e300": (_train(points="coord_1e300.csv"), "outside the image"),
    "negative coordinate": (_train(points="coord_neg.csv"), "at (-5, 9)"),
    "nan coordinate": (_train(points="coord_nan.csv"), "non-finite"),
    "text coordinate": (_train(points="coord_text.csv"), "line 3"),
    "3d points on a 2d image": (_train(points="3d_points.csv"), "3 coordinates"),
    "one class": (_train(points="one_class.csv"), "at least 2 classes"),
    "short row": (_train(points="short_row.csv"), "expected 4 fields"),
    "header only": (_train(points="no_points.csv"), "no points"),
    "no header": (_train(points="no_header.csv"), "header must contain"),
    "empty csv": (_train(points="empty.csv"), "empty"),
    "binary csv": (_train(points="binary.csv"), "cannot read points"),
    # --mask
    "missing mask": (_train("--mask", "{d}/nope.tif"), "not found"),
    "mask of another shape": (_train("--mask", "{d}/small_mask.tif"), "mask shape"),
    "mask values unrelated to the labels": (_train("--mask", "{d}/other_mask.tif"), "share no value"),
    "mask with fractions": (_train("--mask", "{d}/frac_mask.tif"), "integers"),
    # predict
    "missing bundle": (_predict(bundle="nope.safetensors"), "not found"),
    "garbage bundle": (_predict(bundle="garbage.safetensors"), "not a readable model bundle"),
    "foreign safetensors": (_predict(bundle="foreign.safetensors"), "not a napari-pointseg bundle"),
    "bundle without classes": (_predict(bundle="no_classes.safetensors"), "classes"),
    "bundle with one class": (_predict(bundle="one_class.safetensors"), "classes"),
    "bundle with duplicate classes": (_predict(bundle="dup_classes.safetensors"), "distinct"),
    "bundle filter sigma 1e9": (_predict(bundle="huge_sigma.safetensors"), "sigma"),
    "bundle header does not match weights": (_predict(bundle="three_classes.safetensors"), "do not match"),
    "bundle of another architecture": (_predict(bundle="wrong_arch.safetensors"), "do not match"),
    "bundle from a newer version": (_predict(bundle="newer.safetensors"), "newer"),
    "bundle header of the wrong type": (_predict(bundle="bad_json_type.safetensors"), "corrupt"),
    "two inputs with one output name": (_predict("a/img.tif", "b/img.tif"), "would both be written"),
    "the same image twice": (_predict("img.tif", "img.tif"), "given twice"),
    "prediction would replace an input": (
        _predict("x.tif", "x_prediction.tif", out="."),
        "overwrite the input",
    ),
    "a later image is no image": (_predict("img.tif", "garbage.tif", "fake.png"), "cannot read image"),
    "image with other channels than the bundle": (
        _predict("rgb.tif", extra=["--channel-axis", "2"]),
        "channel",
    ),
    "predict out is a file": (_predict(out="afile"), "existing file"),
    # oracle / orders / samplers
    "oracle budget nan": (_oracle("--budget", "nan"), "--budget"),
    "oracle target above 1": (_oracle("--target", "2"), "--target"),
    "oracle points-per-step 0": (_oracle("--points-per-step", "0"), "--points-per-step"),
    "oracle mask of another shape": (_oracle(mask="small_mask.tif"), "shape"),
    "oracle would overwrite its mask": (
        ["oracle", "{d}/img.tif", "{d}/prediction.tif", "--out", "{d}", *QUICK],
        "overwrite the input",
    ),
    "orders odd pairs": (["orders", "{d}/img.tif", "--out", "{d}/out", *QUICK], "pairs"),
    "orders negative seed": (
        ["orders", "{d}/img.tif", "{d}/mask.tif", "--out", "{d}/out", *QUICK, "--seed", "-3"],
        "--seed",
    ),
    "samplers zero seeds": (
        ["samplers", "{d}/img.tif", "{d}/mask.tif", "--out", "{d}/out", *QUICK, "--seeds", "0"],
        "--seeds",
    ),
    "orders bad second pair": (
        [
            "orders",
            "{d}/img.tif",
            "{d}/mask.tif",
            "{d}/img.tif",
            "{d}/small_mask.tif",
            "--out",
            "{d}/out",
            *QUICK,
        ],
        "small_mask.tif: mask shape",
    ),
    "samplers missing mask": (
        ["samplers", "{d}/img.tif", "{d}/nope.tif", "--out", "{d}/out", *QUICK],
        "not found",
    ),
    "models with an argument": (["models", "--bogus"], "unrecognized"),
    "no subcommand": ([], "required"),
    # dataset
    "dataset missing folder": (_dataset(data="nope"), "not found"),
    "dataset without images": (_dataset(data="ds_empty"), "no images"),
    "dataset workers 0": (_dataset("--workers", "0"), "--workers"),
    "dataset rate nan": (_dataset("--rate", "nan"), "--rate"),
    "dataset fraction 0": (_dataset("--fraction", "0"), "--fraction"),
    "dataset fractions with nan": (_dataset("--fractions", "0.5,nan"), "--fractions"),
    "dataset iterations 0": (_dataset("--iterations", "0"), "--iterations"),
    "dataset lr negative": (_dataset("--dataset-lr", "-1"), "--dataset-lr"),
    "dataset missing test folder": (_dataset("--test", "{d}/nope"), "--test folder not found"),
    "dataset grid without test": (_dataset("--grid"), "--test"),
    "dataset missing encoder weights": (_dataset("--encoder-weights", "{d}/nope.pt"), "not found"),
    "dataset garbage encoder weights": (
        _dataset("--encoder-weights", "{d}/weights.pt"),
        "cannot read weights",
    ),
    "dataset out is a file": (_dataset(out="afile"), "existing file"),
    "dataset out inside an input": (_dataset(out="ds/images/a.tif"), "existing file"),
}


def _run(argv, d, capsys):
    before = _hashes(d)
    code = main([a.replace("{d}", str(d)) for a in argv])
    cap = capsys.readouterr()
    after = _hashes(d)
    assert {k: after.get(k) for k in before} == before, "a pre-existing file changed"
    return code, cap.err


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2(case, d, capsys):
    argv, expected = CASES[case]
    code, err = _run(argv, d, capsys)
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, lines
    line = lines[0]
    assert "Traceback" not in line and "np.float64" not in line and "np.int64" not in line
    assert line.startswith("pointseg"), line
    assert expected in line, line


def test_at_least_40_kinds():
    assert len(CASES) >= 40


def test_bad_input_in_a_real_process(base, tmp_path):
    """Through the console entry point: nothing (warnings, torch text) before the line."""
    work = tmp_path / "w"
    shutil.copytree(base, work)
    for argv in (
        ["train", str(work / "img.tif"), str(work / "label_1e30.csv"), "--out", str(work), *QUICK],
        [
            "dataset",
            str(work / "ds"),
            "--out",
            str(work / "o"),
            "--encoder-weights",
            str(work / "weights.pt"),
        ],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "napari_pointseg", *argv], capture_output=True, text=True, timeout=180
        )
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr


def test_unwritable_out_folder(d, capsys, monkeypatch):
    """(Tests run as root here, where every folder is writable: os.access is faked.)"""
    import napari_pointseg.cli.common as cc

    monkeypatch.setattr(cc.os, "access", lambda p, mode: not (mode & os.W_OK))
    code, err = _run(_train(out="newdir/out"), d, capsys)
    assert code == 2 and "cannot write" in err and len(err.strip().splitlines()) == 1


def test_pickle_encoder_weights_never_run(d, capsys):
    import pickle

    class Evil:
        def __reduce__(self):
            return (open, (str(d / "pwned"), "w"))

    (d / "evil.pt").write_bytes(pickle.dumps(Evil()))
    code, err = _run(_dataset("--encoder-weights", "{d}/evil.pt"), d, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "cannot read weights" in err
    assert not (d / "pwned").exists()


# -- what valid-but-unusual input must give ----------------------------------------------------


def test_excel_csv_with_byte_order_mark(tmp_path):
    from napari_pointseg.core.points import PointSet

    (tmp_path / "p.csv").write_bytes("order,label,y,x\r\n0,1,5,5\r\n1,2,9,9\r\n".encode("utf-8-sig"))
    pts = PointSet.from_csv(tmp_path / "p.csv")
    assert pts.labels.tolist() == [1, 2] and pts.coords.tolist() == [[5, 5], [9, 9]]


def test_napari_labels_are_exact_or_refused():
    from napari_pointseg.core.points import PointSet

    data = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    pts = PointSet.from_napari(data, {"label": [5000000000.0, 2.0, np.nan]})
    assert pts.labels.tolist() == [5000000000, 2]
    for bad in (1e30, -1e19, 1.5):  # (inf, like NaN, marks an unlabelled point: dropped)
        with pytest.raises(InputError):
            PointSet.from_napari(data, {"label": [bad, 2.0, 1.0]})


def test_large_labels_are_written_exactly(tmp_path):
    from napari_pointseg.core.points import PointSet
    from napari_pointseg.core.session import write_labels

    (tmp_path / "p.csv").write_text(
        "order,label,y,x\n0,5000000000,1,1\n1,-7,2,2\n2,9223372036854775807,3,3\n"
    )
    pts = PointSet.from_csv(tmp_path / "p.csv")
    assert pts.labels.tolist() == [5000000000, -7, 2**63 - 1]
    for values in ([0, 5000000000], [-7, 5000000000], [1, 2**64 - 1]):
        dtype = np.uint64 if values[-1] >= 2**63 else np.int64
        write_labels(tmp_path / "l.tif", np.array(values, dtype).reshape(1, 2))
        assert tifffile.imread(tmp_path / "l.tif").tolist() == [values]


def test_metrics_count_pixels_with_labels_absent_from_the_mask():
    """The issue's example: 56 % of the pixels agree, so the mIoU cannot be 1."""
    from napari_pointseg.core.metrics import segmentation_metrics
    from napari_pointseg.core.session import metrics_for

    truth = np.array([1] * 28 + [2] * 22)
    pred = truth.copy()
    pred[6:28] = 3  # a label the mask never uses
    m = segmentation_metrics(truth, pred)
    assert m["pixel_accuracy"] == pytest.approx(0.56)
    assert m["per_class_iou"]["3"] == 0.0 and m["miou"] < 0.6
    assert metrics_for(truth, pred, None, 0.0)["miou"] == m["miou"]


def test_predict_keeps_full_stems(base, tmp_path, capsys):
    work = tmp_path / "w"
    work.mkdir()
    for name in ("img.v1.tif", "img.v2.tif"):
        shutil.copy(base / "img.tif", work / name)
    assert (
        main(
            [
                "predict",
                str(base / "model.safetensors"),
                str(work / "img.v1.tif"),
                str(work / "img.v2.tif"),
                "--out",
                str(work / "o"),
                "--device",
                "cpu",
                "--quiet",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in (work / "o").iterdir()) == [
        "img.v1_prediction.tif",
        "img.v2_prediction.tif",
    ]


def test_dataset_reports_every_name_clash(tmp_path):
    from napari_pointseg.dataset.layout import scan_folder

    image = np.zeros((16, 16), np.uint8)
    (tmp_path / "images").mkdir()
    for name in ("cells.day0.tif", "cells.day1.tif", "a.tif", "b.ome.tif"):
        tifffile.imwrite(tmp_path / "images" / name, image)
    from skimage.io import imsave

    imsave(tmp_path / "images" / "a.png", image, check_contrast=False)
    (tmp_path / "points").mkdir()
    (tmp_path / "points" / "b.csv").write_text("order,label,y,x\n0,1,1,1\n")
    lst = scan_folder(tmp_path)
    assert sorted(i.name for i in lst.items) == ["b", "cells.day0", "cells.day1"]
    assert lst.items[0].points is not None  # b.ome.tif <-> b.csv
    skipped = {s.name: s.reason for s in lst.skipped}
    assert list(skipped) == ["a"] and "a.png" in skipped["a"] and "a.tif" in skipped["a"]


def test_bundle_build_with_foreign_weights_is_an_input_error(base):
    """Issue 11: weights that do not fit the header raised RuntimeError from Bundle.build."""
    import dataclasses

    from napari_pointseg.core.bundle import load_bundle
    from napari_pointseg.core.models import build_model

    b = load_bundle(base / "model.safetensors")
    other = build_model(dataclasses.replace(b.spec, classes=3)).state_dict()
    with pytest.raises(InputError, match="do not match"):
        dataclasses.replace(b, state_dict=other).build()


# -- fuzzing the readers ----------------------------------------------------------------------

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TOKENS = [
    "0",
    "1",
    "2",
    "-1",
    "1.5",
    "inf",
    "-inf",
    "nan",
    "1e30",
    "1e300",
    "5000000000",
    "99999999999999999999",
    "",
    " ",
    "x",
    "\ufeff",
    "label",
    "order",
    "y",
    "x",
    '"',
    "1,2",
]


def _only_input_errors(fn, *args):
    try:
        return fn(*args)
    except InputError:
        return None


@FUZZ
@given(data=st.binary(max_size=200))
def test_fuzz_points_csv_random_bytes(tmp_path, data):
    from napari_pointseg.core.points import PointSet

    (tmp_path / "p.csv").write_bytes(data)
    _only_input_errors(PointSet.from_csv, tmp_path / "p.csv")


@FUZZ
@given(
    rows=st.lists(st.lists(st.sampled_from(TOKENS), min_size=0, max_size=6), max_size=6),
    header=st.sampled_from(["order,label,y,x", "label,y,x", "order,label,z,y,x", "\ufefforder,label,y,x"]),
)
def test_fuzz_points_csv_mutated(tmp_path, rows, header):
    from napari_pointseg.core.points import PointSet

    (tmp_path / "p.csv").write_text("\n".join([header] + [",".join(r) for r in rows]), encoding="utf-8")
    pts = _only_input_errors(PointSet.from_csv, tmp_path / "p.csv")
    if pts is not None:
        assert pts.labels.dtype == np.int64 and np.all(np.isfinite(pts.coords))
        _only_input_errors(pts.validate, (32, 32))


@pytest.fixture(scope="module")
def valid_files(base):
    return {
        "tif": (base / "img.tif").read_bytes(),
        "png": (base / "img.png").read_bytes(),
        "bundle": (base / "model.safetensors").read_bytes(),
    }


def _mutate(data: bytes, edits) -> bytes:
    b = bytearray(data)
    for pos, value in edits:
        b[pos % len(b)] = value
    return bytes(b)


EDITS = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6)


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".tif", ".png", ".jpg"]))
def test_fuzz_image_random_bytes(tmp_path, data, suffix):
    from napari_pointseg.core.images import probe_image, read_image

    (tmp_path / f"i{suffix}").write_bytes(data)
    _only_input_errors(probe_image, tmp_path / f"i{suffix}")
    _only_input_errors(read_image, tmp_path / f"i{suffix}")


@FUZZ
@given(edits=EDITS, head=st.booleans(), kind=st.sampled_from(["tif", "png"]))
def test_fuzz_image_mutated(tmp_path, valid_files, edits, head, kind):
    from napari_pointseg.core.images import probe_image, read_image, read_mask

    data = valid_files[kind]
    if head:  # the header / first IFD and the end, where a mutation changes shapes and offsets
        edits = [(p % 64 if p % 2 else len(data) - 1 - p % 256, v) for p, v in edits]
    path = tmp_path / f"i.{kind}"
    path.write_bytes(_mutate(data, edits))
    _only_input_errors(probe_image, path)
    _only_input_errors(read_image, path)
    _only_input_errors(read_mask, path)


@FUZZ
@given(data=st.binary(max_size=300))
def test_fuzz_bundle_random_bytes(tmp_path, data):
    from napari_pointseg.core.bundle import load_bundle

    (tmp_path / "b.safetensors").write_bytes(data)
    _only_input_errors(load_bundle, tmp_path / "b.safetensors")


@FUZZ
@given(edits=EDITS)
def test_fuzz_bundle_mutated_bytes(tmp_path, valid_files, edits):
    from napari_pointseg.core.bundle import load_bundle

    data = valid_files["bundle"]
    header_len = int.from_bytes(data[:8], "little") + 8
    edits = [(p % header_len, v) for p, v in edits]  # the header: the tensors' bytes are free
    (tmp_path / "b.safetensors").write_bytes(_mutate(data, edits))
    _only_input_errors(load_bundle, tmp_path / "b.safetensors")


HOSTILE = [
    None,
    -1,
    0,
    1,
    3,
    1e9,
    -1e9,
    1e308,
    float("nan"),
    "x",
    "",
    [],
    [1],
    [1, 1],
    [1e9],
    {},
    {"a": 1},
    True,
    2**70,
]


def _paths(node, prefix=()):
    """Every key path of a JSON document."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list) and node and len(node) < 10:
        for i, v in enumerate(node):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


@pytest.fixture(scope="module")
def bundle_parts(base):
    header, tensors = _read_bundle(base / "model.safetensors")
    return header, tensors, sorted(_paths(header), key=str)


@FUZZ
@given(choice=st.data())
def test_fuzz_bundle_mutated_header(tmp_path, bundle_parts, choice):
    """A header field set to a hostile value: load gives a bundle or an InputError, and a
    bundle that loads builds its network (nothing but InputError from the weights)."""
    import copy

    from napari_pointseg.core.bundle import load_bundle

    header, tensors, paths = bundle_parts
    header = copy.deepcopy(header)
    path = choice.draw(st.sampled_from(paths))
    node = header
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = choice.draw(st.sampled_from(HOSTILE))
    _write_bundle(tmp_path / "b.safetensors", header, tensors)
    b = _only_input_errors(load_bundle, tmp_path / "b.safetensors")
    if b is not None:
        _only_input_errors(b.build)
