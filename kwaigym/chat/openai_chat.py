"""OpenAI Chat Completions (``POST /v1/chat/completions``), both ways, streaming and not.

Spoken by OpenCode (and other agents on the Vercel AI SDK), the ``openai`` SDK, and vLLM,
SGLang and every "OpenAI-compatible" server (the usual ``UpstreamResponder`` target).

Interpreted request fields: ``model``; ``messages`` with roles ``system``, ``developer`` (a system
message whose ``extra`` holds ``role: developer``), ``user``, ``assistant`` (``tool_calls``;
``reasoning_content``, or vLLM's ``reasoning``, as a ``ReasoningPart``) and ``tool`` (one
``ToolResult``); ``tools`` (``type: function`` only); ``tool_choice``; ``max_tokens`` or
``max_completion_tokens``; ``temperature``; ``top_p``; ``top_k`` (vLLM, SGLang); ``stop``; ``seed``;
``logprobs``; ``top_logprobs``; ``stream``; ``stream_options.include_usage``; ``reasoning_effort`` and
``reasoning`` (-> ``params.reasoning``); ``user`` and ``metadata`` (-> ``metadata``); ``n`` is
checked (only 1). Everything else (``response_format``, ``parallel_tool_calls``, legacy
``functions``/``function_call``, vendor fields) stays in ``extra``; content blocks other than text
(``image_url``, ``input_audio``, ``file``, ``refusal``) are kept whole as ``ImagePart.raw``.

Round trips: a field whose value equals kwaigym's default (``false``, ``null``, ``""``, ``[]``, ``{}``)
also stays in ``extra``, and ``extra`` keeps a few wire forms as markers (a ``stop`` string, the
``max_completion_tokens`` name; text sent as blocks keeps ``type`` in ``TextPart.extra``), so
``encode_request(decode_request(body)) == body``. One normalisation: a tool call without ``type``
gets ``type: function``.

A request that arrived in another wire format is translated: its ``extra`` fields are not sent,
``tool_choice`` is mapped, tool results become ``tool`` messages, Anthropic and Responses images
become ``image_url`` blocks.

Answers carry ``reasoning_content``, usage with ``prompt_tokens_details.cached_tokens`` and
``completion_tokens_details.reasoning_tokens`` (``Usage.input_tokens`` is the whole prompt, as
``prompt_tokens``), and token ids where vLLM puts them: ``choices[0].token_ids`` and a top-level
``prompt_token_ids`` (in a stream: on the first chunk after the prelude). Decoding also reads
SGLang's ``choices[0].prompt_token_ids`` and ``usage.reasoning_tokens``; an upstream error or an
unreadable answer raises ``InfraError``, and a stream cut off before its finish reason decodes
with ``finish_reason="error"``. ``TokenLogprob.token_id`` is read from ``token_ids`` when they match
the logprobs one to one, else from vLLM's ``token_id:N`` tokens.

Limits: chat has no reasoning signatures, redacted reasoning, tool-error flag or cache-write count:
they are not sent; several reasoning parts go out joined as one. A stream carries usage only when
the request asked for it (``include_usage``). Tool types other than ``function`` (``custom``) and
the deprecated ``function`` role are refused with ``BadRequest``.
"""

from __future__ import annotations

import json
import re
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
from kwaigym.errors import InfraError

_IDS: Kind = (lambda v: isinstance(v, list) and all(INT[0](x) for x in v), "a list of integers")
_ANY: Kind = (lambda v: True, "a value")
_CONTENT: Kind = (lambda v: isinstance(v, str | list), "a string or a list of content blocks")
_STOP: Kind = (lambda v: isinstance(v, str | list), "a string or a list of strings")
_ROLES = ("system", "developer", "user", "assistant", "tool")
_REASONING_KEYS = ("reasoning_effort", "reasoning")
_METADATA_KEYS = ("user", "metadata")
_FINISH: dict[str, FinishReason] = {k: k for k in ("stop", "length", "tool_calls", "content_filter", "error")}
_FINISH |= {"function_call": "tool_calls", "abort": "error"}  # legacy; vLLM and SGLang for aborted requests
_TOKEN_ID = re.compile(r"token_id:(\d+)")  # vLLM's return_tokens_as_token_ids


# --- requests: wire -> ChatRequest ------------------------------------------------------------------


def _blocks(value: Any, path: str) -> list[TextPart | ImagePart]:
    """Message content: a string is one text part; blocks other than text are kept whole."""
    if isinstance(value, str):
        return [TextPart(text=value)]
    parts: list[TextPart | ImagePart] = []
    for i, block in enumerate(check(value, _CONTENT, path)):
        f = Fields(block, f"{path}[{i}]")
        if (kind := f.read("type", STR, required=True)) == "text":
            parts.append(TextPart(text=f.take("text", STR, required=True), extra=f.extra))
            continue
        if kind == "image_url":
            Fields(f.read("image_url", OBJ, required=True), f"{f.path}.image_url").read(
                "url", STR, required=True
            )
        parts.append(ImagePart(raw=dict(block)))
    return parts


def _tool_call(raw: Any, path: str) -> ToolCall:
    f = Fields(raw, path)
    call_id = f.take("id", STR, required=True)
    if f.take("type", STR, "function") != "function":
        raise BadRequest(f"{path}.type: expected 'function', got {raw['type']!r}")
    f.extra.pop("type", None)
    fn = Fields(f.take("function", OBJ, required=True), f"{path}.function")
    name, arguments = fn.take("name", STR, required=True), fn.take("arguments", STR, required=True)
    return ToolCall(
        id=call_id,
        name=name,
        arguments=arguments,
        extra=f.extra | ({"function": fn.extra} if fn.extra else {}),
    )


def _assistant(f: Fields) -> list[Part]:
    parts: list[Part] = []
    # SGLang and DeepSeek send reasoning_content, vLLM reasoning; when both come the second stays in extra
    if sent := [k for k in ("reasoning_content", "reasoning") if f.read(k, STR) is not None]:
        marker = {"field": "reasoning"} if sent[0] == "reasoning" else {}
        parts.append(ReasoningPart(text=f.take(sent[0], STR), extra=marker))
    if f.read("content", _CONTENT) not in (None, []):  # null and [] stay in extra, echoed as sent
        parts += _blocks(f.take("content", _CONTENT), f"{f.path}.content")
    calls = f.take("tool_calls", LIST, [])
    return parts + [_tool_call(c, f"{f.path}.tool_calls[{i}]") for i, c in enumerate(calls)]


def _message(raw: Any, path: str) -> Message:
    f = Fields(raw, path)
    role = f.take("role", STR, required=True)
    if role not in _ROLES:
        raise BadRequest(f"{path}.role: expected one of {', '.join(_ROLES)}, got {role!r}")
    name = f.take("name", STR)
    if role == "assistant":
        return Message(role="assistant", content=_assistant(f), name=name, extra=f.extra)
    content = _blocks(f.read("content", _CONTENT, required=True), f"{path}.content")
    del f.extra["content"]
    if role == "tool":
        result = ToolResult(call_id=f.take("tool_call_id", STR, required=True), content=content)
        return Message(role="tool", content=[result], name=name, extra=f.extra)
    if role == "developer":
        f.extra["role"] = "developer"
    return Message(role="user" if role == "user" else "system", content=content, name=name, extra=f.extra)


def _tool(raw: Any, path: str) -> Tool:
    outer = Fields(raw, path)
    if outer.take("type", STR, required=True) != "function":
        raise BadRequest(
            f"{path}.type: expected 'function' (other tool types are not supported), got {raw['type']!r}"
        )
    f = Fields(outer.take("function", OBJ, required=True), f"{path}.function")
    name, description, parameters = (
        f.take("name", STR, required=True),
        f.take("description", STR, ""),
        f.take("parameters", OBJ, {}),
    )
    return Tool(
        name=name,
        description=description,
        parameters=parameters,
        extra=f.extra | ({"tool": outer.extra} if outer.extra else {}),
    )


def _params(f: Fields) -> SamplingParams:
    if isinstance(stop := f.read("stop", _STOP), list):  # a string stays in extra, to be sent back as one
        stop = [check(s, STR, f"stop[{i}]") for i, s in enumerate(f.take("stop", LIST, []))]
    if (n := f.read("n", INT)) is not None and n != 1:
        raise BadRequest(f"n: only n=1 is supported (one completion per call), got {n}")
    # max_completion_tokens stays in extra: it marks the name to send the limit under
    max_tokens, _ = f.read("max_completion_tokens", INT), f.read("max_tokens", INT)
    reasoning = {k: f.take(k, STR if k == "reasoning_effort" else OBJ) for k in _REASONING_KEYS}
    return SamplingParams(
        max_tokens=f.take("max_tokens", INT) if max_tokens is None else max_tokens,
        temperature=f.take("temperature", NUM),
        top_p=f.take("top_p", NUM),
        top_k=f.take("top_k", INT),
        stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
        seed=f.take("seed", INT),
        logprobs=f.take("logprobs", BOOL, False),
        top_logprobs=f.take("top_logprobs", INT),
        reasoning={k: v for k, v in reasoning.items() if v is not None},
    )


def decode_request(body: Mapping[str, Any]) -> ChatRequest:
    """A request body -> ChatRequest; a malformed body raises ``BadRequest`` naming the field."""
    f = Fields(body, "")
    model = f.take("model", STR, required=True)
    if not (raw_messages := f.read("messages", LIST, required=True)):
        raise BadRequest("messages: expected at least one message, got an empty list")
    del f.extra["messages"]
    messages = [_message(m, f"messages[{i}]") for i, m in enumerate(raw_messages)]
    tools = [_tool(t, f"tools[{i}]") for i, t in enumerate(f.take("tools", LIST, []))]
    options = Fields(f.read("stream_options", OBJ) or {}, "stream_options")
    if include_usage := bool(options.take("include_usage", BOOL, False)):
        f.extra.pop("stream_options")
        f.extra |= {"stream_options": options.extra} if options.extra else {}
    metadata = {k: f.take(k, STR if k == "user" else OBJ) for k in _METADATA_KEYS}
    return ChatRequest(
        format="openai-chat",
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=f.take("tool_choice", CHOICE),
        params=_params(f),
        stream=f.take("stream", BOOL, False),
        include_usage=include_usage,
        metadata={k: v for k, v in metadata.items() if v is not None},
        extra=f.extra,
    )


# --- requests: ChatRequest -> wire ------------------------------------------------------------------


def _image(raw: Mapping[str, Any]) -> dict[str, Any]:
    """An image block in chat form; Anthropic and Responses image blocks become ``image_url``."""
    if raw.get("type") == "image" and isinstance(source := raw.get("source"), Mapping):
        url = source.get("url") or f"data:{source.get('media_type')};base64,{source.get('data')}"
        return {"type": "image_url", "image_url": {"url": url}}
    if raw.get("type") == "input_image" and isinstance(raw.get("image_url"), str):
        return {"type": "image_url", "image_url": {"url": raw["image_url"]}}
    return dict(raw)


def _content(parts: Sequence[Part]) -> str | list[dict[str, Any]]:
    """A lone plain text part is a string; anything else (or text sent as blocks) is a block list."""
    if len(parts) == 1 and isinstance(parts[0], TextPart) and not parts[0].extra:
        return parts[0].text
    return [
        {"type": "text", **p.extra, "text": p.text} if isinstance(p, TextPart) else _image(p.raw)
        for p in parts
        if isinstance(p, TextPart | ImagePart)
    ]


def _call(call: ToolCall, *, extra: bool = True) -> dict[str, Any]:
    wire = dict(call.extra) if extra else {}
    function = wire.pop("function", {}) | {"name": call.name, "arguments": call.arguments}
    return wire | {"id": call.id, "type": "function", "function": function}


def _messages(m: Message) -> list[dict[str, Any]]:
    """One message in chat form; tool results (in Anthropic user messages too) become tool messages."""
    head = {**m.extra, "role": m.extra.get("role", m.role)} | ({"name": m.name} if m.name is not None else {})
    results = [p for p in m.content if isinstance(p, ToolResult)]
    out = [
        head | {"role": "tool", "tool_call_id": r.call_id, "content": _content(r.content)} for r in results
    ]
    rest = [p for p in m.content if not isinstance(p, ToolResult)]
    if m.role != "assistant":
        return out + ([head | {"content": _content(rest)}] if rest or not results else [])
    msg = dict(head)
    if reasoning := [p for p in rest if isinstance(p, ReasoningPart) and not p.redacted]:
        msg[reasoning[0].extra.get("field", "reasoning_content")] = "".join(r.text for r in reasoning)
    if blocks := [p for p in rest if isinstance(p, TextPart | ImagePart)]:
        msg["content"] = _content(blocks)
    if calls := [p for p in rest if isinstance(p, ToolCall)]:
        msg["tool_calls"] = [_call(c) for c in calls]
    return [*out, msg]


def _tool_wire(tool: Tool) -> dict[str, Any]:
    function = {k: v for k, v in tool.extra.items() if k != "tool"} | {"name": tool.name}
    function |= {"description": tool.description} if tool.description else {}
    function |= {"parameters": dict(tool.parameters)} if tool.parameters else {}
    return {**tool.extra.get("tool", {}), "type": "function", "function": function}


def _params_wire(out: dict[str, Any], p: SamplingParams) -> None:
    if p.max_tokens is not None:
        out["max_completion_tokens" if out.get("max_completion_tokens") is not None else "max_tokens"] = (
            p.max_tokens
        )
    values = {
        "temperature": p.temperature,
        "top_p": p.top_p,
        "top_k": p.top_k,
        "seed": p.seed,
        "logprobs": p.logprobs or None,
        "top_logprobs": p.top_logprobs,
    }
    out |= {k: v for k, v in values.items() if v is not None}
    out |= {k: v for k, v in p.reasoning.items() if k in _REASONING_KEYS}
    wire = out.get("stop")  # a string here is the client's own form of the same stop
    if p.stop and not (isinstance(wire, str) and tuple(p.stop) == (wire,)):
        out["stop"] = list(p.stop)
    elif not p.stop and isinstance(wire, str):
        del out["stop"]


def _translated(request: ChatRequest) -> ChatRequest:
    """A request from another wire format, without its wire-specific extras and with chat's tool choice."""

    def bare(x: Any) -> Any:
        if isinstance(x, ToolResult):
            x = attrs.evolve(x, content=[bare(p) for p in x.content])
        return attrs.evolve(x, extra={}) if hasattr(x, "extra") else x

    # Anthropic {"type": "auto" | "any" | "none" | "tool", name?}; Responses {"type": "function", name}
    choice = request.tool_choice
    if isinstance(choice, Mapping):
        name = choice.get("name") or (choice.get("function") or {}).get("name")
        choice = {"type": "function", "function": {"name": name}} if name else choice.get("type")
    messages = [attrs.evolve(m, extra={}, content=[bare(p) for p in m.content]) for m in request.messages]
    choice = "required" if choice == "any" else choice
    return attrs.evolve(
        request, messages=messages, tools=[bare(t) for t in request.tools], extra={}, tool_choice=choice
    )


def encode_request(request: ChatRequest) -> dict[str, Any]:
    """ChatRequest -> a request body, as the client sent it when it came in this format."""
    if request.format != "openai-chat":
        request = _translated(request)
    out = dict(request.extra) | {"model": request.model}
    out["messages"] = [w for m in request.messages for w in _messages(m)]
    if request.tools:
        out["tools"] = [_tool_wire(t) for t in request.tools]
    if request.tool_choice is not None:
        out["tool_choice"] = request.tool_choice
    _params_wire(out, request.params)
    if request.stream:
        out["stream"] = True
    if request.include_usage:
        out["stream_options"] = {**out.get("stream_options", {}), "include_usage": True}
    return out | {k: v for k, v in request.metadata.items() if k in _METADATA_KEYS}


# --- answers: Completion -> wire --------------------------------------------------------------------


def _usage(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def _logprobs(tokens: Sequence[TokenLogprob] | None) -> dict[str, Any] | None:
    def one(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    if tokens is None:
        return None
    return {"content": [one(t.token, t.logprob) | {"top_logprobs": [one(*a) for a in t.top]} for t in tokens]}


def _final(c: Completion, **fields: Any) -> dict[str, Any]:
    """The choice that ends the answer: finish reason, logprobs, and token ids where vLLM puts them."""
    ids = {"token_ids": list(c.token_ids)} if c.token_ids is not None else {}
    return {"index": 0, **fields, "logprobs": _logprobs(c.logprobs), "finish_reason": c.finish_reason} | ids


def encode_response(completion: Completion, request: ChatRequest, *, response_id: str) -> dict[str, Any]:
    """Completion -> a ``chat.completion`` object."""
    c = completion
    message: dict[str, Any] = {"role": "assistant", "content": c.text or (None if c.tool_calls else "")}
    if reasoning := "".join(r.text for r in c.reasoning if not r.redacted):
        message["reasoning_content"] = reasoning
    if c.tool_calls:
        message["tool_calls"] = [_call(t, extra=False) for t in c.tool_calls]
    body = {
        "id": response_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": c.model or request.model,
        "choices": [_final(c, message=message)],
        "usage": _usage(c.usage),
    }
    return body | ({"prompt_token_ids": list(c.prompt_token_ids)} if c.prompt_token_ids is not None else {})


def _chunk(request: ChatRequest, response_id: str, model: str | None, choices: list) -> dict[str, Any]:
    chunk = {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model or request.model,
        "choices": choices,
    }
    return chunk | ({"usage": None} if request.include_usage else {})


def _delta(delta: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]


def sse_prelude(request: ChatRequest, *, response_id: str) -> bytes:
    """The first chunk, as OpenAI sends it: the role, and empty content."""
    return sse.event(_chunk(request, response_id, None, _delta({"role": "assistant", "content": ""})))


def sse_completion(completion: Completion, request: ChatRequest, *, response_id: str) -> bytes:
    """Reasoning, text and each tool call (arguments whole) in one delta each; the finish; usage; [DONE]."""
    c, deltas = completion, []
    if reasoning := "".join(r.text for r in c.reasoning if not r.redacted):
        deltas.append({"reasoning_content": reasoning})
    if c.text:
        deltas.append({"content": c.text})
    deltas += [{"tool_calls": [{"index": i} | _call(t, extra=False)]} for i, t in enumerate(c.tool_calls)]
    chunks = [_chunk(request, response_id, c.model, _delta(d)) for d in deltas]
    chunks.append(_chunk(request, response_id, c.model, [_final(c, delta={})]))
    if c.prompt_token_ids is not None:
        chunks[0]["prompt_token_ids"] = list(c.prompt_token_ids)
    if request.include_usage:
        chunks.append(_chunk(request, response_id, c.model, []) | {"usage": _usage(c.usage)})
    return b"".join(sse.event(chunk) for chunk in chunks) + sse.event("[DONE]")


def sse_keepalive() -> bytes:
    """An SSE comment: every client skips it, and it resets idle timers."""
    return sse.comment()


# --- answers: wire -> Completion (an upstream server's) ---------------------------------------------


def _token(raw: Any, path: str, token_id: int | None) -> TokenLogprob:
    f = Fields(raw, path)
    token, logprob = f.read("token", STR, required=True), f.read("logprob", NUM, required=True)
    alts = [Fields(a, f"{path}.top_logprobs[{i}]") for i, a in enumerate(f.read("top_logprobs", LIST) or [])]
    top = tuple((a.read("token", STR, required=True), a.read("logprob", NUM, required=True)) for a in alts)
    if token_id is None and (match := _TOKEN_ID.fullmatch(token)):
        token_id = int(match.group(1))
    return TokenLogprob(token=token, logprob=logprob, token_id=token_id, top=top)


class _Answer:
    """An answer being read: one whole message, or the deltas of a stream added one by one."""

    def __init__(self) -> None:
        self.text = self.reasoning = ""
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        self.finish: str | None = None
        self.usage, self.model, self.id = Usage(), None, None
        self.prompt_token_ids: list[int] | None = None
        self.token_ids: list[int] | None = None
        self.logprobs: list[tuple[Any, str]] | None = None  # (raw entry, its path)

    def top(self, f: Fields) -> None:
        self.id, self.model = self.id or f.read("id", STR), self.model or f.read("model", STR)
        self.prompt_token_ids = f.read("prompt_token_ids", _IDS) or self.prompt_token_ids  # vLLM
        if (raw := f.read("usage", OBJ)) is None:
            return
        u = Fields(raw, f"{f.path}.usage")
        cached = Fields(u.read("prompt_tokens_details", OBJ) or {}, "").read("cached_tokens", INT) or 0
        details = Fields(u.read("completion_tokens_details", OBJ) or {}, "")
        reasoning = (
            details.read("reasoning_tokens", INT) or u.read("reasoning_tokens", INT) or 0
        )  # or SGLang's
        prompt, output = u.read("prompt_tokens", INT) or 0, u.read("completion_tokens", INT) or 0
        self.usage = Usage(
            input_tokens=prompt,
            output_tokens=output,
            cache_read_tokens=cached,
            reasoning_tokens=reasoning,
        )

    def add(self, choice: Fields, message: Fields, *, streamed: bool) -> None:
        self.text += message.read("content", STR) or ""
        self.reasoning += message.read("reasoning_content", STR) or message.read("reasoning", STR) or ""
        for i, call in enumerate(message.read("tool_calls", LIST) or []):
            self.call(Fields(call, f"{message.path}.tool_calls[{i}]"), None if streamed else i)
        self.finish = choice.read("finish_reason", STR) or self.finish
        if (ids := choice.read("token_ids", _IDS)) is not None:
            self.token_ids = (self.token_ids or []) + ids
        self.prompt_token_ids = choice.read("prompt_token_ids", _IDS) or self.prompt_token_ids  # SGLang
        if (lp := choice.read("logprobs", OBJ)) is not None:
            content = Fields(lp, f"{choice.path}.logprobs").read("content", LIST) or []
            path = f"{choice.path}.logprobs.content"
            self.logprobs = (self.logprobs or []) + [(x, f"{path}[{i}]") for i, x in enumerate(content)]

    def call(self, f: Fields, index: int | None) -> None:
        """One tool call, or a fragment of one, merged by ``index`` (by id for servers that omit it)."""
        call_id, index = f.read("id", STR), f.read("index", INT) if index is None else index
        if index is None:
            known = {entry[0]: i for i, entry in self.calls.items()}
            index = known.get(call_id, len(self.calls) if call_id or not self.calls else max(self.calls))
        fn, entry = (
            Fields(f.read("function", OBJ) or {}, f"{f.path}.function"),
            self.calls.setdefault(index, ["", "", ""]),
        )
        entry[0], entry[1] = entry[0] or call_id or "", entry[1] or fn.read("name", STR) or ""
        arguments = fn.read("arguments", _ANY)  # a string; some servers send an object
        entry[2] += (
            arguments if isinstance(arguments, str) else "" if arguments is None else json.dumps(arguments)
        )

    def completion(self, *, streamed: bool) -> Completion:
        ids, logprobs = self.token_ids, None
        if self.logprobs is not None:
            aligned = ids is not None and len(ids) == len(self.logprobs)
            logprobs = tuple(
                _token(x, p, ids[i] if aligned else None) for i, (x, p) in enumerate(self.logprobs)
            )
        calls = tuple(ToolCall(id=i, name=n, arguments=a) for _, (i, n, a) in sorted(self.calls.items()))
        return Completion(
            text=self.text,
            reasoning=(ReasoningPart(text=self.reasoning),) if self.reasoning else (),
            tool_calls=calls,
            finish_reason=_FINISH.get(self.finish, "stop")
            if self.finish
            else "error"
            if streamed
            else "stop",
            usage=self.usage,
            model=self.model,
            id=self.id,
            prompt_token_ids=None if self.prompt_token_ids is None else tuple(self.prompt_token_ids),
            token_ids=None if ids is None else tuple(ids),
            logprobs=logprobs,
        )


def decode_response(body: Mapping[str, Any]) -> Completion:
    """A ``chat.completion`` object (its first choice) -> Completion."""
    if isinstance(body, Mapping) and body.get("error") is not None and not body.get("choices"):
        raise InfraError(f"upstream chat completion error: {json.dumps(body['error'])[:500]}")
    try:
        f, answer = Fields(body, "response"), _Answer()
        if not (choices := f.read("choices", LIST, required=True)):
            raise BadRequest("response.choices: expected at least one choice, got an empty list")
        choice = Fields(choices[0], "response.choices[0]")
        message = Fields(choice.read("message", OBJ, required=True), f"{choice.path}.message")
        answer.top(f)
        answer.add(choice, message, streamed=False)
        return answer.completion(streamed=False)
    except BadRequest as exc:
        raise InfraError(f"unreadable upstream chat completion: {exc.message}") from None


def decode_stream(events: Iterable[tuple[str | None, str]]) -> Completion:
    """``chat.completion.chunk`` events -> Completion; a stream cut off before its finish is an error."""
    answer = _Answer()
    for _, data in events:
        if data.strip() == "[DONE]":
            break
        try:
            chunk = json.loads(data)
        except ValueError:
            raise InfraError(
                f"upstream chat completion stream: an event is not JSON: {data[:200]!r}"
            ) from None
        if isinstance(chunk, Mapping) and chunk.get("error") is not None:
            raise InfraError(f"upstream chat completion stream error: {json.dumps(chunk['error'])[:500]}")
        try:
            _add_chunk(answer, Fields(chunk, "chunk"))
        except BadRequest as exc:
            raise InfraError(f"unreadable upstream chat completion chunk: {exc.message}") from None
    return answer.completion(streamed=True)


def _add_chunk(answer: _Answer, f: Fields) -> None:
    answer.top(f)
    for i, raw in enumerate(f.read("choices", LIST) or []):
        choice = Fields(raw, f"chunk.choices[{i}]")
        if choice.read("index", INT) in (0, None):
            answer.add(choice, Fields(choice.read("delta", OBJ) or {}, f"{choice.path}.delta"), streamed=True)


CODEC = ModuleCodec("openai-chat", globals())
