"""Histograms as inline SVG strings: the report must load nothing, so no plotting library or script.

Each histogram stacks one series per scaffold in the same bins, so that scaffolds compare at a
glance; every bar carries a ``<title>`` (the browser's own tooltip) with its exact range and count.
Wide positive ranges (latencies from milliseconds to minutes) get logarithmic bins.
"""

from __future__ import annotations

import math
from html import escape

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
W, H, LEFT, RIGHT, TOP, BOTTOM = 520, 250, 46, 12, 44, 44


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def bins(values: list[float], *, integer: bool = False, count: int = 20) -> tuple[list[float], bool]:
    """Bin edges for ``values`` and whether they are logarithmic."""
    lo, hi = min(values), max(values)
    if integer and hi - min(lo, 0) <= 40:  # one bar per value, from 0 and at least five wide
        lo, hi = min(lo, 0), max(hi, min(lo, 0) + 4)
        return [lo - 0.5 + i for i in range(int(hi - lo) + 2)], False
    if lo > 0 and hi / lo >= 100:
        a, b = math.log10(lo), math.log10(hi)
        return [10 ** (a + (b - a) * i / count) for i in range(count + 1)], True
    if hi == lo:
        return [lo - 0.5, hi + 0.5], False
    return [lo + (hi - lo) * i / count for i in range(count + 1)], False


def _label(x: float) -> str:
    if x == 0 or 0.01 <= abs(x) < 10_000:
        return f"{x:.3g}"
    return f"{x:.1e}".replace("e+0", "e").replace("e-0", "e-")


def histogram(title: str, series: dict[str, list[float]], xlabel: str, *, integer: bool = False) -> str:
    """A stacked histogram of ``series`` (name -> values) as an ``<svg>`` element."""
    everything = [v for values in series.values() for v in values if v is not None and math.isfinite(v)]
    head = f'<svg class="plot" viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">'
    head += f'<text x="{W / 2}" y="16" class="title">{escape(title)}</text>'
    if not everything:
        return head + f'<text x="{W / 2}" y="{H / 2}" class="empty">no data</text></svg>'
    edges, log = bins(everything, integer=integer)
    n = len(edges) - 1

    def which(v: float) -> int:
        if log:
            a, b = math.log10(edges[0]), math.log10(edges[-1])
            return min(n - 1, int((math.log10(v) - a) / (b - a) * n))
        return min(n - 1, max(0, int((v - edges[0]) / (edges[-1] - edges[0]) * n)))

    counts = {name: [0] * n for name in series}
    for name, values in series.items():
        for v in values:
            if v is not None and math.isfinite(v):
                counts[name][which(v)] += 1
    peak = max(sum(c[i] for c in counts.values()) for i in range(n))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    bw = pw / n
    out = [head, f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" class="axis"/>']
    for tick in sorted({0, peak // 2, peak}):
        y = TOP + ph - ph * tick / peak
        out.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" class="ytick">{tick}</text>')
    for i in range(n):
        base = 0
        for s, name in enumerate(series):
            c = counts[name][i]
            if not c:
                continue
            y, h = TOP + ph - ph * (base + c) / peak, ph * c / peak
            tip = f"{name}: {c} in [{_label(edges[i])}, {_label(edges[i + 1])})"
            out.append(f'<rect x="{LEFT + i * bw + 0.5:.1f}" y="{y:.1f}" width="{max(bw - 1, 1):.1f}" '
                       f'height="{h:.1f}" fill="{color(s)}"><title>{escape(tip)}</title></rect>')  # fmt: skip
            base += c
    step = max(1, n // 5)
    for i in range(0, n + 1, step):
        x = LEFT + i * bw
        value = edges[i] + (0.5 if integer and not log else 0)
        if integer and not log and i == n:
            continue
        label = _label(value)
        out.append(f'<text x="{x + (bw / 2 if integer and not log else 0):.1f}" y="{TOP + ph + 14}" '
                   f'class="xtick">{escape(label)}</text>')  # fmt: skip
    scale = " (log scale)" if log else ""
    out.append(f'<text x="{LEFT + pw / 2}" y="{H - 8}" class="xlabel">{escape(xlabel + scale)}</text>')
    x = LEFT
    for s, name in enumerate(series):  # one line under the title, left to right
        out.append(f'<rect x="{x}" y="{TOP - 14}" width="10" height="10" fill="{color(s)}"/>'
                   f'<text x="{x + 14}" y="{TOP - 5}" class="legend">{escape(name)}</text>')  # fmt: skip
        x += 24 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)
