#!/bin/bash
# Reference solution: write /workspace/solution.py.
set -euo pipefail
cat > /workspace/solution.py <<'PY'
import sys

VALUES = [(1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
          (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")]


def to_roman(n):
    out = []
    for value, letters in VALUES:
        while n >= value:
            out.append(letters)
            n -= value
    return "".join(out)


def from_roman(text):
    total, i = 0, 0
    for value, letters in VALUES:
        while text.startswith(letters, i):
            total += value
            i += len(letters)
    if i != len(text) or not 1 <= total <= 3999 or to_roman(total) != text:
        return None
    return total


def convert(line):
    if line.isascii() and line.isdigit():
        n = int(line)
        return to_roman(n) if 1 <= n <= 3999 else "INVALID"
    value = from_roman(line) if line else None
    return "INVALID" if value is None else str(value)


def main():
    for raw in sys.stdin.read().splitlines():
        line = raw.strip()
        if line:
            print(convert(line))


if __name__ == "__main__":
    main()
PY
