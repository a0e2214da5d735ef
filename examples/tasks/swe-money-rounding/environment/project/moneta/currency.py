"""ISO 4217 currencies known to moneta."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True)
class Currency:
    code: str
    exponent: int  # digits after the decimal point of the minor unit
    symbol: str

    @property
    def quantum(self) -> Decimal:
        """The minor unit as a Decimal exponent, e.g. Decimal('0.01') for USD."""
        return Decimal(1).scaleb(-self.exponent)


_CURRENCIES = {
    c.code: c
    for c in (
        Currency("USD", 2, "$"),
        Currency("EUR", 2, "€"),
        Currency("GBP", 2, "£"),
        Currency("JPY", 0, "¥"),
        Currency("BHD", 3, "BD"),
    )
}


def get_currency(code: str) -> Currency:
    try:
        return _CURRENCIES[code.upper()]
    except KeyError:
        known = ", ".join(sorted(_CURRENCIES))
        raise ValueError(f"unknown currency {code!r}; known: {known}") from None
