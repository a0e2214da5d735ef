"""Read sales rows from CSV."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TextIO

REQUIRED = ("date", "region", "product", "units", "unit_price")


class SaleFormatError(ValueError):
    pass


@dataclass(frozen=True)
class Sale:
    date: str
    region: str
    product: str
    units: int
    unit_price: Decimal

    @property
    def revenue(self) -> Decimal:
        return self.unit_price * self.units


def parse_rows(rows: Iterable[dict], source: str = "<rows>") -> list[Sale]:
    sales = []
    for lineno, row in enumerate(rows, start=2):
        try:
            units = int(row["units"])
            price = Decimal(row["unit_price"])
        except (ValueError, InvalidOperation):
            raise SaleFormatError(f"{source}:{lineno}: bad number in {row!r}") from None
        if units < 0:
            raise SaleFormatError(f"{source}:{lineno}: negative units")
        sales.append(Sale(row["date"].strip(), row["region"].strip(), row["product"].strip(), units, price))
    return sales


def read_sales(fp: TextIO, source: str = "<csv>") -> list[Sale]:
    """Parse a CSV export with a header line."""
    reader = csv.DictReader(fp)
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise SaleFormatError(f"{source}: missing columns {', '.join(missing)}")
    return parse_rows(reader, source)
