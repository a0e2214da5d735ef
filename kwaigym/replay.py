"""Replay: re-run a recorded episode by answering the scaffold with the recorded responses.

A replay checks that an episode is reproducible (same scaffold, same task, same answers: the
same requests should come back), and localises what changed when it is not: a new scaffold
version, a different image, a tool that behaves differently. Each incoming request is
matched to the next recorded call of the same branch (main loop, a sub-agent, auxiliary) and
answered with that call's recorded completion; where the request differs from the recorded
one, a :class:`Divergence` says which call and which message first differed.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from kwaigym.chat import sse
from kwaigym.chat.codec import codec_for
from kwaigym.chat.types import ChatRequest, Completion, Message
from kwaigym.errors import ConfigError
from kwaigym.proxy.responders import CallContext


@attrs.frozen(kw_only=True)
class Divergence:
    """Where a replayed request first differed from the recorded one."""

    call_number: int
    """1-based number of the replayed call in the episode."""
    recorded_call_id: str | None
    branch: str
    message_index: int | None
    """First differing message (None: the recording had no call left for this branch)."""
    recorded: str
    replayed: str


def recorded_completion(call: Mapping[str, Any]) -> Completion:
    """The completion a stored call answered with (a JSON answer, or the SSE events of a stream)."""
    codec, raw = codec_for(call["format"]), call["response_raw"]
    if call.get("stream"):
        return codec.decode_stream(sse.parse([raw.encode() if isinstance(raw, str) else raw]))
    return codec.decode_response(raw)


def _message_key(message: Message) -> str:
    """What must match between a recorded and a replayed message: role, text, tool calls and results."""
    parts = []
    for part in message.content:
        data = attrs.asdict(part) if attrs.has(type(part)) else {"raw": str(part)}
        data.pop("extra", None)
        data.pop("signature", None)
        parts.append(data)
    return json.dumps({"role": message.role, "parts": parts}, sort_keys=True, default=str)


def _branch(ctx_kind: str, agent_id: str | None) -> str:
    return ctx_kind + (f":{agent_id}" if agent_id else "")


class ReplayResponder:
    """Answers with the recorded completions of one episode and notes every divergence."""

    def __init__(self, calls: Iterable[Mapping[str, Any]]):
        self._queues: dict[str, deque] = defaultdict(deque)
        for call in calls:
            if call.get("status") == 200 and call.get("format") and call.get("request_raw") is not None:
                self._queues[_branch(call.get("kind", "main"), call.get("agent_id"))].append(call)
        self.divergences: list[Divergence] = []
        self._count = 0

    async def respond(self, request: ChatRequest, ctx: CallContext) -> Completion:
        self._count += 1
        branch = _branch(ctx.kind, ctx.agent_id)
        queue = self._queues.get(branch)
        if not queue:
            self.divergences.append(Divergence(call_number=self._count, recorded_call_id=None, branch=branch,
                                               message_index=None, recorded="(no recorded call left)",
                                               replayed=f"{len(request.messages)} messages"))  # fmt: skip
            return Completion(text="kwaigym replay: the recording has no answer for this call.")
        call = queue.popleft()
        recorded = codec_for(call["format"]).decode_request(call["request_raw"])
        self._compare(call, branch, recorded.messages, request.messages)
        return recorded_completion(call)

    def _compare(self, call, branch: str, recorded: list[Message], replayed: list[Message]) -> None:
        for index in range(max(len(recorded), len(replayed))):
            old = _message_key(recorded[index]) if index < len(recorded) else "(missing)"
            new = _message_key(replayed[index]) if index < len(replayed) else "(missing)"
            if old != new:
                self.divergences.append(Divergence(call_number=self._count, recorded_call_id=call["call_id"],
                                                   branch=branch, message_index=index, recorded=old[:500],
                                                   replayed=new[:500]))  # fmt: skip
                return

    @property
    def unused(self) -> int:
        """Recorded calls the replay never asked for (the scaffold stopped earlier than recorded)."""
        return sum(len(q) for q in self._queues.values())


def find_episode(records: Iterable[Mapping[str, Any]], task_id: str, scaffold: str) -> Mapping[str, Any]:
    """The first stored episode of ``task_id`` with ``scaffold``; ConfigError when there is none."""
    for record in records:
        if record.get("task_id") == task_id and record.get("scaffold") == scaffold:
            return record
    raise ConfigError(f"no recorded episode of task {task_id!r} with scaffold {scaffold!r} to replay",
                      task_id=task_id)  # fmt: skip
