"""Closed numeric intervals."""

from spans.interval import Interval
from spans.ops import gaps, intersect, merge, total_length

__all__ = ["Interval", "gaps", "intersect", "merge", "total_length"]
