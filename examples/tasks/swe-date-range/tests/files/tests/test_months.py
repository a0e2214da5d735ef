from datetime import date

import pytest
from daterange import add_months, month_end

D = date


def test_month_end():
    assert month_end(D(2024, 2, 10)) == D(2024, 2, 29)
    assert month_end(D(2023, 2, 10)) == D(2023, 2, 28)
    assert month_end(D(2023, 12, 1)) == D(2023, 12, 31)


def test_add_months_across_year_boundaries():
    assert add_months(D(2023, 11, 15), 3) == D(2024, 2, 15)
    assert add_months(D(2024, 1, 15), -2) == D(2023, 11, 15)
    assert add_months(D(2024, 6, 1), 0) == D(2024, 6, 1)


def test_add_months_out_of_range():
    with pytest.raises(OverflowError):
        add_months(D(9999, 12, 1), 1)


def test_add_months_clamps_to_month_end():
    assert add_months(D(2024, 1, 31), 1) == D(2024, 2, 29)
    assert add_months(D(2023, 1, 31), 1) == D(2023, 2, 28)
    assert add_months(D(2024, 5, 31), 1) == D(2024, 6, 30)


def test_add_months_backwards_clamps():
    assert add_months(D(2024, 3, 31), -1) == D(2024, 2, 29)
    assert add_months(D(2024, 12, 31), -10) == D(2024, 2, 29)
