from decimal import Decimal

import pytest
from salesreport import ReportLine, totals_by
from salesreport.render import to_csv, to_markdown

LINES = [
    ReportLine("east", 2, 22, Decimal("238.00")),
    ReportLine("north", 3, 17, Decimal("139.00")),
    ReportLine("south", 3, 15, Decimal("75.5")),
]


def test_unknown_key_is_rejected(sales):
    with pytest.raises(ValueError, match="cannot group by"):
        totals_by(sales, "colour")


def test_totals_can_accumulate_explicitly(sales):
    totals = totals_by(sales[:2], "product", {})
    totals_by(sales[2:3], "product", totals)
    assert totals == {"widget": [2, 14, Decimal("35.00")], "gadget": [1, 1, Decimal("99.00")]}


def test_csv_rendering_has_total():
    text = to_csv(LINES, "region")
    assert text.splitlines() == [
        "region,orders,units,revenue",
        "east,2,22,238.00",
        "north,3,17,139.00",
        "south,3,15,75.50",
        "TOTAL,8,54,452.50",
    ]


def test_markdown_rendering_aligns_columns():
    text = to_markdown(LINES[:2], "region")
    assert text.splitlines()[0] == "| region | orders | units | revenue |"
    assert text.splitlines()[2] == "| east   |      2 |    22 |  238.00 |"
