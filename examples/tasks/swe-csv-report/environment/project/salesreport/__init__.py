"""Sales CSV summaries."""

from salesreport.aggregate import ReportLine, build_report, totals_by
from salesreport.reader import Sale, SaleFormatError, read_sales

__all__ = ["ReportLine", "Sale", "SaleFormatError", "build_report", "read_sales", "totals_by"]
