"""Group sales and total them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from salesreport.reader import Sale

KEYS = ("region", "product", "date")


@dataclass(frozen=True)
class ReportLine:
    key: str
    orders: int
    units: int
    revenue: Decimal


def totals_by(sales: Iterable[Sale], key: str, totals: dict[str, list] = {}) -> dict[str, list]:
    """Accumulate ``[orders, units, revenue]`` per value of ``key``.

    Pass ``totals`` to keep adding to an existing mapping (used when a report is
    built from several files); by default a new mapping is started.
    """
    if key not in KEYS:
        raise ValueError(f"cannot group by {key!r}; choose one of {', '.join(KEYS)}")
    for sale in sales:
        entry = totals.setdefault(getattr(sale, key), [0, 0, Decimal(0)])
        entry[0] += 1
        entry[1] += sale.units
        entry[2] += sale.revenue
    return totals


def build_report(sales: Iterable[Sale], by: str = "region") -> list[ReportLine]:
    """One line per group, highest revenue first (ties by key)."""
    totals = totals_by(sales, by)
    lines = [ReportLine(k, o, u, r) for k, (o, u, r) in totals.items()]
    return sorted(lines, key=lambda line: (-line.revenue, line.key))
