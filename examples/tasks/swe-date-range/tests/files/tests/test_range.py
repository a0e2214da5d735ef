from datetime import date

import pytest
from daterange import DateRange

D = date


def test_parse_and_length():
    rng = DateRange.parse("2024-01-05..2024-02-01")
    assert (rng.start, rng.end, len(rng)) == (D(2024, 1, 5), D(2024, 2, 1), 28)
    assert len(DateRange.parse("2024-03-01")) == 1


def test_parse_error_is_clear():
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        DateRange.parse("2024-13-01..2024-12-31")


def test_days_are_inclusive_and_stepped():
    rng = DateRange(D(2024, 2, 27), D(2024, 3, 2))
    assert list(rng.days()) == [D(2024, 2, 27), D(2024, 2, 28), D(2024, 2, 29), D(2024, 3, 1), D(2024, 3, 2)]
    assert list(rng.days(step=2)) == [D(2024, 2, 27), D(2024, 2, 29), D(2024, 3, 2)]


def test_reversed_range_is_empty():
    rng = DateRange(D(2024, 5, 2), D(2024, 5, 1))
    assert len(rng) == 0 and list(rng.days()) == [] and list(rng.months()) == []


def test_months_on_a_short_day():
    rng = DateRange(D(2023, 11, 15), D(2024, 2, 20))
    assert list(rng.months()) == [D(2023, 11, 15), D(2023, 12, 15), D(2024, 1, 15), D(2024, 2, 15)]


def test_months_from_the_31st_clamp_and_recover():
    rng = DateRange(D(2024, 1, 31), D(2024, 5, 31))
    assert list(rng.months()) == [
        D(2024, 1, 31),
        D(2024, 2, 29),
        D(2024, 3, 31),
        D(2024, 4, 30),
        D(2024, 5, 31),
    ]


def test_months_from_the_30th_in_a_common_year():
    rng = DateRange(D(2023, 1, 30), D(2023, 3, 30))
    assert list(rng.months()) == [D(2023, 1, 30), D(2023, 2, 28), D(2023, 3, 30)]
