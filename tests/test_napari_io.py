"""Reader / writer contributions for the points CSV."""

import numpy as np
import pytest

from napari_pointseg.core.errors import InputError
from napari_pointseg.core.overlay import label_colour
from napari_pointseg.core.points import PointSet
from napari_pointseg.widgets.io import get_reader, write_points


def test_reader_writer_round_trip(tmp_path):
    pts = PointSet(np.array([[3, 4], [10.5, 2], [7, 7]]), [2, 1, 2], [2, 0, 1])
    src = tmp_path / "clicks.csv"
    pts.to_csv(src)
    reader = get_reader(str(src))
    assert reader is not None
    [(data, kwargs, kind)] = reader(str(src))
    assert kind == "points"
    assert kwargs["name"] == "clicks"
    # rows in click order, features carry label and order
    np.testing.assert_allclose(data, pts.coords)
    np.testing.assert_array_equal(kwargs["features"]["label"], [1, 2, 2])
    np.testing.assert_array_equal(kwargs["features"]["order"], [0, 1, 2])
    assert kwargs["face_color_cycle"][2][:3] == pytest.approx(label_colour(2))
    out = write_points(str(tmp_path / "again.csv"), data, {"features": kwargs["features"]})
    back = PointSet.from_csv(out[0])
    np.testing.assert_allclose(back.coords, pts.coords)
    np.testing.assert_array_equal(back.labels, pts.labels)


def test_reader_opens_in_napari_with_class_colours(tmp_path, make_napari_viewer):
    PointSet(np.array([[1, 1, 2], [0, 5, 5]]), [1, 3]).to_csv(tmp_path / "p3d.csv")
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(tmp_path / "p3d.csv"), plugin="napari-pointseg")
    assert layer.ndim == 3 and len(layer.data) == 2
    np.testing.assert_allclose(layer.face_color[1][:3], label_colour(3), atol=1e-6)


def test_reader_declines_other_csv(tmp_path):
    other = tmp_path / "table.csv"
    other.write_text("a,b\n1,2\n")
    assert get_reader(str(other)) is None
    assert get_reader(str(tmp_path / "image.tif")) is None


def test_writer_needs_labels(tmp_path):
    with pytest.raises(InputError, match="label"):
        write_points(str(tmp_path / "x.csv"), np.zeros((2, 2)), {"features": {}})
