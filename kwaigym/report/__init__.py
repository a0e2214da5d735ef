"""``kwaigym report``: one self-contained HTML file showing a run's ``episodes.jsonl``.

The file loads nothing (inline CSS, SVG plots drawn here, one inline script), so it can be mailed,
archived or opened offline. The summary and plots are static HTML; the trajectory viewer is a small
script over the episodes embedded as one JSON blob. Agent output is untrusted, so every string is
escaped where it is written (``html.escape`` here, ``textContent`` in the script), and a
Content-Security-Policy lets only the report's own script (by hash) run and forbids every fetch.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from kwaigym.errors import ConfigError
from kwaigym.report import plots
from kwaigym.report.calls import MessagePool, call_view, clip, raw_text
from kwaigym.report.summary import latency_html, summary_html, tokens
from kwaigym.trajectory import EpisodeStore

__all__ = ["write_report", "render_report"]


def _episode_view(r: dict[str, Any], pool: MessagePool) -> dict[str, Any]:
    verifier = r.get("verifier") or {}
    start = r.get("started_at")
    return {
        "id": r.get("episode_id") or f"{r['task_id']}/{r['scaffold']}", "task": r["task_id"],
        "scaffold": r["scaffold"], "status": r["status"], "reward": r.get("reward"),
        "valid": bool(r.get("reward_valid")), "truncated": bool(r.get("truncated")), "turns": r.get("turns"),
        "duration": r.get("duration_s"), "exit": r.get("agent_exit_code"), "tokens": tokens(r),
        "error": clip(str(r["error"])) if r.get("error") else None,
        "final": clip(r.get("final_message") or ""), "sample": (r.get("metadata") or {}).get("sample", 0),
        "verifier": None if not verifier else {
            "reward": verifier.get("reward"), "valid": verifier.get("reward_valid"),
            "error": verifier.get("error"), "duration": verifier.get("duration_s"),
            "details": raw_text(verifier.get("details") or {}),
        },
        "calls": [call_view(c, pool, start) for c in r.get("calls") or ()],
    }  # fmt: skip


def _plots(records: list[dict[str, Any]]) -> str:
    """Turns, tokens and call latency, one stacked series per scaffold."""
    scaffolds = sorted({r["scaffold"] for r in records})

    def per_scaffold(values) -> dict[str, list[float]]:
        return {s: [v for r in records if r["scaffold"] == s for v in values(r)] for s in scaffolds}

    return "".join([
        plots.histogram("Turns per episode", per_scaffold(lambda r: [r.get("turns") or 0]), "turns",
                        integer=True),
        plots.histogram("Input tokens per episode", per_scaffold(lambda r: [tokens(r)[0]]), "tokens",
                        integer=True),
        plots.histogram("Output tokens per episode", per_scaffold(lambda r: [tokens(r)[1]]), "tokens",
                        integer=True),
        plots.histogram("Model call latency", per_scaffold(
            lambda r: [c["total_s"] for c in r.get("calls") or () if c.get("total_s") is not None]),
            "seconds per call (total)"),
    ])  # fmt: skip


def _json_for_script(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``<`` at all, so no ``</script>`` or ``<!--``."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def _order(r: dict[str, Any]) -> tuple:
    return r["task_id"], r["scaffold"], (r.get("metadata") or {}).get("sample", 0)


def render_report(records: list[dict[str, Any]], title: str) -> str:
    """The report's HTML for ``records`` (``episode_to_dict`` records)."""
    pool = MessagePool()
    episodes = [_episode_view(r, pool) for r in sorted(records, key=_order)]
    files = resources.files(__package__)
    script = files.joinpath("viewer.js").read_text()
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    parts = {
        "title": escape(title),
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "csp": f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'",
        "summary": summary_html(records),
        "plots": _plots(records),
        "latency": latency_html(records),
        "data": _json_for_script({"episodes": episodes, "messages": pool.messages, "parts": pool.parts}),
        "script": script,
    }
    # One pass: text substituted in is never scanned again for {{...}}.
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m[1]], files.joinpath("template.html").read_text())


def write_report(run_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Write the HTML report of the run in ``run_dir`` (its ``episodes.jsonl``) to ``out_path``
    (default ``run_dir/report.html``) and return the path written."""
    run_dir = Path(run_dir)
    store = EpisodeStore(run_dir)
    if not store.path.is_file():
        raise ConfigError(f"{store.path} does not exist: is {run_dir} the --out directory of a run?")
    out = Path(out_path) if out_path is not None else run_dir / "report.html"
    html = render_report(list(store.records()), f"kwaigym report: {run_dir.resolve().name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
