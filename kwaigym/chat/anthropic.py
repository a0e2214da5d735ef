"""The Anthropic Messages API (``POST /v1/messages``), both ways, streaming and not.

Interpreted request fields: ``model``, ``max_tokens`` (required), ``system`` (a string or text
blocks: the first message, role ``system``), ``messages`` (roles ``user``, ``assistant`` and
``system``: Claude Code's mid-conversation system messages stay in place), ``tools``
(``input_schema`` -> ``parameters``), ``tool_choice`` (kept in wire form), ``temperature``,
``top_p``, ``top_k``, ``stop_sequences``, ``thinking`` (-> ``params.reasoning``), ``metadata``,
``stream``. Blocks: ``text`` -> TextPart; ``thinking``, ``redacted_thinking`` -> ReasoningPart;
``tool_use`` -> ToolCall (``arguments`` = compact JSON text of ``input``); ``tool_result`` ->
ToolResult. Any other block (``image``, ``document``, ``search_result``, server-tool blocks) is
kept whole as ``ImagePart(raw=block)``; ``raw["type"]`` says what it is.

Everything else a client sends (``cache_control``, ``citations``, ``context_management``,
``output_config``, server-tool fields...) stays in the ``extra`` of the object it came on, and
optional fields sent as ``null``, ``false``, ``""``, ``[]`` or ``{}`` stay in ``extra`` as sent,
so ``encode_request(decode_request(body)) == body``. Two facts that are no wire field live under
``extra[HINT]``: ``{"blocks": True}``, content that was a list of one plain text block (else it
is written as a string), and ``{"in_messages": True}``, a ``role: system`` entry that opened
``messages`` (else leading system messages make the top-level ``system``).

A request that arrived in another format is translated: its ``extra`` fields are not sent,
``tool`` messages become one user turn of ``tool_result`` blocks, OpenAI images and
``tool_choice`` are mapped, unsigned reasoning is left out (Anthropic would reject it), and
``max_tokens`` defaults to ``DEFAULT_MAX_TOKENS``.

``Usage.input_tokens`` counts the whole prompt; the wire ``input_tokens`` excludes cache reads
and writes. Limits: no logprobs or token ids; answers list reasoning, then text, then tool calls;
server-tool blocks of an upstream answer are dropped; a ``stop_sequence`` stop decodes as
``"stop"``; tool arguments that are not a JSON object are answered as ``{}`` (clients must parse).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kwaigym.chat import sse
from kwaigym.chat.codec import BadRequest
from kwaigym.chat.types import (
    ChatRequest,
    Completion,
    FinishReason,
    ImagePart,
    Message,
    Part,
    ReasoningPart,
    SamplingParams,
    TextPart,
    Tool,
    ToolCall,
    ToolResult,
    Usage,
)
from kwaigym.errors import InfraError

HINT = "_anthropic"
"""Key of the round-trip hints in an ``extra``: not a wire field, never sent."""
DEFAULT_MAX_TOKENS = 8192
"""``max_tokens`` sent for a request from another format that gave none (the API requires it)."""

_TO_WIRE_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_TO_WIRE_STOP |= {"content_filter": "refusal", "error": "end_turn"}
_FROM_WIRE_STOP: dict[str, FinishReason] = {"max_tokens": "length", "model_context_window_exceeded": "length"}
_FROM_WIRE_STOP |= {"tool_use": "tool_calls", "refusal": "content_filter"}  # others: "stop"
_OPTIONAL = {"tools": "list", "tool_choice": "object", "temperature": "number", "top_p": "number"}
_OPTIONAL |= {"top_k": "integer", "stop_sequences": "list", "thinking": "object", "metadata": "object"}
_OPTIONAL |= {"stream": "boolean"}
_KINDS = {"string": str, "integer": int, "number": (int, float), "boolean": bool}
_KINDS |= {"object": Mapping, "list": (list, tuple)}
_STREAMED = {"text": {"text": "text_delta"}, "tool_use": {"input": "input_json_delta"}}
_STREAMED |= {"thinking": {"thinking": "thinking_delta", "signature": "signature_delta"}}
_DELTA_FIELD = {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "signature"}
_DELTA_FIELD |= {"input_json_delta": "partial_json"}


# --- validation ----------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _check(value: Any, kind: str, where: str) -> Any:
    """``value`` if it is of JSON ``kind``, else BadRequest naming ``where``."""
    if not isinstance(value, _KINDS[kind]) or (kind in ("integer", "number") and isinstance(value, bool)):
        raise BadRequest(f"{where}: expected {_a(kind)}, got {_kind(value)}")
    return value


def _field(obj: Mapping[str, Any], key: str, kind: str, where: str, *, required: bool = False) -> Any:
    """``obj[key]`` checked to be of ``kind``; None when absent or null (BadRequest if required)."""
    path = f"{where}.{key}" if where else key
    if obj.get(key) is None:
        if required:
            raise BadRequest(f"{path}: missing; expected {_a(kind)}")
        return None
    return _check(obj[key], kind, path)


def _says_nothing(value: Any) -> bool:
    """Whether a (type-checked) value means the same as "not given"."""
    return value is None or value is False or (isinstance(value, (str, list, tuple, Mapping)) and not value)


def _split(obj: Mapping[str, Any], known: Sequence[str]) -> dict[str, Any]:
    """The fields of ``obj`` that are not ``known``, and known ones that say nothing (kept as sent)."""
    return {k: v for k, v in obj.items() if k not in known or _says_nothing(v)}


def _hint(extra: Mapping[str, Any]) -> Mapping[str, Any]:
    hint = extra.get(HINT)
    return hint if isinstance(hint, Mapping) else {}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _plain_text(parts: Sequence[Part]) -> bool:
    return len(parts) == 1 and isinstance(parts[0], TextPart) and not parts[0].extra


# --- decoding requests ---------------------------------------------------------------------------


def _decode_block(block: Any, where: str, *, nested: bool = False) -> Part:
    kind = _field(_check(block, "object", where), "type", "string", where, required=True)
    if kind == "text":
        text = _field(block, "text", "string", where, required=True)
        return TextPart(text=text, extra=_split(block, ("type", "text")))
    if nested:  # inside a tool_result, every other block is kept whole
        return ImagePart(raw=block)
    if kind == "thinking":
        text = _field(block, "thinking", "string", where, required=True)
        signature = _field(block, "signature", "string", where)
        return ReasoningPart(
            text=text, signature=signature, extra=_split(block, ("type", "thinking", "signature"))
        )
    if kind == "redacted_thinking":
        data = _field(block, "data", "string", where, required=True)
        return ReasoningPart(text=data, redacted=True, extra=_split(block, ("type", "data")))
    if kind == "tool_use":
        call_id = _field(block, "id", "string", where, required=True)
        name = _field(block, "name", "string", where, required=True)
        arguments = _dumps(_field(block, "input", "object", where, required=True))
        return ToolCall(
            id=call_id, name=name, arguments=arguments, extra=_split(block, ("type", "id", "name", "input"))
        )
    if kind == "tool_result":
        call_id = _field(block, "tool_use_id", "string", where, required=True)
        is_error = bool(_field(block, "is_error", "boolean", where))
        parts, hint = [], {}
        if block.get("content") is not None:
            parts, hint = _decode_content(block["content"], f"{where}.content", nested=True)
        extra = _split(block, ("type", "tool_use_id", "content", "is_error")) | hint
        return ToolResult(call_id=call_id, content=parts, is_error=is_error, extra=extra)
    return ImagePart(raw=block)


def _decode_content(value: Any, where: str, *, nested: bool = False) -> tuple[list[Any], dict[str, Any]]:
    """(parts, hint for ``extra``) of a string or a list of content blocks."""
    if isinstance(value, str):
        return [TextPart(text=value)], {}
    if not isinstance(value, (list, tuple)):
        raise BadRequest(f"{where}: expected a string or a list of content blocks, got {_kind(value)}")
    parts = [_decode_block(b, f"{where}[{i}]", nested=nested) for i, b in enumerate(value)]
    return parts, ({HINT: {"blocks": True}} if _plain_text(parts) else {})


def _decode_message(message: Any, where: str, *, opening: bool) -> Message:
    role = _field(_check(message, "object", where), "role", "string", where, required=True)
    if role not in ("user", "assistant", "system"):
        raise BadRequest(f"{where}.role: expected 'user', 'assistant' or 'system', got {role!r}")
    if "content" not in message:
        raise BadRequest(f"{where}.content: missing; expected a string or a list of content blocks")
    parts, hint = _decode_content(message["content"], f"{where}.content")
    extra = {k: v for k, v in message.items() if k not in ("role", "content")} | hint
    if role == "system" and opening:
        extra[HINT] = {**_hint(extra), "in_messages": True}
    return Message(role=role, content=parts, extra=extra)


def _decode_tool(tool: Any, where: str) -> Tool:
    name = _field(_check(tool, "object", where), "name", "string", where, required=True)
    description = _field(tool, "description", "string", where) or ""
    schema = _field(tool, "input_schema", "object", where) or {}
    extra = _split(tool, ("name", "description", "input_schema"))
    return Tool(name=name, description=description, parameters=schema, extra=extra)


def _decode(body: Any, *, need_max_tokens: bool) -> ChatRequest:
    if not isinstance(body, Mapping):
        raise BadRequest(f"request body: expected a JSON object, got {_kind(body)}")
    model = _field(body, "model", "string", "", required=True)
    max_tokens = _field(body, "max_tokens", "integer", "", required=need_max_tokens)
    if max_tokens is not None and max_tokens < 0:
        raise BadRequest(f"max_tokens: expected a non-negative integer, got {max_tokens}")
    wire_messages = _field(body, "messages", "list", "", required=True)
    given = {k: v for k, kind in _OPTIONAL.items() if not _says_nothing(v := _field(body, k, kind, ""))}
    messages = []
    if body.get("system") is not None:
        parts, hint = _decode_content(body["system"], "system")
        if not _says_nothing(body["system"]):
            given["system"] = body["system"]
            messages.append(Message(role="system", content=parts, extra=hint))
    opening = True
    for i, m in enumerate(wire_messages):
        messages.append(_decode_message(m, f"messages[{i}]", opening=opening))
        opening = opening and messages[-1].role == "system"
    stop = given.get("stop_sequences", ())
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=given.get("temperature"),
        top_p=given.get("top_p"),
        top_k=given.get("top_k"),
        stop=tuple(_check(s, "string", f"stop_sequences[{i}]") for i, s in enumerate(stop)),
        reasoning=given.get("thinking", {}),
    )
    interpreted = {"model", "messages", *given} | ({"max_tokens"} if max_tokens is not None else set())
    return ChatRequest(
        format="anthropic",
        model=model,
        messages=messages,
        tools=[_decode_tool(t, f"tools[{i}]") for i, t in enumerate(given.get("tools", ()))],
        tool_choice=given.get("tool_choice"),
        params=params,
        stream=given.get("stream", False),
        metadata=given.get("metadata", {}),
        extra={k: v for k, v in body.items() if k not in interpreted},
    )


def decode_count_tokens_request(body: Any) -> ChatRequest:
    """A ``/v1/messages/count_tokens`` body (a Messages body whose ``max_tokens`` is optional)."""
    return _decode(body, need_max_tokens=False)


# --- encoding requests ---------------------------------------------------------------------------


def _wire_extra(extra: Mapping[str, Any], own: bool) -> dict[str, Any]:
    return {k: v for k, v in extra.items() if k != HINT} if own else {}


def _image_block(raw: Mapping[str, Any], own: bool) -> dict[str, Any]:
    """A kept block; an OpenAI image (``image_url`` / ``input_image``) becomes an Anthropic one."""
    if own or raw.get("type") not in ("image_url", "input_image"):
        return dict(raw)
    url = raw.get("image_url")
    url = url.get("url") if isinstance(url, Mapping) else url
    if isinstance(url, str) and url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _encode_block(part: Part, own: bool) -> dict[str, Any]:
    if isinstance(part, ImagePart):
        return _image_block(part.raw, own)
    block = _wire_extra(part.extra, own)
    if isinstance(part, TextPart):
        return block | {"type": "text", "text": part.text}
    if isinstance(part, ReasoningPart) and part.redacted:
        return block | {"type": "redacted_thinking", "data": part.text}
    if isinstance(part, ReasoningPart):
        signed = {} if part.signature is None else {"signature": part.signature}
        return block | {"type": "thinking", "thinking": part.text} | signed
    if isinstance(part, ToolCall):
        return block | {"type": "tool_use", "id": part.id, "name": part.name, "input": _input(part.arguments)}
    block |= {"type": "tool_result", "tool_use_id": part.call_id}
    if part.content:
        block["content"] = _encode_content(part.content, part.extra, own)
    return block | ({"is_error": True} if part.is_error else {})


def _encode_content(parts: Sequence[Part], extra: Mapping[str, Any], own: bool) -> str | list[dict[str, Any]]:
    if not own:  # Anthropic rejects unsigned thinking blocks, and other formats sign none
        parts = [
            p for p in parts if not (isinstance(p, ReasoningPart) and not p.redacted and not p.signature)
        ]
    if _plain_text(parts) and not (own and _hint(extra).get("blocks")):
        return parts[0].text
    return [_encode_block(p, own) for p in parts]


def _encode_messages(messages: Sequence[Message], own: bool) -> tuple[Any, list[dict[str, Any]]]:
    """(top-level ``system`` or None, wire ``messages``)."""
    head = 0
    while head < len(messages) and messages[head].role == "system":
        if own and _hint(messages[head].extra).get("in_messages"):
            break
        head += 1
    system = _encode_content(messages[0].content, messages[0].extra, own) if head == 1 else None
    if head > 1:
        system = [_encode_block(p, own) for m in messages[:head] for p in m.content]
    wire: list[dict[str, Any]] = []
    for i, m in enumerate(messages[head:], start=head):
        if m.role != "tool":
            content = _encode_content(m.content, m.extra, own)
            wire.append(_wire_extra(m.extra, own) | {"role": m.role, "content": content})
        elif i > head and messages[i - 1].role == "tool":  # another format's tool messages: one user turn
            wire[-1]["content"] += [_encode_block(p, own) for p in m.content]
        else:
            wire.append({"role": "user", "content": [_encode_block(p, own) for p in m.content]})
    return system, wire


def _encode_tool(tool: Tool, own: bool) -> dict[str, Any]:
    wire = _wire_extra(tool.extra, own) | {"name": tool.name}
    if tool.description:
        wire["description"] = tool.description
    if tool.parameters or not own:
        wire["input_schema"] = dict(tool.parameters) or {"type": "object", "properties": {}}
    return wire


def _foreign_tool_choice(choice: Any) -> dict[str, Any] | None:
    """Another format's ``tool_choice`` (``"auto"``, ``"required"``, a named function) in Anthropic's form."""
    if isinstance(choice, str):
        return {"type": {"required": "any", "none": "none", "any": "any"}.get(choice, "auto")}
    if not isinstance(choice, Mapping):
        return None
    function = choice.get("function")
    name = function.get("name") if isinstance(function, Mapping) else choice.get("name")
    return {"type": "tool", "name": name} if isinstance(name, str) else None


def encode_request(request: ChatRequest) -> dict[str, Any]:
    """ChatRequest -> a Messages API request body."""
    own, p = request.format == "anthropic", request.params
    system, messages = _encode_messages(request.messages, own)
    body = (dict(request.extra) if own else {}) | {"model": request.model, "messages": messages}
    if p.max_tokens is not None or not own:  # a count_tokens body has none
        body["max_tokens"] = DEFAULT_MAX_TOKENS if p.max_tokens is None else p.max_tokens
    optional = {
        "system": system,
        "tools": [_encode_tool(t, own) for t in request.tools],
        "tool_choice": request.tool_choice if own else _foreign_tool_choice(request.tool_choice),
        "temperature": p.temperature,
        "top_p": p.top_p,
        "top_k": p.top_k,
        "stop_sequences": list(p.stop),
        "thinking": dict(p.reasoning) if own or "type" in p.reasoning else None,
        "metadata": dict(request.metadata) if own else None,
        "stream": request.stream,
    }
    return body | {k: v for k, v in optional.items() if not _says_nothing(v)}


# --- answering -----------------------------------------------------------------------------------


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _input(arguments: str) -> dict[str, Any]:
    """A tool call's ``input`` object; ``{}`` when its arguments are not a JSON object."""
    return _json_object(arguments) or {}


def _answer_blocks(completion: Completion, *, stream: bool) -> list[dict[str, Any]]:
    """The content blocks of an answer; streamed, a tool call's ``input`` is its arguments text."""
    blocks = [_encode_block(r, own=False) for r in completion.reasoning]
    for block in blocks:
        if block["type"] == "thinking":  # required in answers
            block.setdefault("signature", "")
    if completion.text or not (completion.reasoning or completion.tool_calls):
        blocks.append({"type": "text", "text": completion.text})
    for call in completion.tool_calls:
        blocks.append(_encode_block(call, own=False))
        if stream:
            blocks[-1]["input"] = call.arguments if _json_object(call.arguments) is not None else "{}"
    return blocks


def _wire_usage(usage: Usage) -> dict[str, Any]:
    uncached = max(usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens, 0)
    wire = {"input_tokens": uncached, "output_tokens": usage.output_tokens}
    wire |= {
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
    }
    if usage.reasoning_tokens:
        wire["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return wire


def encode_response(completion: Completion, request: ChatRequest, *, response_id: str) -> dict[str, Any]:
    """Completion -> a Messages API response body."""
    return {
        "id": response_id,
        "type": "message",
        "role": "assistant",
        "model": completion.model or request.model,
        "content": _answer_blocks(completion, stream=False),
        "stop_reason": _TO_WIRE_STOP[completion.finish_reason],
        "stop_sequence": None,
        "usage": _wire_usage(completion.usage),
    }


def sse_prelude(request: ChatRequest, *, response_id: str) -> bytes:
    """``message_start`` (with the ``count_tokens`` estimate as input tokens) and a ``ping``."""
    usage = {"input_tokens": estimate_input_tokens(request), "output_tokens": 0}
    message = {"id": response_id, "type": "message", "role": "assistant", "model": request.model}
    message |= {"content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
    return sse.event({"type": "message_start", "message": message}, "message_start") + sse_keepalive()


def sse_keepalive() -> bytes:
    """A ``ping`` event: part of the format, ignored by clients, and bytes for their watchdogs."""
    return sse.event({"type": "ping"}, "ping")


def sse_completion(completion: Completion, request: ChatRequest, *, response_id: str) -> bytes:
    """Each block as start, one delta a field, stop; ``message_delta`` (true usage); ``message_stop``."""
    events: list[dict[str, Any]] = []
    for i, block in enumerate(_answer_blocks(completion, stream=True)):
        streamed = _STREAMED.get(block["type"], {})
        start = block | {f: {} if f == "input" else "" for f in streamed}
        events.append({"type": "content_block_start", "index": i, "content_block": start})
        for field, delta in streamed.items():
            if block[field]:
                events.append(
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": delta, _DELTA_FIELD[delta]: block[field]},
                    }
                )
        events.append({"type": "content_block_stop", "index": i})
    delta = {"stop_reason": _TO_WIRE_STOP[completion.finish_reason], "stop_sequence": None}
    events.append({"type": "message_delta", "delta": delta, "usage": _wire_usage(completion.usage)})
    events.append({"type": "message_stop"})
    return b"".join(sse.event(e, e["type"]) for e in events)


# --- decoding answers ----------------------------------------------------------------------------


def _usage(wire: Any) -> Usage:
    count = {k: v for k, v in wire.items() if isinstance(v, int)} if isinstance(wire, Mapping) else {}
    details = wire.get("output_tokens_details") if isinstance(wire, Mapping) else None
    read, write = count.get("cache_read_input_tokens", 0), count.get("cache_creation_input_tokens", 0)
    return Usage(
        input_tokens=count.get("input_tokens", 0) + read + write,
        output_tokens=count.get("output_tokens", 0),
        cache_read_tokens=read,
        cache_write_tokens=write,
        reasoning_tokens=details.get("thinking_tokens", 0) if isinstance(details, Mapping) else 0,
    )


def _completion(blocks: Iterable[Mapping[str, Any]], message: Mapping[str, Any]) -> Completion:
    """A Completion from an answer's content blocks and its other fields."""
    texts, reasoning, calls = [], [], []
    for b in blocks:
        kind = b.get("type")
        if kind == "text":
            texts.append(str(b.get("text", "")))
        elif kind in ("thinking", "redacted_thinking"):
            text = str(b.get("data" if kind == "redacted_thinking" else "thinking", ""))
            signature = b.get("signature") or None
            reasoning.append(
                ReasoningPart(text=text, signature=signature, redacted=kind == "redacted_thinking")
            )
        elif kind == "tool_use":
            arguments = b.get("partial_json") or _dumps(b.get("input") or {})
            extra = {k: v for k, v in b.items() if k not in ("type", "id", "name", "input", "partial_json")}
            calls.append(
                ToolCall(
                    id=str(b.get("id", "")), name=str(b.get("name", "")), arguments=arguments, extra=extra
                )
            )
    return Completion(
        text="".join(texts),
        reasoning=tuple(reasoning),
        tool_calls=tuple(calls),
        finish_reason=_FROM_WIRE_STOP.get(str(message.get("stop_reason")), "stop"),
        usage=_usage(message.get("usage")),
        model=message.get("model"),
        id=message.get("id"),
    )


def _upstream_error(body: Mapping[str, Any]) -> InfraError:
    error = body.get("error") if isinstance(body.get("error"), Mapping) else {}
    return InfraError(f"upstream Anthropic API error {error.get('type')}: {error.get('message')}")


def decode_response(body: Mapping[str, Any]) -> Completion:
    """A Messages API response body -> Completion; an error body raises InfraError."""
    if not isinstance(body, Mapping) or body.get("type") == "error":
        raise _upstream_error(body if isinstance(body, Mapping) else {"error": {"message": repr(body)}})
    content = body.get("content") if isinstance(body.get("content"), list) else []
    return _completion([b for b in content if isinstance(b, Mapping)], body)


def decode_stream(events: Iterable[tuple[str | None, str]]) -> Completion:
    """A Messages API event stream -> Completion; an ``error`` event raises InfraError.

    Unknown events (``ping``, new types) are skipped; ``message_delta`` usage is cumulative.
    """
    message: dict[str, Any] = {}
    blocks: dict[int, dict[str, Any]] = {}
    for _name, data in events:
        try:
            event = json.loads(data)
        except ValueError:
            raise InfraError(f"upstream Anthropic stream: an event is not JSON: {data[:200]!r}") from None
        event = event if isinstance(event, dict) else {}
        kind, index, usage = event.get("type"), event.get("index"), event.get("usage")
        if kind == "error":
            raise _upstream_error(event)
        if kind == "message_start" and isinstance(event.get("message"), dict):
            message = dict(event["message"])
        elif kind == "content_block_start" and isinstance(event.get("content_block"), dict):
            blocks[index if isinstance(index, int) else len(blocks)] = dict(event["content_block"])
        elif kind == "content_block_delta" and isinstance(event.get("delta"), dict) and index in blocks:
            field = _DELTA_FIELD.get(event["delta"].get("type"))
            if field:
                blocks[index][field] = str(blocks[index].get(field) or "") + str(
                    event["delta"].get(field) or ""
                )
        elif kind == "message_delta":
            message |= event["delta"] if isinstance(event.get("delta"), dict) else {}
            old = message.get("usage") if isinstance(message.get("usage"), dict) else {}
            message["usage"] = old | (usage if isinstance(usage, dict) else {})
    return _completion([blocks[i] for i in sorted(blocks)], message)


# --- count_tokens --------------------------------------------------------------------------------


def estimate_input_tokens(request: ChatRequest) -> int:
    """UTF-8 bytes of the JSON of ``system``, ``messages`` and ``tools``, over 4, rounded up."""
    body = encode_request(request)
    counted = {k: body[k] for k in ("system", "messages", "tools") if k in body}
    return max(1, math.ceil(len(_dumps(counted).encode()) / 4))


def count_tokens_response(request: ChatRequest) -> dict[str, int]:
    """The answer to ``POST /v1/messages/count_tokens``: ``{"input_tokens": estimate}``.

    No Claude tokenizer is at hand, so this is ``estimate_input_tokens`` (about 4 bytes of JSON a
    token); agents use it to budget their context, where a rough count is enough.
    """
    return {"input_tokens": estimate_input_tokens(request)}


class AnthropicCodec:
    """The Messages API codec; see the module docstring."""

    name = "anthropic"

    def decode_request(self, body: Mapping[str, Any]) -> ChatRequest:
        """A Messages API request body -> ChatRequest; BadRequest names a malformed field."""
        return _decode(body, need_max_tokens=True)

    encode_request = staticmethod(encode_request)
    encode_response = staticmethod(encode_response)
    sse_prelude = staticmethod(sse_prelude)
    sse_keepalive = staticmethod(sse_keepalive)
    sse_completion = staticmethod(sse_completion)
    decode_response = staticmethod(decode_response)
    decode_stream = staticmethod(decode_stream)


CODEC = AnthropicCodec()
