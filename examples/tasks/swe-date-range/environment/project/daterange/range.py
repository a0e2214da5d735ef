"""The DateRange type."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from daterange.months import add_months


@dataclass(frozen=True)
class DateRange:
    """All dates from ``start`` to ``end``, both included. Empty when ``end < start``."""

    start: date
    end: date

    @classmethod
    def parse(cls, text: str) -> DateRange:
        """Parse ``YYYY-MM-DD..YYYY-MM-DD`` (a single date means a one-day range)."""
        first, sep, last = text.strip().partition("..")
        try:
            start = date.fromisoformat(first.strip())
            end = date.fromisoformat(last.strip()) if sep else start
        except ValueError:
            raise ValueError(f"expected YYYY-MM-DD..YYYY-MM-DD, got {text!r}") from None
        return cls(start, end)

    def __len__(self) -> int:
        return max(0, (self.end - self.start).days + 1)

    def __contains__(self, d: date) -> bool:
        return self.start <= d <= self.end

    def days(self, step: int = 1) -> Iterator[date]:
        if step < 1:
            raise ValueError("step must be at least 1")
        current = self.start
        while current <= self.end:
            yield current
            current += timedelta(days=step)

    def weeks(self) -> Iterator[date]:
        return self.days(step=7)

    def months(self) -> Iterator[date]:
        """One date per month on the start's day of month (clamped to short months)."""
        n = 0
        current = self.start
        while current <= self.end:
            yield current
            n += 1
            current = add_months(self.start, n)
