"""Model calls turned into what the trajectory viewer shows: messages and answers as plain parts.

A stored call keeps its raw wire bodies (three formats, streamed or not); the viewer must not know
any of them, so each request and answer is decoded here with :mod:`kwaigym.chat` into a list of
messages of typed parts (text, reasoning, tool call, tool result, other).

Agents resend the whole conversation on every call, so a run repeats each message many times (and
the same system prompt in every episode). Messages are therefore interned in one pool shared by the
whole report and a call lists pool indices: the report stays small, and the viewer can tell which
messages of a call are new since the previous call of the same agent (a prefix of equal indices).
Tool schemas are left out (only their names are kept): they are the bulk of a request and the same
every time.
"""

from __future__ import annotations

import json
from typing import Any

from kwaigym.chat import ImagePart, ReasoningPart, TextPart, ToolCall, ToolResult, codec_for, sse

MAX_TEXT = 20_000
"""Characters kept of any one text; the rest is cut, with a marker saying how much."""


def clip(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters, with a marker saying how many were dropped."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… [truncated: {len(text) - limit} more characters]"


def raw_text(value: Any) -> str:
    """A raw body as readable text: JSON pretty-printed, text as is, clipped."""
    if isinstance(value, str):
        return clip(value)
    return clip(json.dumps(value, indent=1, ensure_ascii=False, default=str))


def _arguments(text: str) -> str:
    """Tool-call arguments pretty-printed when they are JSON (models may produce invalid JSON: kept)."""
    try:
        return json.dumps(json.loads(text), indent=1, ensure_ascii=False)
    except ValueError:
        return text


def _part(part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": clip(part.text)}
    if isinstance(part, ReasoningPart):
        text = "[redacted reasoning]" if part.redacted else part.text
        return {"type": "reasoning", "text": clip(text)}
    if isinstance(part, ToolCall):
        return {
            "type": "tool_call",
            "name": part.name,
            "id": part.id,
            "text": clip(_arguments(part.arguments)),
        }
    if isinstance(part, ToolResult):
        text = "\n".join(
            p.text if isinstance(p, TextPart) else f"[{p.raw.get('type')}]" for p in part.content
        )
        return {"type": "tool_result", "id": part.call_id, "error": part.is_error, "text": clip(text)}
    if isinstance(part, ImagePart):
        return {"type": "other", "text": f"[{part.raw.get('type', 'block')} block]"}
    return {"type": "other", "text": clip(repr(part))}


class MessagePool:
    """Each distinct message, and each distinct part, once by index (see the module docstring).

    Parts are interned too: Claude Code's system message differs between episodes by one short
    header part, while its long parts are the same everywhere.
    """

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.parts: list[dict[str, Any]] = []
        self._message_index: dict[str, int] = {}
        self._part_index: dict[str, int] = {}

    @staticmethod
    def _intern(table: list[dict[str, Any]], index: dict[str, int], item: dict[str, Any]) -> int:
        key = json.dumps(item, sort_keys=True)
        if key not in index:
            index[key] = len(table)
            table.append(item)
        return index[key]

    def add(self, role: str, parts: list[dict[str, Any]]) -> int:
        """The index of the message of ``role`` with ``parts`` (as ``_part`` makes them)."""
        indices = [self._intern(self.parts, self._part_index, p) for p in parts]
        return self._intern(self.messages, self._message_index, {"role": role, "parts": indices})


def _answer(fmt: str, status: int | None, raw: Any) -> dict[str, Any]:
    """The decoded answer as one assistant message plus its finish reason."""
    codec = codec_for(fmt)
    if status is not None and not 200 <= status < 300:
        raise ValueError(f"HTTP status {status}")
    if isinstance(raw, str):
        events = list(sse.parse([raw]))
        if not events:
            raise ValueError("text that holds no server-sent event")
        completion = codec.decode_stream(events)
    else:
        completion = codec.decode_response(raw)
    parts = [*completion.reasoning, *([TextPart(text=completion.text)] if completion.text else []),
             *completion.tool_calls]  # fmt: skip
    usage = completion.usage
    return {"role": "assistant", "parts": [_part(p) for p in parts], "finish": completion.finish_reason,
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}}  # fmt: skip


def call_view(call: dict[str, Any], pool: MessagePool, episode_start: float | None) -> dict[str, Any]:
    """One stored call (``call_to_dict``) as the viewer's record.

    A body that does not decode (an error answer, a non-JSON request) is shown raw with the reason,
    rather than failing the whole report; so are the bodies of a call with no wire format.
    """
    fmt, started = call.get("format"), call.get("started_at")
    view: dict[str, Any] = {
        "id": call.get("call_id"), "kind": call.get("kind") or "main", "agent": call.get("agent_id"),
        "status": call.get("status"), "format": fmt, "path": call.get("path"), "stream": call.get("stream"),
        "t": None if started is None or episode_start is None else started - episode_start,
        "ttfb": call.get("ttfb_s"), "total": call.get("total_s"), "error": call.get("error"),
        "usage": call.get("usage"), "model": None, "tools": [], "msgs": [], "answer": None, "notes": [],
    }  # fmt: skip
    request, response = call.get("request_raw"), call.get("response_raw")
    if fmt is None:  # a side call the proxy answered itself (a model listing): nothing to decode
        view["request_raw"] = None if request is None else raw_text(request)
        view["response_raw"] = None if response is None else raw_text(response)
        return view
    try:
        decoded = codec_for(fmt).decode_request(request)
        view["model"], view["tools"] = decoded.model, [t.name for t in decoded.tools]
        for m in decoded.messages:
            view["msgs"].append(pool.add(m.role, [_part(p) for p in m.content]))
    except Exception as exc:  # any undecodable body is shown raw
        view["notes"].append(f"request not decoded ({type(exc).__name__}: {exc})")
        if request is not None:
            view["request_raw"] = raw_text(request)
    try:
        view["answer"] = _answer(fmt, call.get("status"), response)
    except Exception as exc:
        view["notes"].append(f"answer not decoded ({type(exc).__name__}: {exc})")
        if response is not None:
            view["response_raw"] = raw_text(response)
    if view["usage"] is None and view["answer"]:
        view["usage"] = view["answer"]["usage"]
    return view
