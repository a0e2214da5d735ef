"""Which loop a model call belongs to: the agent's main loop, a sub-agent, or auxiliary work.

Agents send more than their main loop: titles and summaries, token counts, quota probes,
compaction, sub-agents with their own prompts and tools. A trainer usually learns from the
main loop (and perhaps its sub-agents) only, so every record says which it was. The agents'
own headers decide where they send them (Claude Code names sub-agents in
``x-claude-code-agent-id``; Codex sends ``x-openai-subagent`` and a ``request_kind`` in
``x-codex-turn-metadata``; OpenCode and Codex name their session); the request's shape
decides otherwise: a call that offers no tools is auxiliary, and a tool-bearing call from
another session (or, without session headers, with another tool set) than the episode's
first tool-bearing call is a sub-agent.
"""

from __future__ import annotations

import hashlib
import json

import attrs

from kwaigym.chat.types import ChatRequest

MAIN, SUB_AGENT, AUXILIARY = "main", "sub-agent", "auxiliary"

#: Headers that name the agent's session (sub-agents get sessions of their own), in the order tried.
SESSION_HEADERS = (
    "x-claude-code-session-id",
    "x-session-affinity",
    "x-opencode-session",
    "x-session-id",
    "thread-id",
    "session-id",
)
#: Headers never kept in a record: credentials, and what the proxy itself adds or rewrites.
SECRET_HEADERS = frozenset(
    {"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie", "x-goog-api-key"}
)
_CODEX_AUXILIARY_SUBAGENTS = frozenset({"compact", "review", "memory"})


@attrs.frozen
class Tag:
    kind: str
    """``main``, ``sub-agent`` or ``auxiliary``."""
    agent_id: str | None = None
    """The sub-agent's id (from the agent's header, or a session or tool-set fingerprint)."""


def _codex_metadata(headers: dict[str, str]) -> dict:
    try:
        metadata = json.loads(headers.get("x-codex-turn-metadata", "{}"))
    except ValueError:
        return {}
    return metadata if isinstance(metadata, dict) else {}


def _by_headers(headers: dict[str, str]) -> Tag | None:
    """What the agent's own headers say, if they say anything."""
    if agent := headers.get("x-claude-code-agent-id"):
        return Tag(SUB_AGENT, agent)
    if subagent := headers.get("x-openai-subagent"):
        if subagent in _CODEX_AUXILIARY_SUBAGENTS:
            return Tag(AUXILIARY)
        return Tag(SUB_AGENT, headers.get("thread-id") or subagent)
    kind = _codex_metadata(headers).get("request_kind")
    if kind is not None and kind != "turn":
        return Tag(AUXILIARY)
    return None


def _loop_identity(headers: dict[str, str], request: ChatRequest) -> str:
    """The session a tool-bearing call belongs to, or a fingerprint of the tools it offers."""
    for name in SESSION_HEADERS:
        if value := headers.get(name):
            return value
    names = "\n".join(sorted(t.name for t in request.tools))
    return "tools:" + hashlib.sha256(names.encode()).hexdigest()[:12]


class Tagger:
    """Tags each call of each episode; remembers the main loop's identity per episode."""

    def __init__(self) -> None:
        self._main: dict[str, str] = {}

    def tag(self, episode_id: str, path: str, headers: dict[str, str], request: ChatRequest | None) -> Tag:
        if path.split("?")[0].rstrip("/").endswith("/count_tokens"):
            return Tag(AUXILIARY)
        if (tag := _by_headers(headers)) is not None:
            return tag
        if request is None or not request.tools:
            return Tag(AUXILIARY)
        identity = _loop_identity(headers, request)
        main = self._main.setdefault(episode_id, identity)
        return Tag(MAIN) if identity == main else Tag(SUB_AGENT, identity)

    def forget(self, episode_id: str) -> None:
        self._main.pop(episode_id, None)


def recordable_headers(headers: dict[str, str], *, drop: frozenset[str] = frozenset()) -> dict[str, str]:
    """``headers`` without credentials (and without ``drop``): what a record may keep."""
    return {k: v for k, v in headers.items() if k not in SECRET_HEADERS and k not in drop}
