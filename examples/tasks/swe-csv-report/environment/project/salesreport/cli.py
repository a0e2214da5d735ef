"""Command line: salesreport FILE... [--by KEY] [--format csv|markdown]."""

from __future__ import annotations

import argparse
import sys

from salesreport.aggregate import KEYS, build_report
from salesreport.reader import SaleFormatError, read_sales
from salesreport.render import to_csv, to_markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="salesreport")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--by", choices=KEYS, default="region")
    parser.add_argument("--format", choices=("csv", "markdown"), default="csv")
    args = parser.parse_args(argv)
    sales = []
    try:
        for path in args.files:
            with open(path, newline="") as fp:
                sales.extend(read_sales(fp, path))
    except (OSError, SaleFormatError) as exc:
        print(f"salesreport: {exc}", file=sys.stderr)
        return 2
    lines = build_report(sales, by=args.by)
    render = to_csv if args.format == "csv" else to_markdown
    sys.stdout.write(render(lines, args.by))
    return 0
