"""Exact money amounts."""

from moneta.allocate import allocate
from moneta.currency import Currency, get_currency
from moneta.money import CurrencyMismatch, Money

__all__ = ["Currency", "CurrencyMismatch", "Money", "allocate", "get_currency"]
