import io
from decimal import Decimal

import pytest
from salesreport import SaleFormatError, read_sales


def test_reads_typed_rows(sample_path):
    with open(sample_path, newline="") as fp:
        sales = read_sales(fp)
    assert len(sales) == 8
    assert sales[0].units == 10 and sales[0].unit_price == Decimal("2.50")
    assert sales[2].revenue == Decimal("99.00")


def test_missing_column_is_reported():
    with pytest.raises(SaleFormatError, match="unit_price"):
        read_sales(io.StringIO("date,region,product,units\n"))


def test_bad_number_names_the_line():
    text = "date,region,product,units,unit_price\n2024-01-01,n,w,ten,1\n"
    with pytest.raises(SaleFormatError, match=":2:"):
        read_sales(io.StringIO(text), "x.csv")
