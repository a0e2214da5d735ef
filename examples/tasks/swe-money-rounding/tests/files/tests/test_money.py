from decimal import Decimal

import pytest
from moneta import CurrencyMismatch, Money


def test_amount_is_exact_decimal():
    assert Money("19.99", "USD").amount == Decimal("19.99")
    assert Money(5, "usd").amount == Decimal("5.00")


def test_floats_are_rejected():
    with pytest.raises(TypeError):
        Money(0.1, "USD")


def test_add_and_multiply():
    assert Money("19.99", "USD") * 3 == Money("59.97", "USD")
    assert Money("1.10", "EUR") + Money("2.20", "EUR") == Money("3.30", "EUR")


def test_currency_mismatch():
    with pytest.raises(CurrencyMismatch):
        Money("1", "USD") + Money("1", "EUR")


def test_rounding_above_half():
    assert Money("2.676", "USD").amount == Decimal("2.68")
    assert Money("2.674", "USD").amount == Decimal("2.67")


def test_half_with_odd_digit_rounds_up():
    assert Money("2.675", "USD").amount == Decimal("2.68")


def test_half_cent_rounds_away_from_zero():
    assert Money("2.665", "USD").amount == Decimal("2.67")
    assert Money("0.125", "EUR").amount == Decimal("0.13")


def test_negative_half_rounds_away_from_zero():
    assert Money("-2.665", "USD").amount == Decimal("-2.67")


def test_currency_exponents_round_halves_up():
    assert Money("2.5", "JPY").amount == Decimal("3")
    assert Money("1.0005", "BHD").amount == Decimal("1.001")


def test_vat_on_invoice_line():
    # 0.45 * 1.19 = 0.5355 -> 0.54; 0.05 * 0.5 = 0.025 is an exact half -> 0.03
    assert Money("0.45", "EUR") * "1.19" == Money("0.54", "EUR")
    assert Money("0.05", "EUR") * "0.5" == Money("0.03", "EUR")


def test_format():
    assert Money("-1234.5", "USD").format() == "-$1,234.50"
