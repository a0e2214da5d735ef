"""Scaffolds by name: the built-in ones and any a package registers under the entry point
group ``kwaigym.scaffolds`` (``name = "package.module:AdapterClass"``)."""

from __future__ import annotations

import difflib
from importlib.metadata import entry_points

from kwaigym.errors import ConfigError
from scaffolds.base import Scaffold

GROUP = "kwaigym.scaffolds"
DEFAULT = "mini"


def _builtin() -> dict[str, type]:
    from scaffolds.claude_code import ClaudeCodeScaffold
    from scaffolds.cline import ClineScaffold
    from scaffolds.codex import CodexScaffold
    from scaffolds.kilocode import KiloCodeScaffold
    from scaffolds.mini import MiniScaffold
    from scaffolds.mini_swe_agent import MiniSweAgentScaffold
    from scaffolds.openclaw import OpenClawScaffold
    from scaffolds.opencode import OpenCodeScaffold

    return {
        "mini": MiniScaffold,
        "claude-code": ClaudeCodeScaffold,
        "opencode": OpenCodeScaffold,
        "codex": CodexScaffold,
        "cline": ClineScaffold,
        "kilocode": KiloCodeScaffold,
        "openclaw": OpenClawScaffold,
        "mini-swe-agent": MiniSweAgentScaffold,
    }


def available() -> dict[str, type]:
    """Every known adapter class by name (registered entry points override built-ins of a name)."""
    found = _builtin()
    for entry in entry_points(group=GROUP):
        found[entry.name] = entry.load()
    return found


def get(name: str = DEFAULT) -> Scaffold:
    """An adapter instance by name; an unknown name says what exists and the closest match."""
    classes = available()
    if name not in classes:
        close = difflib.get_close_matches(name, classes, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"no scaffold named {name!r}; available: {', '.join(sorted(classes))}.{hint}")
    return classes[name]()
