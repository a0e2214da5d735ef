#!/bin/bash
# Reference solution: write /workspace/solution.py.
set -euo pipefail
cat > /workspace/solution.py <<'PY'
import re
import sys
from collections import Counter


def main():
    first, _, text = sys.stdin.read().partition("\n")
    k = int(first.strip())
    words = [w.strip("'") for w in re.findall(r"[A-Za-z']+", text)]
    counts = Counter(w.lower() for w in words if w)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:k]
    if not ranked:
        print("(none)")
    for word, count in ranked:
        print(f"{word} {count}")


if __name__ == "__main__":
    main()
PY
