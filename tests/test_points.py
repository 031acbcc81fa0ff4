import numpy as np
import pytest

from napari_pointseg.core.errors import InputError
from napari_pointseg.core.points import PointSet


def test_csv_round_trip_keeps_order_and_labels(tmp_path):
    ps = PointSet([[1, 2], [3, 4.5], [5, 6]], [2, 1, 2], order=[2, 0, 1])
    # rows are sorted by acquisition order
    assert ps.order.tolist() == [0, 1, 2]
    assert ps.labels.tolist() == [1, 2, 2]
    ps.to_csv(tmp_path / "p.csv")
    text = (tmp_path / "p.csv").read_text().splitlines()
    assert text[0] == "order,label,y,x"
    assert text[1] == "0,1,3,4.500"
    back = PointSet.from_csv(tmp_path / "p.csv")
    np.testing.assert_array_equal(back.coords, ps.coords)
    np.testing.assert_array_equal(back.labels, ps.labels)
    np.testing.assert_array_equal(back.order, ps.order)


def test_csv_3d_header(tmp_path):
    ps = PointSet([[0, 1, 2], [3, 4, 5]], [1, 2])
    ps.to_csv(tmp_path / "p.csv")
    assert (tmp_path / "p.csv").read_text().splitlines()[0] == "order,label,z,y,x"
    assert PointSet.from_csv(tmp_path / "p.csv").ndim == 3


@pytest.mark.parametrize(
    "content, msg",
    [
        ("", "empty"),
        ("a,b,c\n1,2,3\n", "header"),
        ("order,label,y,x\n0,1,2\n", "expected 4 fields"),
        ("order,label,y,x\n0,one,2,3\n", "line 2"),
        ("order,label,y,x\n0,1.5,2,3\n", "integer"),
        ("order,label,y,x\n0,1,2,3\n0,2,4,5\n", "duplicate"),
        ("order,label,y,x\n", "no points"),
    ],
)
def test_malformed_csv_raises_clear_error(tmp_path, content, msg):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(InputError, match=msg):
        PointSet.from_csv(p)


def test_missing_csv():
    with pytest.raises(InputError, match="not found"):
        PointSet.from_csv("/nonexistent/points.csv")


def test_validate_outside_and_classes():
    ps = PointSet([[0, 0], [9, 9]], [1, 2])
    ps.validate((10, 10))
    with pytest.raises(InputError, match="outside"):
        PointSet([[0, 0], [10, 3]], [1, 2]).validate((10, 10))
    with pytest.raises(InputError, match="at least 2 classes"):
        PointSet([[0, 0], [1, 1]], [1, 1]).validate((10, 10))
    with pytest.raises(InputError, match="coordinates"):
        ps.validate((4, 10, 10))


def test_from_napari_uses_order_feature_and_drops_unlabelled():
    data = np.array([[5, 5], [1, 1], [2, 2], [3, 3]], float)
    feats = {"label": [1, 2, np.nan, 1], "order": [3, 0, 1, 2]}
    ps = PointSet.from_napari(data, feats)
    assert len(ps) == 3
    # order rank among the labelled points: [1,1] (0), [3,3] (2), [5,5] (3)
    assert ps.coords.tolist() == [[1, 1], [3, 3], [5, 5]]
    assert ps.labels.tolist() == [2, 1, 1]
    assert ps.order.tolist() == [0, 1, 2]


def test_from_napari_3d_keeps_last_axes():
    data = np.array([[0, 4, 5, 6]], float)
    ps = PointSet.from_napari(data, {"label": [1]}, spatial_ndim=3)
    assert ps.coords.tolist() == [[4, 5, 6]]


def test_append_continues_order():
    ps = PointSet([[0, 0]], [1]).append([[1, 1], [2, 2]], [2, 1])
    assert ps.order.tolist() == [0, 1, 2]
    assert ps.labels.tolist() == [1, 2, 1]
