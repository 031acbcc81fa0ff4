"""Tiled (memory-bounded) prediction: same labels as the whole-plane path up to tile borders,
lazy sources, tiled BigTIFF / OME-Zarr outputs, `pointseg predict` with tiles, workers, Dask."""

import numpy as np
import pytest
from _synth import TINY_SPEC, blobs, fast_config, random_points

from napari_pointseg.core import lazy_images as lazy
from napari_pointseg.core import tiled_predict as tp
from napari_pointseg.core import tiled_writers as writers
from napari_pointseg.core.bundle import load_bundle, predict_with_bundle, save_bundle, save_trainer
from napari_pointseg.core.errors import InputError
from napari_pointseg.core.features import FilterBank
from napari_pointseg.core.images import fit_normalisation
from napari_pointseg.core.session import make_trainer
from napari_pointseg.core.train_setup import TrainSetup


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(bundle path, image float32 (256, 256)): a tiny network trained well enough that its
    labels do not flip on numerical noise (a barely trained one is unsure on many pixels)."""
    image, mask = blobs(256, 1, noise=0.1)
    pts = random_points(mask, 120, 1)
    config = fast_config(final_iters=80, iters_per_step=6, crop_size=64)
    setup = TrainSetup(spec=TINY_SPEC, config=config, device="cpu", filter_bank=FilterBank((1.0, 2.0)))
    tr = make_trainer(image, pts, setup=setup).train_all()
    path = save_trainer(tmp_path_factory.mktemp("bundle") / "model", tr)
    return path, image


def test_tiled_equals_whole_plane_up_to_tile_borders(trained):
    path, image = trained
    bundle = load_bundle(path)
    whole = predict_with_bundle(bundle, image, device="cpu")
    # one tile covering the image: exactly the whole-plane path
    np.testing.assert_array_equal(tp.predict_tiled(bundle, image, tile=256, device="cpu"), whole)
    # 2 x 2 and 4 x 4 tiles with the default halo: GroupNorm statistics and the network's view
    # differ a little per tile; measured 0.9989 / 0.9957
    assert (tp.predict_tiled(bundle, image, tile=128, device="cpu") == whole).mean() >= 0.995
    assert (tp.predict_tiled(bundle, image, tile=64, device="cpu") == whole).mean() >= 0.99


def test_halo_and_tile_sizes(trained):
    bundle = load_bundle(trained[0])
    stride = bundle.spec.stride
    halo = tp.default_halo(bundle)
    assert halo % stride == 0 and halo >= 4 * 2.0 + 1 + tp.NETWORK_CONTEXT
    assert tp.tile_size(bundle, 100) % 16 == 0 and tp.tile_size(bundle, 100) % stride == 0
    boxes = tp.tile_boxes((100, 70), 32)
    assert boxes[0] == (0, 32, 0, 32) and boxes[-1] == (96, 100, 64, 70) and len(boxes) == 4 * 3
    covered = np.zeros((100, 70), int)
    for y0, y1, x0, x1 in boxes:
        covered[y0:y1, x0:x1] += 1
    assert (covered == 1).all()


def test_subsample_normalisation_matches_full_fit_on_small_images():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)
    img = lazy.LazyImage(rgb)
    assert img.n_channels == 3 and img.shape == (120, 90)
    full = fit_normalisation(np.moveaxis(rgb, -1, 0))
    assert lazy.subsample_normalisation(img) == full
    # a big image: strided, within a few grey levels of the full fit
    sub = lazy.subsample_normalisation(img, max_pixels=2000)
    assert np.allclose(sub.low, full.low, atol=8) and np.allclose(sub.high, full.high, atol=8)


def test_lazy_sources_give_the_same_labels(trained, tmp_path):
    import dask.array as da
    import tifffile

    path, image = trained
    bundle = load_bundle(path)
    ref = tp.predict_tiled(bundle, image, tile=128, device="cpu")
    tifffile.imwrite(tmp_path / "img.tif", image, tile=(64, 64))
    mm = np.lib.format.open_memmap(tmp_path / "img.npy", "w+", np.float32, image.shape)
    mm[:] = image
    for source in (lazy.open_lazy(tmp_path / "img.tif"), da.from_array(image, chunks=100), mm):
        np.testing.assert_array_equal(tp.predict_tiled(bundle, source, tile=128, device="cpu"), ref)


def test_lazy_image_refuses_3d_and_nan():
    with pytest.raises(InputError, match="2D"):
        lazy.LazyImage(np.zeros((5, 40, 40), np.float32))
    img = lazy.LazyImage(np.full((8, 8), np.nan, np.float32))
    with pytest.raises(InputError, match="NaN"):
        img.read((0, 8, 0, 8))


def test_writers_write_tile_by_tile(tmp_path):
    import tifffile
    import zarr

    labels = np.arange(100 * 70).reshape(100, 70) % 7 + 1
    boxes = tp.tile_boxes(labels.shape, 32)
    tiles = ((b, labels[b[0] : b[1], b[2] : b[3]]) for b in boxes)
    out = writers.write_tiled_tiff(tmp_path / "p.tif", labels.shape, np.uint8, 32, tiles)
    with tifffile.TiffFile(out) as f:
        assert f.is_bigtiff and f.pages[0].is_tiled and f.pages[0].tilewidth == 32
        np.testing.assert_array_equal(f.asarray(), labels)
    w = writers.OmeZarrLabels(tmp_path / "p.ome.zarr", labels.shape, np.uint8, 32, attrs={"k": 1})
    for b in reversed(boxes):  # any order
        w.write(b, labels[b[0] : b[1], b[2] : b[3]])
    w.close()
    root = zarr.open(str(tmp_path / "p.ome.zarr"), mode="r")
    assert root.attrs["multiscales"][0]["axes"][0]["name"] == "y"
    np.testing.assert_array_equal(root["0"][:], labels)
    assert not list(tmp_path.glob("*.tmp"))
    np.testing.assert_array_equal(lazy.open_lazy(tmp_path / "p.ome.zarr")[:], labels)


def test_old_bundle_without_normalisation_or_standardisation(trained, tmp_path):
    """Bundles written without normalisation / feature statistics still predict tiled."""
    path, image = trained
    b = load_bundle(path)
    b.input_spec.feature_mean = b.input_spec.feature_std = None
    old = save_bundle(tmp_path / "old", b.build("cpu"), b.spec, b.classes, b.input_spec, None)
    ob = load_bundle(old)
    assert ob.normalisation is None and ob.input_spec.feature_mean is None
    labels = tp.predict_tiled(ob, image, tile=128, device="cpu", normalisation="bundle")
    assert labels.shape == image.shape and set(np.unique(labels)) <= set(ob.classes)


def assert_same_labels(got, ref):
    """Equal up to a few pixels: the CLI picks its own torch thread count, and bf16 reductions
    split over another number of threads can flip a pixel whose two classes are tied."""
    assert got.shape == ref.shape and (np.asarray(got) == ref).mean() >= 0.999


def test_cli_tiled_tiff_ome_zarr_and_dask(trained, tmp_path):
    import tifffile
    import zarr
    from distributed import LocalCluster

    from napari_pointseg.cli import main

    path, image = trained
    bundle = load_bundle(path)
    ref = tp.predict_tiled(bundle, image, tile=128, device="cpu")
    tifffile.imwrite(tmp_path / "img.tif", image, tile=(64, 64))
    args = ["predict", str(path), str(tmp_path / "img.tif"), "--tile", "128", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    with tifffile.TiffFile(tmp_path / "a" / "img_prediction.tif") as f:
        assert f.pages[0].is_tiled
        assert_same_labels(f.asarray(), ref)
    assert main(args + ["--out", str(tmp_path / "b"), "--ome-zarr"]) == 0
    assert main(args + ["--out", str(tmp_path / "b"), "--ome-zarr"]) == 0  # replaced, not refused
    z = zarr.open(str(tmp_path / "b" / "img_prediction.ome.zarr"), mode="r")
    assert_same_labels(z["0"][:], ref)
    # an OME-Zarr input is a folder: accepted, predicted tiled
    zin = writers.OmeZarrLabels(tmp_path / "in.ome.zarr", image.shape, np.float32, 64)
    zin.write((0, 256, 0, 256), image)
    zin.close()
    assert (
        main(["predict", str(path), str(tmp_path / "in.ome.zarr"), "--out", str(tmp_path / "c"), "--quiet"])
        == 0
    )
    assert (tmp_path / "c" / "in.ome_prediction.tif").is_file()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        assert main(args + ["--out", str(tmp_path / "d"), "--scheduler", cluster.scheduler_address]) == 0
    assert_same_labels(tifffile.imread(tmp_path / "d" / "img_prediction.tif"), ref)


def test_cli_small_images_keep_the_whole_plane_path(trained, tmp_path):
    import tifffile

    from napari_pointseg.cli import main

    path, image = trained
    tifffile.imwrite(tmp_path / "img.tif", image)
    assert (
        main(["predict", str(path), str(tmp_path / "img.tif"), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    )
    got = tifffile.imread(tmp_path / "o" / "img_prediction.tif")
    np.testing.assert_array_equal(got, predict_with_bundle(load_bundle(path), image, device="cpu"))
    with tifffile.TiffFile(tmp_path / "o" / "img_prediction.tif") as f:
        assert not f.pages[0].is_tiled


def test_cli_two_workers(trained, tmp_path):
    import tifffile

    from napari_pointseg.cli import main

    path, image = trained
    tifffile.imwrite(tmp_path / "img.tif", image, tile=(64, 64))
    out = tmp_path / "w"
    argv = ["predict", str(path), str(tmp_path / "img.tif"), "--out", str(out), "--tile", "128"]
    assert main(argv + ["--workers", "2", "--quiet"]) == 0
    ref = tp.predict_tiled(load_bundle(path), image, tile=128, device="cpu")
    assert_same_labels(tifffile.imread(out / "img_prediction.tif"), ref)


@pytest.mark.parametrize("shape", [(300, 310, 3), (300, 310), (3, 200, 210)])
def test_one_strip_tiff_is_read_by_rows(tmp_path, monkeypatch, shape):
    """An uncompressed TIFF written as one strip is one zarr chunk: its boxes are read from
    the file row by row instead of decoding the whole image per tile."""
    import tifffile

    monkeypatch.setattr(lazy, "_MAX_CHUNK_BYTES", 1)
    a = np.random.default_rng(0).integers(0, 60000, shape).astype(np.uint16)
    tifffile.imwrite(tmp_path / "raw.tif", a, byteorder=">")
    z = lazy.open_lazy(tmp_path / "raw.tif")
    assert isinstance(z, lazy.RawArray)
    lead = (slice(None),) if shape[0] == 3 else ()
    for key in [(slice(5, 90), slice(7, 150)), (slice(None), slice(200, 250)), (slice(0, 1), slice(0, 3))]:
        np.testing.assert_array_equal(z[lead + key], a[lead + key])
    assert lazy.LazyImage(z).read((10, 50, 20, 60)).shape == (3 if 3 in (shape[0], shape[-1]) else 1, 40, 40)


def test_cli_tiled_bad_input_is_one_line(trained, tmp_path, capsys):
    import tifffile

    from napari_pointseg.cli import main

    path, image = trained
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 64, 64), np.float32))
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "empty.zarr").mkdir()
    cases = [
        (["stack.tif", "--tile", "64"], "2D"),
        (["rgb.tif", "--tile", "64"], "channel"),
        (["empty.zarr"], "cannot read image"),
        (["rgb.tif", "--tile", "-5"], "--tile must be >= 0"),
        (["rgb.tif", "--halo", "1e9"], "invalid int"),
    ]
    for extra, expected in cases:
        argv = ["predict", str(path), str(tmp_path / extra[0]), "--out", str(tmp_path / "o"), "--quiet"]
        assert main(argv + extra[1:]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (extra, err)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_tiled_prediction_with_the_click_forest(tmp_path):
    """A bundle with a click forest: the forest is refitted from the bundle and its channels
    computed per tile (the halo covers its sigma 16); one tile is the whole-plane path."""
    image, mask = blobs(192, 3, noise=0.1)
    pts = random_points(mask, 80, 3)
    config = fast_config(final_iters=40, iters_per_step=6, crop_size=64, forest_on="always")
    tr = make_trainer(image, pts, setup=TrainSetup(spec=TINY_SPEC, config=config, device="cpu")).train_all()
    bundle = load_bundle(save_trainer(tmp_path / "model", tr))
    assert bundle.input_spec.forest is not None
    assert tp.default_halo(bundle) >= 4 * 16 + 1 + tp.NETWORK_CONTEXT
    whole = predict_with_bundle(bundle, image, device="cpu")
    np.testing.assert_array_equal(tp.predict_tiled(bundle, image, tile=192, device="cpu"), whole)
    assert (tp.predict_tiled(bundle, image, tile=96, device="cpu") == whole).mean() >= 0.99
