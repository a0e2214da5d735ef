"""Render report lines as CSV or a Markdown table."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from salesreport.aggregate import ReportLine


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def to_csv(lines: list[ReportLine], key_name: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([key_name, "orders", "units", "revenue"])
    for line in lines:
        writer.writerow([line.key, line.orders, line.units, _money(line.revenue)])
    writer.writerow(
        [
            "TOTAL",
            sum(x.orders for x in lines),
            sum(x.units for x in lines),
            _money(sum((x.revenue for x in lines), Decimal(0))),
        ]
    )
    return out.getvalue()


def to_markdown(lines: list[ReportLine], key_name: str) -> str:
    rows = [[key_name, "orders", "units", "revenue"]]
    rows += [[x.key, str(x.orders), str(x.units), _money(x.revenue)] for x in lines]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]

    def fmt(row: list[str]) -> str:
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "| " + " | ".join(cells) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(rows[0]), sep] + [fmt(r) for r in rows[1:]]) + "\n"
