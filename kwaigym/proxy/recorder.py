"""The record of every intercepted model call, and the hook trajectories subscribe to.

A ``CallRecord`` holds what went over the wire (raw request and response bodies),
what it meant (the normalised ``ChatRequest`` and ``Completion``), and how long it
took (time to first byte, total), and which loop it came from (main, sub-agent, auxiliary).
The ``Recorder`` keeps them per episode and calls its subscribers as each call ends; it
never holds credentials: the agent's credential headers are dropped, and bodies are
those the agent sent and received.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import attrs

from kwaigym.chat.types import ChatRequest, Completion, WireFormat

log = logging.getLogger(__name__)


@attrs.define(kw_only=True)
class CallRecord:
    """One intercepted model call."""

    call_id: str
    episode_id: str
    format: WireFormat | None
    path: str
    started_at: float
    """Wall-clock time (epoch seconds) the request arrived."""
    stream: bool = False
    request_raw: Any = None
    """The request body as the agent sent it (parsed JSON, or text when it was not JSON)."""
    request: ChatRequest | None = None
    completion: Completion | None = None
    response_raw: Any = None
    """The JSON answer, or for streams the list of SSE events sent (keep-alives excluded)."""
    status: int = 0
    ttfb_s: float | None = None
    """Seconds from the request to the first byte of the answer (for streams: the prelude)."""
    total_s: float | None = None
    error: str | None = None
    kind: str = "main"
    """``main``, ``sub-agent`` or ``auxiliary`` (titles, probes, counts, compaction); see
    :mod:`kwaigym.proxy.tagging`."""
    agent_id: str | None = None
    """For ``sub-agent`` calls: which sub-agent (the agent's own id where it sends one)."""
    headers: dict[str, str] = attrs.Factory(dict)
    """The agent's request headers, credentials removed."""


class Recorder:
    """Collects call records per episode and tells subscribers about each finished call."""

    def __init__(self) -> None:
        self._calls: dict[str, list[CallRecord]] = defaultdict(list)
        self._subscribers: list[Callable[[CallRecord], None]] = []

    def subscribe(self, callback: Callable[[CallRecord], None]) -> Callable[[], None]:
        """Call ``callback(record)`` after every finished call; returns a function that unsubscribes."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def add(self, record: CallRecord) -> None:
        self._calls[record.episode_id].append(record)
        for callback in list(self._subscribers):
            try:
                callback(record)
            except Exception:  # a subscriber's bug must not break the agent's call
                log.exception("recorder subscriber %r failed on call %s", callback, record.call_id)

    def calls(self, episode_id: str) -> list[CallRecord]:
        """The finished calls of an episode, in the order they ended."""
        return list(self._calls.get(episode_id, ()))

    def pop(self, episode_id: str) -> list[CallRecord]:
        """The finished calls of an episode, forgotten here (the episode took them)."""
        return self._calls.pop(episode_id, [])
