from spans import Interval, gaps, intersect, merge, total_length


def test_merge_empty():
    assert merge([]) == []


def test_merge_overlapping_unsorted():
    got = merge([Interval(8, 9), Interval(2, 6), Interval(1, 3)])
    assert got == [Interval(1, 6), Interval(8, 9)]


def test_merge_contained_and_duplicates():
    got = merge([Interval(1, 10), Interval(2, 3), Interval(2, 3), Interval(4, 9)])
    assert got == [Interval(1, 10)]


def test_merge_touching_intervals():
    assert merge([Interval(1, 3), Interval(3, 5)]) == [Interval(1, 5)]


def test_merge_chain_of_touching_intervals():
    got = merge([Interval(4, 6), Interval(0, 2), Interval(2, 4), Interval(7, 8)])
    assert got == [Interval(0, 6), Interval(7, 8)]


def test_merge_absorbs_point_at_end():
    assert merge([Interval(1, 3), Interval(3, 3)]) == [Interval(1, 3)]


def test_intersect_touching_result_is_merged():
    busy = [Interval(0, 3), Interval(3, 6)]
    assert intersect(busy, [Interval(2, 4)]) == [Interval(2, 4)]


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
