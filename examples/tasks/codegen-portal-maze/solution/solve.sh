#!/bin/bash
# Reference solution: write /workspace/solution.py.
set -euo pipefail
cat > /workspace/solution.py <<'PY'
import sys
from collections import deque


def main():
    data = sys.stdin.read().split("\n")
    rows, cols = map(int, data[0].split())
    grid = [data[1 + r][:cols] for r in range(rows)]
    portals = {}
    start = end = None
    for r, line in enumerate(grid):
        for c, ch in enumerate(line):
            if ch == "S":
                start = (r, c)
            elif ch == "E":
                end = (r, c)
            elif "a" <= ch <= "z":
                portals.setdefault(ch, []).append((r, c))
    twin = {}
    for cells in portals.values():
        if len(cells) == 2:
            twin[cells[0]], twin[cells[1]] = cells[1], cells[0]
    dist = {start: 0}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == end:
            print(dist[cell])
            return
        r, c = cell
        nexts = [(r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)]
        if cell in twin:
            nexts.append(twin[cell])
        for nr, nc in nexts:
            if 0 <= nr < rows and 0 <= nc < cols and grid[nr][nc] != "#" and (nr, nc) not in dist:
                dist[(nr, nc)] = dist[cell] + 1
                queue.append((nr, nc))
    print(-1)


if __name__ == "__main__":
    main()
PY
