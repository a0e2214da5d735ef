"""The Interval value type."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real


@dataclass(frozen=True, order=True)
class Interval:
    """A closed interval ``[start, end]`` with ``start <= end``.

    A zero-length interval (``start == end``) is a single point and is valid.
    """

    start: Real
    end: Real

    def __post_init__(self) -> None:
        if self.start > self.end:
            raise ValueError(f"interval start {self.start!r} is after its end {self.end!r}")

    @property
    def length(self) -> Real:
        return self.end - self.start

    def overlaps(self, other: Interval) -> bool:
        """True when the two closed intervals share at least one point."""
        return self.start <= other.end and other.start <= self.end

    def contains(self, point: Real) -> bool:
        return self.start <= point <= self.end

    def __repr__(self) -> str:
        return f"Interval({self.start!r}, {self.end!r})"
