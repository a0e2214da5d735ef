"""Month arithmetic."""

from __future__ import annotations

import calendar
from datetime import date


def month_end(d: date) -> date:
    """The last day of ``d``'s month."""
    return d.replace(day=calendar.monthrange(d.year, d.month)[1])


def add_months(d: date, months: int) -> date:
    """``d`` moved by ``months`` calendar months (negative moves back).

    The day of month is kept; if the target month is shorter, the result is
    that month's last day (Jan 31 + 1 month = Feb 28 or 29).
    """
    index = d.year * 12 + (d.month - 1) + months
    year, month = divmod(index, 12)
    if not 1 <= year <= 9999:
        raise OverflowError(f"{d} + {months} months is out of range")
    return d.replace(year=year, month=month + 1)
