import numpy as np
import pytest
import tifffile

from napari_pointseg.core.errors import InputError
from napari_pointseg.core.features import FilterBank
from napari_pointseg.core.images import (
    fit_normalisation,
    guess_channel_axis,
    pad_to_multiple,
    read_image,
    to_channels_first,
)
from napari_pointseg.core.inputs import PreparedImage


@pytest.mark.parametrize(
    "shape, axis",
    [
        ((64, 64), None),
        ((64, 64, 3), 2),
        ((2, 64, 64), 0),
        ((20, 64, 64), None),
        ((20, 64, 64, 2), 3),
        ((3, 20, 64, 64), 0),
    ],
)
def test_guess_channel_axis(shape, axis):
    assert guess_channel_axis(shape) == axis


def test_channels_first_shapes_and_errors():
    assert to_channels_first(np.zeros((64, 64, 3), np.uint8)).shape == (3, 64, 64)
    assert to_channels_first(np.zeros((10, 32, 32))).shape == (1, 10, 32, 32)
    with pytest.raises(InputError, match="dimensionality"):
        to_channels_first(np.zeros((5, 6, 7, 8, 9)))
    bad = np.zeros((8, 8), np.float32)
    bad[2, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        to_channels_first(bad)
    with pytest.raises(InputError, match="at least 2D"):
        to_channels_first(np.zeros(5))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_normalisation_is_robust_and_dtype_independent(dtype):
    rng = np.random.default_rng(0)
    img = (rng.random((1, 64, 64)) * 200).astype(dtype)
    img[0, 0, 0] = 255 if dtype == np.uint8 else 60000  # a hot pixel must not squash the range
    out = fit_normalisation(img).apply(img)
    assert out.dtype == np.float32
    assert -0.05 < np.median(out) < 1.05
    assert out.max() <= 2.0
    assert np.percentile(out, 50) == pytest.approx(0.5, abs=0.1)


def test_pad_to_multiple_round_trip():
    x = np.arange(2 * 30 * 45, dtype=np.float32).reshape(2, 30, 45)
    p, (ph, pw) = pad_to_multiple(x, 16)
    assert p.shape == (2, 32, 48) and (ph, pw) == (2, 3)
    np.testing.assert_array_equal(p[:, :30, :45], x)


def test_read_image_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "none.tif")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="cannot read"):
        read_image(tmp_path / "junk.tif")
    tifffile.imwrite(tmp_path / "ok.tif", np.ones((4, 5), np.uint16))
    assert read_image(tmp_path / "ok.tif").shape == (4, 5)


def test_prepared_image_channels_and_standardisation():
    rng = np.random.default_rng(1)
    rgb = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    prep = PreparedImage(rgb, filter_bank=FilterBank((1.0, 2.0)))
    x = prep.plane(0)
    assert x.shape == (3 + 10, 40, 48)  # raw channels + the bank on their mean
    assert x.dtype == np.float32
    assert np.allclose(x.reshape(x.shape[0], -1).mean(1), 0, atol=1e-3)
    stack = PreparedImage(rng.random((6, 32, 32)).astype(np.float32), filter_bank=FilterBank(()))
    assert stack.is_3d and stack.n_planes == 6 and stack.plane(3).shape == (1, 32, 32)
