import pytest
from moneta import Money, allocate


def test_allocate_even_split_keeps_every_cent():
    shares = allocate(Money("100", "USD"), [1, 1, 1])
    assert shares == [Money("33.34", "USD"), Money("33.33", "USD"), Money("33.33", "USD")]


def test_allocate_by_ratio():
    shares = allocate(Money("10", "EUR"), [70, 20, 10])
    assert shares == [Money("7", "EUR"), Money("2", "EUR"), Money("1", "EUR")]


def test_allocate_yen_has_no_fractions():
    shares = allocate(Money("1000", "JPY"), [1, 2])
    assert shares == [Money("334", "JPY"), Money("666", "JPY")]


def test_allocate_rejects_zero_ratios():
    with pytest.raises(ValueError):
        allocate(Money("1", "USD"), [0, 0])
