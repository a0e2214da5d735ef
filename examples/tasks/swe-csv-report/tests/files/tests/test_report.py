from decimal import Decimal

import pytest
from salesreport import ReportLine, build_report, totals_by
from salesreport.cli import main
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


def test_build_report_is_repeatable(sales):
    first = build_report(sales, by="product")
    assert build_report(sales, by="product") == first
    assert build_report(sales, by="region") == [
        ReportLine("east", 2, 22, Decimal("238.00")),
        ReportLine("north", 3, 17, Decimal("139.00")),
        ReportLine("south", 3, 15, Decimal("75.00")),
    ]


def test_separate_reports_do_not_share_totals(sales):
    north = [s for s in sales if s.region == "north"]
    south = [s for s in sales if s.region == "south"]
    build_report(north, by="product")
    assert build_report(south, by="product") == [
        ReportLine("gizmo", 1, 3, Decimal("45.00")),
        ReportLine("widget", 2, 12, Decimal("30.00")),
    ]


def test_totals_by_starts_empty_each_call(sales):
    assert totals_by(sales[:1], "region") == {"north": [1, 10, Decimal("25.00")]}
    assert totals_by(sales[:1], "region") == {"north": [1, 10, Decimal("25.00")]}


def test_cli_twice_in_one_process(sample_path, capsys):
    assert main([sample_path, "--by", "region"]) == 0
    first = capsys.readouterr().out
    assert first.splitlines()[-1] == "TOTAL,8,54,452.00"
    assert main([sample_path, "--by", "region"]) == 0
    assert capsys.readouterr().out == first
