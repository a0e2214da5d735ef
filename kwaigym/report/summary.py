"""The report's numbers, rendered as static HTML tables (readable even with scripts off).

"Passed" means what ``kwaigym eval`` prints: a valid reward of at least 1. Pass rates and mean
rewards count only episodes whose reward is valid (``infra_error`` and ``verifier_error`` episodes
say nothing about the policy); the failure classes are counted over all episodes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from html import escape
from statistics import mean, median
from typing import Any

from kwaigym.episode import STATUSES


def passed(r: dict[str, Any]) -> bool:
    return bool(r.get("reward_valid")) and (r.get("reward") or 0) >= 1.0


def tokens(r: dict[str, Any]) -> tuple[int, int]:
    """Input and output tokens of an episode: the sums over its calls' usage."""
    usages = [c.get("usage") or {} for c in r.get("calls") or ()]
    return sum(u.get("input_tokens") or 0 for u in usages), sum(u.get("output_tokens") or 0 for u in usages)


def rate(records: list[dict[str, Any]]) -> str:
    """``"75.0% (3/4)"`` over the episodes with a valid reward, or an em dash when none has one."""
    valid = [r for r in records if r.get("reward_valid")]
    if not valid:
        return "—"
    won = sum(passed(r) for r in valid)
    return f"{100 * won / len(valid):.1f}% ({won}/{len(valid)})"


def _mean(values: Iterable[float | None], fmt: str = ".3f") -> str:
    values = [v for v in values if v is not None]
    return format(mean(values), fmt) if values else "—"


class Cell(str):
    """A ``<td>`` already built as HTML (its text escaped), which ``_table`` inserts as is."""


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table; every cell is escaped here, except a :class:`Cell`."""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(c if isinstance(c, Cell) else f"<td>{escape(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _cell(records: list[dict[str, Any]]) -> Cell:
    """A matrix cell: mean valid reward and passes, shaded red (0) to green (1); grey when not scored."""
    if not records:
        return Cell('<td class="none">·</td>')
    valid = [r for r in records if r.get("reward_valid")]
    statuses = Counter(r["status"] for r in records)
    tip = escape(", ".join(f"{s} {n}" for s, n in statuses.items()), quote=True)
    if not valid:
        return Cell(f'<td class="invalid" title="{tip}">invalid ({len(records)})</td>')
    reward = mean(r.get("reward") or 0 for r in valid)
    hue = 120 * max(0.0, min(1.0, reward))
    text = f"{reward:.2f} ({sum(passed(r) for r in valid)}/{len(valid)})"
    if len(valid) < len(records):
        text += f" +{len(records) - len(valid)} invalid"
    return Cell(f'<td style="background:hsl({hue:.0f},60%,85%)" title="{tip}">{escape(text)}</td>')


def summary_html(records: list[dict[str, Any]]) -> str:
    """Overall numbers, the per-scaffold table, the failure classes and the task x scaffold matrix."""
    if not records:
        return "<p>No episodes in this run.</p>"
    statuses = Counter(r["status"] for r in records)
    valid = [r for r in records if r.get("reward_valid")]
    t_in, t_out = (sum(x) for x in zip(*(tokens(r) for r in records), strict=True))
    overall = [
        ("episodes", str(len(records))),
        ("pass rate (valid rewards)", rate(records)),
        ("mean reward (valid only)", _mean(r.get("reward") for r in valid)),
        ("mean turns", _mean((r.get("turns") for r in records), ".2f")),
        ("truncated", str(sum(bool(r.get("truncated")) for r in records))),
        ("model calls", str(sum(len(r.get("calls") or ()) for r in records))),
        ("tokens in / out", f"{t_in} / {t_out}"),
        ("median episode time", f"{median(r.get('duration_s') or 0 for r in records):.1f} s"),
    ]
    stats = "".join(f'<div class="stat"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for k, v in overall)

    by_scaffold: dict[str, list] = defaultdict(list)
    by_task: dict[str, list] = defaultdict(list)
    for r in records:
        by_scaffold[r["scaffold"]].append(r)
        by_task[r["task_id"]].append(r)
    classes = [s for s in STATUSES if s in statuses] + sorted(set(statuses) - set(STATUSES))
    scaffold_rows = [
        [name, str(len(rs)), rate(rs), _mean(r.get("reward") for r in rs if r.get("reward_valid")),
         _mean((r.get("turns") for r in rs), ".2f"), _mean((r.get("duration_s") for r in rs), ".1f"),
         *(str(sum(r["status"] == s for r in rs)) for s in classes)]
        for name, rs in sorted(by_scaffold.items())
    ]  # fmt: skip
    scaffold_table = _table(
        ["scaffold", "episodes", "pass rate", "mean reward", "mean turns", "mean time (s)", *classes],
        scaffold_rows, "numbers",
    )  # fmt: skip
    every_class = [*STATUSES, *(s for s in classes if s not in STATUSES)]
    failures = _table(["failure class", "episodes"], [[s, str(statuses[s])] for s in every_class], "numbers")
    scaffolds = sorted(by_scaffold)
    matrix_rows = [
        [task, *(_cell([r for r in rs if r["scaffold"] == s]) for s in scaffolds), rate(rs)]
        for task, rs in sorted(by_task.items())
    ]
    matrix = _table(["task", *scaffolds, "pass rate"], matrix_rows, "matrix")
    return (
        f'<div class="stats">{stats}</div>'
        f'<div class="row"><div><h3>Per scaffold</h3>{scaffold_table}</div>'
        f"<div><h3>Failure classes</h3>{failures}</div></div>"
        f"<h3>Task × scaffold (mean valid reward, passed/scored)</h3>{matrix}"
    )


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def latency_html(records: list[dict[str, Any]]) -> str:
    """Call latency quantiles per scaffold and call kind (main, sub-agent, auxiliary)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        for c in r.get("calls") or ():
            if c.get("total_s") is not None:
                groups[(r["scaffold"], c.get("kind") or "main")].append(c)
    rows = []
    for (scaffold, kind), calls in sorted(groups.items()):
        total = [c["total_s"] for c in calls]
        ttfb = [c["ttfb_s"] for c in calls if c.get("ttfb_s") is not None]
        rows.append([scaffold, kind, str(len(calls)), *(f"{_quantile(total, q):.3f}" for q in (0.5, 0.9)),
                     f"{max(total):.3f}", f"{_quantile(ttfb, 0.5):.3f}" if ttfb else "—"])  # fmt: skip
    head = ["scaffold", "kind", "calls", "p50 total (s)", "p90 total (s)", "max total (s)", "p50 ttfb (s)"]
    return _table(head, rows, "numbers") if rows else "<p>No model calls.</p>"
