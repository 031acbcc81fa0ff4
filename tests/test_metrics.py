import numpy as np
import pytest

from napari_pointseg.core.metrics import confusion_matrix, segmentation_metrics


def test_metrics_known_values():
    truth = np.array([[1, 1, 2, 2]])
    pred = np.array([[1, 2, 2, 2]])
    cm = confusion_matrix(truth, pred, [1, 2])
    assert cm.tolist() == [[1, 1], [0, 2]]
    m = segmentation_metrics(truth, pred)
    assert m["per_class_iou"] == {"1": 0.5, "2": pytest.approx(2 / 3)}
    assert m["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["pixel_accuracy"] == 0.75


def test_perfect_and_absent_class():
    truth = np.array([0, 0, 3, 3])
    m = segmentation_metrics(truth, truth, labels=[0, 3, 7])
    assert m["miou"] == 1.0 and m["per_class_iou"]["7"] is None
