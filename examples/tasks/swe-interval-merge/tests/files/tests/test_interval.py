import pytest
from spans import Interval


def test_rejects_reversed_interval():
    with pytest.raises(ValueError):
        Interval(5, 1)


def test_point_interval_is_valid():
    assert Interval(2, 2).length == 0


def test_overlaps_is_symmetric_and_closed():
    a, b = Interval(1, 3), Interval(3, 7)
    assert a.overlaps(b) and b.overlaps(a)
    assert not Interval(1, 2).overlaps(Interval(2.5, 4))


def test_contains_endpoints():
    iv = Interval(1, 4)
    assert iv.contains(1) and iv.contains(4) and not iv.contains(4.01)
