"""Inclusive date ranges."""

from daterange.months import add_months, month_end
from daterange.range import DateRange

__all__ = ["DateRange", "add_months", "month_end"]
