import pytest

from napari_pointseg.core.errors import InputError
from napari_pointseg.core.schedule import admission_order, plan, step_sizes


def test_correct_order_admits_prefixes_in_acquisition_order():
    steps = plan(5, "correct", points_per_step=2, iters_per_step=3)
    assert [s.active.tolist() for s in steps] == [[0, 1], [0, 1, 2, 3], [0, 1, 2, 3, 4]]
    assert [s.iters for s in steps] == [3, 3, 3]


def test_reverse_order_admits_last_acquired_first():
    steps = plan(4, "reverse", points_per_step=1, iters_per_step=2)
    assert [s.active.tolist() for s in steps] == [[3], [3, 2], [3, 2, 1], [3, 2, 1, 0]]


def test_random_order_is_seeded_permutation():
    a = plan(10, "random", points_per_step=3, seed=1)
    b = plan(10, "random", points_per_step=3, seed=1)
    assert [s.active.tolist() for s in a] == [s.active.tolist() for s in b]
    assert sorted(a[-1].active.tolist()) == list(range(10))
    assert a[-1].active.tolist() != list(range(10))


def test_entire_is_one_step_with_same_total_iterations():
    stepped = plan(10, "correct", points_per_step=3, iters_per_step=4)
    entire = plan(10, "entire", points_per_step=3, iters_per_step=4)
    assert len(entire) == 1
    assert entire[0].active.tolist() == list(range(10))
    assert entire[0].iters == sum(s.iters for s in stepped) == 16


def test_growing_steps():
    sizes = step_sizes(100, points_per_step=1, step_growth=0.5)
    assert sum(sizes) == 100
    assert sizes[:3] == [1, 1, 1] and sizes[-2] > sizes[2]


def test_unknown_order():
    with pytest.raises(InputError, match="unknown order"):
        admission_order(3, "sideways")
