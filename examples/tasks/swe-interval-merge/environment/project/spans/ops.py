"""Operations on collections of intervals."""

from __future__ import annotations

from collections.abc import Iterable

from spans.interval import Interval


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Merge overlapping intervals.

    The input may be in any order and may contain duplicates. The result is
    sorted by start, and no two intervals in it overlap (closed intervals that
    share an endpoint overlap, so they are merged too).
    """
    ordered = sorted(intervals, key=lambda iv: (iv.start, iv.end))
    merged: list[Interval] = []
    for iv in ordered:
        if merged and iv.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Interval(last.start, max(last.end, iv.end))
        else:
            merged.append(iv)
    return merged


def intersect(left: Iterable[Interval], right: Iterable[Interval]) -> list[Interval]:
    """Points covered by both collections, as merged intervals."""
    a, b = merge(left), merge(right)
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start = max(a[i].start, b[j].start)
        end = min(a[i].end, b[j].end)
        if start <= end:
            out.append(Interval(start, end))
        if a[i].end < b[j].end:
            i += 1
        else:
            j += 1
    return out


def gaps(intervals: Iterable[Interval], within: Interval) -> list[Interval]:
    """The free parts of ``within`` not covered by any interval.

    Gaps are the open stretches between busy intervals, reported with their
    endpoints (the endpoints belong to the neighbouring busy intervals). A
    stretch of zero length is not a gap.
    """
    free: list[Interval] = []
    cursor = within.start
    for iv in merge(intervals):
        if iv.end < within.start or iv.start > within.end:
            continue
        if iv.start > cursor:
            free.append(Interval(cursor, iv.start))
        cursor = max(cursor, iv.end)
    if cursor < within.end:
        free.append(Interval(cursor, within.end))
    return free


def total_length(intervals: Iterable[Interval]) -> float:
    """Total length covered, counting overlapping parts once."""
    return sum(iv.length for iv in merge(intervals))
