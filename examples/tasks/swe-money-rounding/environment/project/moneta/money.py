"""The Money value type."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from moneta.currency import Currency, get_currency

Number = int | str | Decimal


class CurrencyMismatch(TypeError):
    pass


def _to_decimal(value: Number) -> Decimal:
    if isinstance(value, float):
        raise TypeError("floats are not exact; pass a str, int or Decimal")
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None


def _round(amount: Decimal, currency: Currency) -> Decimal:
    """Round ``amount`` to the currency's minor unit (commercial rounding)."""
    return amount.quantize(currency.quantum)


class Money:
    """An amount in one currency, always rounded to the currency's minor unit."""

    __slots__ = ("amount", "currency")

    def __init__(self, amount: Number, currency: str | Currency) -> None:
        cur = currency if isinstance(currency, Currency) else get_currency(currency)
        object.__setattr__(self, "currency", cur)
        object.__setattr__(self, "amount", _round(_to_decimal(amount), cur))

    def __setattr__(self, name, value):
        raise AttributeError("Money is immutable")

    @classmethod
    def from_minor(cls, units: int, currency: str | Currency) -> Money:
        cur = currency if isinstance(currency, Currency) else get_currency(currency)
        return cls(Decimal(units).scaleb(-cur.exponent), cur)

    @property
    def minor_units(self) -> int:
        return int(self.amount.scaleb(self.currency.exponent))

    def _check(self, other: object) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency.code} and {other.currency.code}")
        return other

    def __add__(self, other: Money) -> Money:
        other = self._check(other)
        if other is NotImplemented:
            return NotImplemented
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        other = self._check(other)
        if other is NotImplemented:
            return NotImplemented
        return Money(self.amount - other.amount, self.currency)

    def __mul__(self, factor: Number) -> Money:
        return Money(self.amount * _to_decimal(factor), self.currency)

    __rmul__ = __mul__

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        return self.currency == other.currency and self.amount == other.amount

    def __hash__(self) -> int:
        return hash((self.amount, self.currency.code))

    def __lt__(self, other: Money) -> bool:
        other = self._check(other)
        if other is NotImplemented:
            return NotImplemented
        return self.amount < other.amount

    def __repr__(self) -> str:
        return f"Money({str(self.amount)!r}, {self.currency.code!r})"

    def format(self) -> str:
        sign = "-" if self.amount < 0 else ""
        return f"{sign}{self.currency.symbol}{abs(self.amount):,}"
