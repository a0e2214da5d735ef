"""Check /workspace/report.csv against the report computed from the (unchanged) access log."""

import hashlib
import re
import sys
from collections import defaultdict

LOG = "/workspace/logs/access.log"
REPORT = "/workspace/report.csv"
LOG_SHA256 = sys.argv[1]
LINE = re.compile(r'^\S+ - - \[[^\]]+\] "([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3}) (\d+|-) (\d+\.\d+)$')


def expected():
    stats = defaultdict(lambda: [0, 0, 0.0])
    for line in open(LOG).read().splitlines():
        m = LINE.match(line)
        if not m:
            continue
        target, status, secs = m.group(2), int(m.group(3)), float(m.group(5))
        path = "/".join("{id}" if seg.isdigit() else seg for seg in target.split("?", 1)[0].split("/"))
        entry = stats[path]
        entry[0] += 1
        entry[1] += 500 <= status <= 599
        entry[2] += secs * 1000
    rows = [(p, n, e, total / n) for p, (n, e, total) in stats.items()]
    return sorted(rows, key=lambda r: (-r[1], r[0].encode()))


def main():
    if hashlib.sha256(open(LOG, "rb").read()).hexdigest() != LOG_SHA256:
        return "the access log was modified"
    try:
        lines = open(REPORT).read().splitlines()
    except OSError as exc:
        return f"cannot read {REPORT}: {exc}"
    want = expected()
    if not lines or lines[0] != "path,requests,errors,avg_ms":
        return f"bad header: {lines[:1]}"
    body = [line for line in lines[1:] if line.strip()]
    if len(body) != len(want):
        return f"expected {len(want)} rows, got {len(body)}"
    for i, (line, (path, n, e, avg)) in enumerate(zip(body, want, strict=False), start=2):
        fields = line.split(",")
        if len(fields) != 4:
            return f"line {i}: expected 4 fields: {line!r}"
        if fields[0] != path or fields[1] != str(n) or fields[2] != str(e):
            return f"line {i}: expected {path},{n},{e},{avg:.1f}, got {line!r}"
        if not re.fullmatch(r"\d+\.\d", fields[3]) or abs(float(fields[3]) - avg) > 0.051:
            return f"line {i}: avg_ms {fields[3]!r}, expected {avg:.1f}"
    return None


if __name__ == "__main__":
    problem = main()
    print(problem or "report.csv is correct")
    sys.exit(1 if problem else 0)
