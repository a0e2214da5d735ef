"""The OpenAI Responses API (``POST /v1/responses``), both ways, streaming and not.

Spoken by Codex CLI (its only wire format) and by ``client.responses.create`` of the ``openai`` SDK.

Requests. ``instructions`` becomes the first message, a system message whose ``extra`` says
``from: instructions``; ``input`` is a string (one user message, ``extra`` ``from: input``) or a
list of items:

- ``message`` items (``type`` may be left out): roles ``user``, ``system``, ``developer`` (a system
  message whose ``extra`` says ``role: developer``), ``assistant``. ``input_text``/``output_text``
  parts become TextParts keeping ``type`` in ``extra`` (string content has none); other parts
  (``input_image``, ``input_file``, ``refusal``...) are kept whole as ``ImagePart.raw``;
- ``reasoning`` -> ReasoningPart: ``text`` is the summary texts joined by a blank line (or the
  ``reasoning_text`` content when there is no summary), ``signature`` the ``encrypted_content``;
- ``function_call`` -> ToolCall (its ``id`` is the ``call_id``);
- ``function_call_output`` -> a ``tool`` message holding one ToolResult;
- any other item (``local_shell_call``, ``custom_tool_call``, ``web_search_call``, ``compaction``,
  ``item_reference``...) -> an empty message whose ``extra["item"]`` is the item as sent (role
  ``assistant`` for ``*_call`` and ``compaction`` items, else ``user``).

Consecutive reasoning, function-call and (at most one) assistant message items form one assistant
message, as one model turn. Other fields of an item (``id``, ``status``, ``phase``, ``namespace``...)
stay in the ``extra`` of its message (message items) or part. Tools of ``type: function`` are
interpreted (``strict`` stays in ``extra``); every other tool (``web_search``, ``namespace``,
``custom``, MCP...) is kept whole as ``Tool.extra`` (its ``name``: the wire name, else its type).
Also interpreted: ``tool_choice``, ``max_output_tokens``, ``temperature``, ``top_p``,
``top_logprobs``, ``reasoning`` (-> ``params.reasoning`` as sent), ``include`` containing
``message.output_text.logprobs`` (-> ``params.logprobs``), ``stream``, ``user``/``metadata``
(-> ``metadata``). Everything else (``include``, ``store``, ``parallel_tool_calls``,
``prompt_cache_key``, ``text``, ``previous_response_id``, ``client_metadata``...) stays in
``extra``, and so do optional fields sent as ``null`` or as kwaigym's default (``false``, ``{}``),
so ``encode_request(decode_request(body)) == body`` as JSON. A request from another wire format is
translated: tool results become ``function_call_output`` items, images ``input_image`` parts.

Answers: a ``response`` object with reasoning items, one ``message`` (one ``output_text`` part,
``annotations: []``, ``logprobs`` when known) and ``function_call`` items; status ``completed``,
``incomplete`` (``incomplete_details.reason`` ``max_output_tokens`` = length, or
``content_filter``) or ``failed`` (finish reason ``error``). Reasoning text goes out as one summary
part. Item ids are ``rs_``/``msg_``/``fc_`` + ``<response id without resp_>_<output index>``
unless the part's ``extra`` has one; decoding drops ids of that form and ``status``, so answers
round-trip. A stream: ``response.created`` and
``response.in_progress`` (the prelude), per item ``output_item.added``, its part/delta/done events
(one delta each) and ``output_item.done``, then ``response.completed`` with the whole object, also
for an incomplete answer (OpenAI sends ``response.incomplete``, on which Codex fails the turn after
its stream retries). Every event has ``type`` and an increasing ``sequence_number``.

Usage: ``Usage.input_tokens`` is the whole prompt, cached parts included, as the wire's
``input_tokens`` (``input_tokens_details`` splits out the cached part).
Limits: token ids and the tool-error flag have no place in this format and are not sent;
``decode_response`` keeps no output items but reasoning, messages and function calls; the functions
nested in a ``namespace`` tool and ``custom`` (freeform) tools are not offered to a policy as Tools.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from kwaigym.chat import sse
from kwaigym.chat.codec import BadRequest, ModuleCodec
from kwaigym.chat.fields import BOOL, CHOICE, INT, LIST, NUM, OBJ, STR, Fields, Kind, check
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
    TokenLogprob,
    Tool,
    ToolCall,
    ToolResult,
    Usage,
)

_INPUT: Kind = (lambda v: isinstance(v, str | list), "a string or a list of items")
_CONTENT: Kind = (lambda v: isinstance(v, str | list), "a string or a list of content parts")
_ROLES = ("user", "assistant", "system", "developer")
_FROM = "from"  # Message.extra key: the top-level field (instructions, input) a message came from
_LOGPROBS = "message.output_text.logprobs"
_METADATA_KEYS = ("user", "metadata")
_ECHO = ("instructions", "tools", "tool_choice", "parallel_tool_calls", "temperature", "top_p")
_ECHO += ("max_output_tokens", "top_logprobs", "reasoning", "store", "text", "truncation", "metadata")
_ECHO += ("previous_response_id", "prompt_cache_key", "service_tier", "user")
_INCOMPLETE: dict[str, FinishReason] = {"max_output_tokens": "length", "content_filter": "content_filter"}
_TERMINAL = ("response.completed", "response.incomplete", "response.failed")
_PRELUDE_EVENTS = 2
_EMPTY: dict[str, dict[str, Any]] = {
    "message": {"content": []},
    "function_call": {"arguments": ""},
    "reasoning": {"summary": []},
}


# --- requests: wire -> ChatRequest ------------------------------------------------------------------


def _content(value: Any, path: str) -> list[TextPart | ImagePart]:
    """Message content or tool output: a string is one plain TextPart; non-text parts are kept whole."""
    if isinstance(value, str):
        return [TextPart(text=value)]
    parts: list[TextPart | ImagePart] = []
    for i, raw in enumerate(check(value, _CONTENT, path)):
        f = Fields(raw, f"{path}[{i}]")
        if f.read("type", STR, required=True) in ("input_text", "output_text"):
            parts.append(TextPart(text=f.take("text", STR, required=True), extra=f.extra))
        else:
            parts.append(ImagePart(raw=dict(raw)))
    return parts


def _joined(parts: Any) -> str:
    """The texts of summary or reasoning-text parts, joined by a blank line."""
    ok = isinstance(parts, list) and all(
        isinstance(p, Mapping) and isinstance(p.get("text"), str) for p in parts
    )
    return "\n\n".join(p["text"] for p in parts) if ok else ""


def _summary(text: str) -> list[dict[str, Any]]:
    return [{"type": "summary_text", "text": text}] if text else []


def _reasoning(f: Fields) -> ReasoningPart:
    summary, content = f.read("summary", LIST) or [], f.read("content", LIST)
    for key, parts in (("summary", summary), ("content", content or [])):
        for i, p in enumerate(parts):
            Fields(p, f"{f.path}.{key}[{i}]").read("text", STR, required=True)
    text = _joined(summary) or _joined(content)
    if f.obj.get("summary") == _summary(text) and content is None:
        f.extra.pop("summary", None)  # the usual form, rebuilt from the text
    f.extra.pop("type", None)
    return ReasoningPart(text=text, signature=f.take("encrypted_content", STR), extra=f.extra)


def _tool_call(f: Fields) -> ToolCall:
    f.extra.pop("type", None)
    call_id, name = f.take("call_id", STR, required=True), f.take("name", STR, required=True)
    return ToolCall(id=call_id, name=name, arguments=f.take("arguments", STR, required=True), extra=f.extra)


def _tool_result(f: Fields) -> Message:
    f.extra.pop("type", None)
    call_id = f.take("call_id", STR, required=True)
    content = _content(f.read("output", _CONTENT, required=True), f"{f.path}.output")
    del f.extra["output"]
    return Message(role="tool", content=[ToolResult(call_id=call_id, content=content, extra=f.extra)])


def _message(f: Fields) -> Message:
    role = f.take("role", STR, required=True)
    if role not in _ROLES:
        raise BadRequest(f"{f.path}.role: expected one of {', '.join(_ROLES)}, got {role!r}")
    content = _content(f.read("content", _CONTENT, required=True), f"{f.path}.content")
    del f.extra["content"]
    if role == "developer":
        f.extra["role"] = "developer"
    return Message(role="system" if role == "developer" else role, content=content, extra=f.extra)


def _raw_item(kind: str, raw: Mapping[str, Any]) -> Message:
    """An item kwaigym does not interpret, kept whole: an empty message carrying it in ``extra``."""
    role = "assistant" if kind.endswith("_call") or kind in ("compaction", "message") else "user"
    return Message(role=role, content=[], extra={"item": dict(raw)})


def _items(raw_items: list, path: str) -> list[Message]:
    """Input items -> messages; one model turn's reasoning, message and calls make one assistant message."""
    out: list[Message] = []
    turn = has_text = False  # the last message is an open assistant turn / it holds a message item
    for i, raw in enumerate(raw_items):
        f = Fields(raw, f"{path}[{i}]")
        kind = f.read("type", STR) or ("message" if "role" in f.obj else None)
        if kind is None:
            raise BadRequest(f"{f.path}: expected an item with a 'type' (or a message with a 'role')")
        if kind == "message":
            message = _message(f)
            if message.role != "assistant":
                out.append(message)
            elif not message.content:  # nothing to merge into a turn: kept as sent
                out.append(_raw_item(kind, raw))
            elif turn and not has_text:
                out[-1] = attrs.evolve(
                    out[-1], content=[*out[-1].content, *message.content], extra=message.extra
                )
            else:
                out.append(message)
            turn = has_text = message.role == "assistant" and bool(message.content)
        elif kind in ("reasoning", "function_call"):
            part = _reasoning(f) if kind == "reasoning" else _tool_call(f)
            if turn:
                out[-1] = attrs.evolve(out[-1], content=[*out[-1].content, part])
            else:
                out.append(Message(role="assistant", content=[part]))
                turn, has_text = True, False
        else:
            out.append(_tool_result(f) if kind == "function_call_output" else _raw_item(kind, raw))
            turn = False
    return out


def _tool(raw: Any, path: str) -> Tool:
    f = Fields(raw, path)
    kind = f.read("type", STR, required=True)
    if kind != "function":  # hosted, namespace, custom, MCP...: kept whole
        name = f.obj.get("name")
        return Tool(name=name if isinstance(name, str) else kind, extra=dict(raw))
    del f.extra["type"]
    name, description = f.take("name", STR, required=True), f.take("description", STR, "")
    return Tool(name=name, description=description, parameters=f.take("parameters", OBJ, {}), extra=f.extra)


def _params(f: Fields) -> SamplingParams:
    include = f.read("include", LIST) or []
    for i, value in enumerate(include):
        check(value, STR, f"include[{i}]")
    return SamplingParams(
        max_tokens=f.take("max_output_tokens", INT),
        temperature=f.take("temperature", NUM),
        top_p=f.take("top_p", NUM),
        logprobs=_LOGPROBS in include,  # include itself stays in extra
        top_logprobs=f.take("top_logprobs", INT),
        reasoning=f.take("reasoning", OBJ, {}),
    )


def decode_request(body: Mapping[str, Any]) -> ChatRequest:
    """A ``/v1/responses`` request body -> ChatRequest; a malformed one raises BadRequest naming the field."""
    f = Fields(body, "")
    model = f.take("model", STR, required=True)
    messages: list[Message] = []
    if (instructions := f.take("instructions", STR)) is not None:
        messages.append(
            Message(role="system", content=[TextPart(text=instructions)], extra={_FROM: "instructions"})
        )
    given = f.read("input", _INPUT, required=True)
    del f.extra["input"]
    if isinstance(given, str):
        messages.append(Message(role="user", content=[TextPart(text=given)], extra={_FROM: "input"}))
    else:
        messages += _items(given, "input")
    tools = [_tool(t, f"tools[{i}]") for i, t in enumerate(f.take("tools", LIST, []))]
    tool_choice, params = f.take("tool_choice", CHOICE), _params(f)
    metadata = {"user": f.take("user", STR, ""), "metadata": f.take("metadata", OBJ, {})}
    return ChatRequest(
        format="openai-responses",
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=tool_choice,
        params=params,
        stream=f.take("stream", BOOL, False),
        metadata={k: v for k, v in metadata.items() if v},
        extra=f.extra,
    )


# --- requests: ChatRequest -> wire ------------------------------------------------------------------


def _image(raw: Mapping[str, Any]) -> dict[str, Any]:
    """An ``input_image`` part; Anthropic ``image`` and chat ``image_url`` blocks are translated."""
    source, url = raw.get("source"), raw.get("image_url")
    if raw.get("type") == "image" and isinstance(source, Mapping):
        data = source.get("url") or f"data:{source.get('media_type')};base64,{source.get('data')}"
        return {"type": "input_image", "image_url": data, "detail": "auto"}
    if raw.get("type") == "image_url" and isinstance(url, Mapping):
        return {"type": "input_image", "image_url": url.get("url"), "detail": url.get("detail", "auto")}
    return dict(raw)


def _content_wire(parts: Sequence[Part], text_type: str) -> str | list[dict[str, Any]]:
    """A lone plain text part is a string; anything else (or text sent as parts) is a part list."""
    if len(parts) == 1 and isinstance(parts[0], TextPart) and not parts[0].extra:
        return parts[0].text
    wire: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, TextPart):
            wire.append({"type": text_type, **p.extra, "text": p.text})
        elif isinstance(p, ImagePart):
            wire.append(_image(p.raw))
    return wire


def _reasoning_item(part: ReasoningPart) -> dict[str, Any]:
    item = {"type": "reasoning", **part.extra}
    if "summary" not in item or (_joined(item["summary"]) or _joined(item.get("content"))) != part.text:
        item["summary"] = _summary(part.text)  # the summary as sent, unless the text was changed
    if part.signature is not None:
        item["encrypted_content"] = part.signature
    return item


def _call_item(call: ToolCall) -> dict[str, Any]:
    return {
        "type": "function_call",
        **call.extra,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
    }


def _message_items(m: Message) -> list[dict[str, Any]]:
    """One message as input items; tool results (in Anthropic user messages too) become outputs."""
    if isinstance(m.extra.get("item"), Mapping):
        return [dict(m.extra["item"])]
    results = [p for p in m.content if isinstance(p, ToolResult)]
    items = [
        {
            "type": "function_call_output",
            **r.extra,
            "call_id": r.call_id,
            "output": _content_wire(r.content, "input_text"),
        }
        for r in results
    ]
    rest = [p for p in m.content if not isinstance(p, ToolResult)]
    head = {k: v for k, v in m.extra.items() if k != _FROM}
    if m.role != "assistant":
        if rest or not results:
            role = head.get("role", "user" if m.role == "tool" else m.role)
            items.append({**head, "role": role, "content": _content_wire(rest, "input_text")})
        return items
    run: list[Part] = []
    for p in [*rest, None]:  # runs of text and images are message items, in their place among the rest
        if isinstance(p, TextPart | ImagePart):
            run.append(p)
            continue
        if run:
            items.append({**head, "role": "assistant", "content": _content_wire(run, "output_text")})
            head, run = {}, []
        if isinstance(p, ReasoningPart):
            items.append(_reasoning_item(p))
        elif isinstance(p, ToolCall):
            items.append(_call_item(p))
    return items


def _tool_wire(tool: Tool) -> dict[str, Any]:
    if tool.extra.get("type", "function") != "function":
        return dict(tool.extra)
    wire = {"type": "function", "name": tool.name, **tool.extra}
    wire |= ({"description": tool.description} if tool.description else {}) | (
        {"parameters": dict(tool.parameters)} if tool.parameters else {}
    )
    return wire


def _reasoning_wire(reasoning: Mapping[str, Any]) -> dict[str, Any]:
    """``reasoning`` as sent; chat's ``reasoning_effort`` is translated, Anthropic ``thinking`` dropped."""
    if "reasoning_effort" in reasoning:
        return {"effort": reasoning["reasoning_effort"]}
    if isinstance(reasoning.get("reasoning"), Mapping):
        return dict(reasoning["reasoning"])
    return {} if reasoning.get("type") in ("enabled", "disabled", "adaptive") else dict(reasoning)


def encode_request(request: ChatRequest) -> dict[str, Any]:
    """ChatRequest -> a request body; the inverse of ``decode_request`` for requests in this format."""
    out = dict(request.extra) | {"model": request.model}
    messages = list(request.messages)
    if messages and messages[0].extra.get(_FROM) == "instructions":
        out["instructions"] = messages.pop(0).text
    if len(messages) == 1 and messages[0].extra.get(_FROM) == "input":
        out["input"] = messages[0].text
    else:
        out["input"] = [item for m in messages for item in _message_items(m)]
    if request.tools:
        out["tools"] = [_tool_wire(t) for t in request.tools]
    if request.tool_choice is not None:
        out["tool_choice"] = request.tool_choice
    p = request.params
    values = {"max_output_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p}
    out.update({k: v for k, v in values.items() if v is not None})
    if p.top_logprobs is not None:
        out["top_logprobs"] = p.top_logprobs
    if reasoning := _reasoning_wire(p.reasoning):
        out["reasoning"] = reasoning
    include = out.get("include") if isinstance(out.get("include"), list) else []
    if p.logprobs and _LOGPROBS not in include:
        out["include"] = [*include, _LOGPROBS]
    if request.stream:
        out["stream"] = True
    out.update({k: v for k, v in request.metadata.items() if k in _METADATA_KEYS})
    return out


# --- answers: Completion -> wire --------------------------------------------------------------------


def _usage(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "input_tokens_details": {
            "cached_tokens": u.cache_read_tokens,
            "cache_write_tokens": u.cache_write_tokens,
        },
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.input_tokens + u.output_tokens,
    }


def _logprob(t: TokenLogprob) -> dict[str, Any]:
    def one(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return one(t.token, t.logprob) | {"top_logprobs": [one(token, lp) for token, lp in t.top]}


def _output(c: Completion, response_id: str) -> list[dict[str, Any]]:
    """Output items: reasoning, the message, then function calls; ids made up where the part has none."""
    base, items = response_id.removeprefix("resp_"), []
    for r in c.reasoning:
        items.append({"id": f"rs_{base}_{len(items)}", **_reasoning_item(r)})
    if c.text or c.logprobs is not None or not (c.reasoning or c.tool_calls):
        text = {"type": "output_text", "text": c.text, "annotations": []}
        text |= {"logprobs": [_logprob(t) for t in c.logprobs]} if c.logprobs is not None else {}
        message = {"type": "message", "status": "completed", "role": "assistant", "content": [text]}
        items.append({"id": f"msg_{base}_{len(items)}", **message})
    for call in c.tool_calls:
        items.append({"id": f"fc_{base}_{len(items)}", **_call_item(call), "status": "completed"})
    return items


def _response(request: ChatRequest, response_id: str, completion: Completion | None) -> dict[str, Any]:
    """The ``response`` object: in progress (no completion yet) or finished; echoes the request's settings."""
    settings = encode_request(attrs.evolve(request, messages=request.messages[:1]))  # all but the input
    echo = {"instructions": None, "tools": [], "tool_choice": "auto", "parallel_tool_calls": True}
    echo |= {"temperature": None, "top_p": None, "metadata": {}}
    echo |= {k: v for k, v in settings.items() if k in _ECHO}
    status, details, error, output, usage = "in_progress", None, None, [], None
    if completion is not None:
        status, output, usage = "completed", _output(completion, response_id), _usage(completion.usage)
        if completion.finish_reason in ("length", "content_filter"):
            reason = "max_output_tokens" if completion.finish_reason == "length" else "content_filter"
            status, details = "incomplete", {"reason": reason}
        elif completion.finish_reason == "error":
            status, error = "failed", {"code": "server_error", "message": "the model failed to answer"}
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": error,
        "incomplete_details": details,
        "model": (completion and completion.model) or request.model,
        "output": output,
        "usage": usage,
        **echo,
    }


def encode_response(completion: Completion, request: ChatRequest, *, response_id: str) -> dict[str, Any]:
    """The finished ``response`` object (not streamed)."""
    return _response(request, response_id, completion)


def _sse(events: list[tuple[str, dict[str, Any]]], first: int) -> bytes:
    return b"".join(
        sse.event({"type": kind, "sequence_number": first + i, **fields}, name=kind)
        for i, (kind, fields) in enumerate(events)
    )


def _item_events(item: dict[str, Any], index: int) -> list[tuple[str, dict[str, Any]]]:
    """The events that stream one finished output item: added, its parts and deltas, done."""
    at, kind = {"item_id": item["id"], "output_index": index}, item["type"]
    start = {k: v for k, v in item.items() if k not in ("encrypted_content", "content")}
    start |= {"status": "in_progress"} | _EMPTY.get(kind, {})
    events = [("response.output_item.added", {"output_index": index, "item": start})]
    if kind == "function_call":
        events.append(("response.function_call_arguments.delta", {**at, "delta": item["arguments"]}))
        done = {**at, "name": item["name"], "arguments": item["arguments"]}
        events.append(("response.function_call_arguments.done", done))
    for j, part in enumerate(item["content"] if kind == "message" else []):
        on, logprobs = {**at, "content_index": j}, {"logprobs": part.get("logprobs", [])}
        empty = {**part, "text": ""} | ({"logprobs": []} if "logprobs" in part else {})
        events.append(("response.content_part.added", {**on, "part": empty}))
        events.append(("response.output_text.delta", {**on, "delta": part["text"], **logprobs}))
        events.append(("response.output_text.done", {**on, "text": part["text"], **logprobs}))
        events.append(("response.content_part.done", {**on, "part": part}))
    for j, part in enumerate(item["summary"] if kind == "reasoning" else []):
        on = {**at, "summary_index": j}
        events.append(("response.reasoning_summary_part.added", {**on, "part": {**part, "text": ""}}))
        events.append(("response.reasoning_summary_text.delta", {**on, "delta": part["text"]}))
        events.append(("response.reasoning_summary_text.done", {**on, "text": part["text"]}))
        events.append(("response.reasoning_summary_part.done", {**on, "part": part}))
    for j, part in enumerate(item.get("content") or [] if kind == "reasoning" else []):
        events.append(("response.reasoning_text.delta", {**at, "content_index": j, "delta": part["text"]}))
        events.append(("response.reasoning_text.done", {**at, "content_index": j, "text": part["text"]}))
    return [*events, ("response.output_item.done", {"output_index": index, "item": item})]


def sse_prelude(request: ChatRequest, *, response_id: str) -> bytes:
    """``response.created`` and ``response.in_progress``, with the response still empty."""
    response = _response(request, response_id, None)
    return _sse(
        [("response.created", {"response": response}), ("response.in_progress", {"response": response})], 0
    )


def sse_keepalive() -> bytes:
    """An SSE comment: the SDK and Codex skip it, and it resets their idle timers."""
    return sse.comment()


def sse_completion(completion: Completion, request: ChatRequest, *, response_id: str) -> bytes:
    """Every output item's events, then ``response.completed`` (``response.failed`` for an error)."""
    response = _response(request, response_id, completion)
    events = [e for i, item in enumerate(response["output"]) for e in _item_events(item, i)]
    end = "response.failed" if response["status"] == "failed" else "response.completed"
    return _sse([*events, (end, {"response": response})], _PRELUDE_EVENTS)


# --- answers: wire -> Completion --------------------------------------------------------------------


def _token(raw: Any, path: str) -> TokenLogprob:
    f = Fields(raw, path)
    alts = [Fields(t, f"{path}.top_logprobs[{j}]") for j, t in enumerate(f.read("top_logprobs", LIST) or [])]
    top = tuple((a.read("token", STR, required=True), a.read("logprob", NUM, required=True)) for a in alts)
    return TokenLogprob(
        token=f.read("token", STR, required=True), logprob=f.read("logprob", NUM, required=True), top=top
    )


def _usage_of(f: Fields) -> Usage:
    if (raw := f.read("usage", OBJ)) is None:
        return Usage()
    u = Fields(raw, f"{f.path}.usage")
    given = Fields(u.read("input_tokens_details", OBJ) or {}, f"{u.path}.input_tokens_details")
    made = Fields(u.read("output_tokens_details", OBJ) or {}, f"{u.path}.output_tokens_details")
    cached, written = given.read("cached_tokens", INT) or 0, given.read("cache_write_tokens", INT) or 0
    return Usage(
        input_tokens=u.read("input_tokens", INT) or 0,
        output_tokens=u.read("output_tokens", INT) or 0,
        cache_read_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=made.read("reasoning_tokens", INT) or 0,
    )


def _finish(f: Fields) -> FinishReason:
    status = f.read("status", STR)
    if status == "incomplete":
        details = f.read("incomplete_details", OBJ) or {}
        return _INCOMPLETE.get(details.get("reason"), "length")  # type: ignore[arg-type]
    return "stop" if status in ("completed", None) else "error"


def _completion(body: Any, path: str) -> Completion:
    """A ``response`` object -> Completion; ids ``encode_response`` made up and ``status`` are dropped."""
    f = Fields(body, path)
    base, texts, logprobs = (f.read("id", STR) or "").removeprefix("resp_"), [], None
    reasoning: list[ReasoningPart] = []
    calls: list[ToolCall] = []
    for i, raw in enumerate(f.read("output", LIST, required=True)):
        item = Fields(raw, f"{path}.output[{i}]")
        kind = item.read("type", STR, required=True)
        prefix = {"reasoning": "rs", "message": "msg", "function_call": "fc"}.get(kind)
        if item.read("id", STR) == f"{prefix}_{base}_{i}":
            del item.extra["id"]
        item.extra.pop("status", None)
        if kind == "reasoning":
            reasoning.append(_reasoning(item))
        elif kind == "function_call":
            calls.append(_tool_call(item))
        elif kind == "message":
            for j, part in enumerate(_content(item.read("content", LIST) or [], f"{item.path}.content")):
                if isinstance(part, TextPart) and part.extra.get("type") == "output_text":
                    texts.append(part.text)
                    where = f"{item.path}.content[{j}].logprobs"
                    if "logprobs" in part.extra:
                        given = enumerate(check(part.extra["logprobs"], LIST, where))
                        logprobs = (*(logprobs or ()), *(_token(t, f"{where}[{k}]") for k, t in given))
    return Completion(
        text="".join(texts),
        reasoning=tuple(reasoning),
        tool_calls=tuple(calls),
        finish_reason=_finish(f),
        usage=_usage_of(f),
        model=f.read("model", STR),
        id=f.read("id", STR),
        logprobs=logprobs,
    )


def decode_response(body: Mapping[str, Any]) -> Completion:
    """A ``response`` object -> Completion; an error answer (no output) raises ``BadRequest``."""
    if isinstance(body, Mapping) and body.get("error") is not None and not body.get("output"):
        raise BadRequest(f"the server answered with an error: {json.dumps(body['error'])[:500]}")
    return _completion(body, "response")


_DELTAS = {
    "response.output_text.delta": ("content", "content_index", "output_text"),
    "response.reasoning_summary_text.delta": ("summary", "summary_index", "summary_text"),
    "response.reasoning_text.delta": ("content", "content_index", "reasoning_text"),
}


def _follow(items: dict[int, dict[str, Any]], kind: str, event: Mapping[str, Any]) -> None:
    """Rebuild output items from their events, for a stream that ends without the final response."""
    index, delta = event.get("output_index"), event.get("delta")
    if not isinstance(index, int):
        return
    if kind in ("response.output_item.added", "response.output_item.done"):
        if isinstance(event.get("item"), Mapping):
            items[index] = copy.deepcopy(dict(event["item"]))
        return
    item = items.get(index)
    if item is None or not isinstance(delta, str):
        return
    if kind == "response.function_call_arguments.delta" and isinstance(item.get("arguments", ""), str):
        item["arguments"] = item.get("arguments", "") + delta
    elif kind in _DELTAS:
        key, slot, part_type = _DELTAS[kind]
        parts, j = item.setdefault(key, []), event.get(slot)
        if isinstance(parts, list) and isinstance(j, int) and 0 <= j < 10_000:
            parts += [{"type": part_type, "text": ""} for _ in range(j + 1 - len(parts))]
            if isinstance(parts[j], dict) and isinstance(parts[j].get("text", ""), str):
                parts[j]["text"] = parts[j].get("text", "") + delta


def decode_stream(events: Iterable[tuple[str | None, str]]) -> Completion:
    """Response events -> Completion: the final ``response`` object, or else what the events built.

    A stream that ends without ``response.completed`` (cut off) gives ``finish_reason="error"``.
    """
    final, head, items = None, {}, {}
    for name, data in events:
        if data.strip() == "[DONE]":
            break
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise BadRequest(f"stream: an event is not JSON ({exc}): {data[:200]}") from None
        event = check(event, OBJ, "stream event")
        kind = event.get("type", name)
        if kind == "error":
            raise BadRequest(f"the server sent an error in the stream: {json.dumps(event)[:500]}")
        if kind in _TERMINAL:
            final = check(event.get("response"), OBJ, f"stream: {kind}.response")
        elif kind in ("response.created", "response.in_progress") and isinstance(
            event.get("response"), Mapping
        ):
            head = event["response"]
        else:
            _follow(items, kind, event)
    built = [items[i] for i in sorted(items)]
    if final is None:
        return _completion({**head, "status": "in_progress", "output": built}, "stream")
    return decode_response({**final, "output": final.get("output") or built})


CODEC = ModuleCodec("openai-responses", globals())
