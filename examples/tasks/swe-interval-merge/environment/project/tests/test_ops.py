from spans import Interval, gaps, intersect, merge, total_length


def test_merge_empty():
    assert merge([]) == []


def test_merge_overlapping_unsorted():
    got = merge([Interval(8, 9), Interval(2, 6), Interval(1, 3)])
    assert got == [Interval(1, 6), Interval(8, 9)]


def test_merge_contained_and_duplicates():
    got = merge([Interval(1, 10), Interval(2, 3), Interval(2, 3), Interval(4, 9)])
    assert got == [Interval(1, 10)]


def test_intersect_disjoint():
    assert intersect([Interval(0, 1)], [Interval(2, 3)]) == []


def test_gaps_within_window():
    got = gaps([Interval(1, 3), Interval(5, 6)], within=Interval(0, 10))
    assert got == [Interval(0, 1), Interval(3, 5), Interval(6, 10)]


def test_gaps_ignores_intervals_outside_window():
    got = gaps([Interval(-5, -1), Interval(2, 4), Interval(20, 30)], within=Interval(0, 10))
    assert got == [Interval(0, 2), Interval(4, 10)]


def test_total_length_counts_overlap_once():
    assert total_length([Interval(0, 4), Interval(2, 6), Interval(10, 11)]) == 7
