"""Who answers an intercepted model call.

A responder turns a ``ChatRequest`` into a ``Completion``. Three ship with kwaigym:

- ``ScriptedResponder``: fixed answers in order, or a function of the request (tests,
  demos, the oracle and null policies);
- ``GymResponder``: hands each request to ``env.step`` and waits for the action;
- ``UpstreamResponder``: a real model server (SGLang, vLLM, any OpenAI-compatible
  server, or a hosted Anthropic/OpenAI API). Its credentials stay in this process:
  they are added to the outgoing request here and never reach a sandbox or a record.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

import attrs
import tenacity

from kwaigym.chat.codec import codec_for
from kwaigym.chat.types import ChatRequest, Completion, WireFormat
from kwaigym.errors import ConfigError, InfraError
from kwaigym.proxy.http1 import Http1Pool, TransportError

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class CallContext:
    """Where a call comes from."""

    episode_id: str
    call_id: str
    kind: str = "main"
    """``main``, ``sub-agent`` or ``auxiliary`` (see :mod:`kwaigym.proxy.tagging`)."""
    agent_id: str | None = None
    """The sub-agent's id, for ``sub-agent`` calls."""


class Responder(Protocol):
    async def respond(self, request: ChatRequest, ctx: CallContext) -> Completion: ...


Answer = Completion | str
ScriptFn = Callable[[ChatRequest, CallContext], Answer | Awaitable[Answer]]


class ScriptedResponder:
    """Answers from a script: a list consumed in order, or a function of each request.

    Args:
        script: answers (a ``Completion`` or plain text) in call order, or a function
            ``(request, ctx) -> answer`` (may be async).
        then: the answer once a list is used up (default: plain text "Done.").
    """

    def __init__(self, script: Iterable[Answer] | ScriptFn, *, then: Answer = "Done."):
        self._fn = script if callable(script) else None
        self._answers = None if callable(script) else list(script)
        self._then = then
        self.requests: list[ChatRequest] = []

    async def respond(self, request: ChatRequest, ctx: CallContext) -> Completion:
        self.requests.append(request)
        if self._fn is not None:
            answer = self._fn(request, ctx)
            answer = await answer if inspect.isawaitable(answer) else answer
        else:
            answer = self._answers.pop(0) if self._answers else self._then
        return Completion(text=answer) if isinstance(answer, str) else answer


@attrs.define
class PendingCall:
    """A request waiting for its action (``GymResponder``)."""

    ctx: CallContext
    request: ChatRequest
    answer: asyncio.Future


class GymResponder:
    """Hands requests to the environment and waits for their answers.

    ``respond`` queues the call; the env takes it with ``next_call()`` (its observation)
    and answers it with ``answer(call_id, completion)`` (its action). Concurrent calls of
    one episode (sub-agents) wait side by side, each under its own call id.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[PendingCall] = asyncio.Queue()
        self._pending: dict[str, PendingCall] = {}

    async def respond(self, request: ChatRequest, ctx: CallContext) -> Completion:
        call = PendingCall(ctx, request, asyncio.get_running_loop().create_future())
        self._pending[ctx.call_id] = call
        await self._queue.put(call)
        try:
            return await call.answer
        finally:
            self._pending.pop(ctx.call_id, None)

    async def next_call(self, timeout: float | None = None) -> PendingCall:
        """The next request waiting for an answer (``TimeoutError`` after ``timeout`` seconds)."""
        return await asyncio.wait_for(self._queue.get(), timeout)

    def answer(self, call_id: str, completion: Answer) -> None:
        call = self._pending.get(call_id)
        if call is None or call.answer.done():
            raise ConfigError(f"no call {call_id!r} is waiting for an answer (answered twice, or unknown)")
        call.answer.set_result(Completion(text=completion) if isinstance(completion, str) else completion)

    def close(self) -> None:
        """Cancel every call still waiting (its episode is over): nothing is left pending."""
        for call in self._pending.values():
            if not call.answer.done():
                call.answer.cancel()

    @property
    def waiting(self) -> list[str]:
        """Ids of calls still waiting for an answer."""
        return [cid for cid, call in self._pending.items() if not call.answer.done()]


class UpstreamError(InfraError):
    """The upstream model server failed (after retries) or answered something unreadable."""


class _Retryable(Exception):
    pass


def _cross_format(request: ChatRequest, target: WireFormat) -> ChatRequest:
    """Drop wire-specific extras when a request goes out in another format than it came in."""
    if request.format == target:
        return request
    messages = [
        attrs.evolve(
            m, extra={}, content=[attrs.evolve(p, extra={}) if hasattr(p, "extra") else p for p in m.content]
        )
        for m in request.messages
    ]
    tools = [attrs.evolve(t, extra={}) for t in request.tools]
    return attrs.evolve(request, format=target, messages=messages, tools=tools, extra={}, tool_choice=None)


class UpstreamResponder:
    """Answers from a real model server.

    Args:
        base_url: the server's API root, e.g. ``http://127.0.0.1:30000/v1``.
        format: its wire format (``openai-chat`` for SGLang/vLLM, ``anthropic``, ``openai-responses``).
        api_key: sent as the server expects; never leaves this process otherwise.
        model: overrides the model name the agent asked for.
        request_logprobs: ask OpenAI-compatible servers for logprobs and token ids.
        extra_body: fields merged into every upstream request.
        timeout: seconds for one upstream call; attempts: tries for transient failures.
    """

    def __init__(
        self,
        base_url: str,
        *,
        format: WireFormat = "openai-chat",  # noqa: A002 - the wire format's name
        api_key: str | None = None,
        model: str | None = None,
        request_logprobs: bool = True,
        extra_body: Mapping[str, Any] | None = None,
        timeout: float = 600.0,
        attempts: int = 4,
    ):
        self.format = format
        self.codec = codec_for(format)
        self.model = model
        self.request_logprobs = request_logprobs and format == "openai-chat"
        self.extra_body = dict(extra_body or {})
        self.attempts = attempts
        headers = {"content-type": "application/json"}
        if api_key and format == "anthropic":
            headers |= {"x-api-key": api_key, "anthropic-version": "2023-06-01"}
        elif api_key:
            headers["authorization"] = f"Bearer {api_key}"
        self._path = {"anthropic": "/messages", "openai-chat": "/chat/completions"}.get(format, "/responses")
        self._client = Http1Pool(base_url, headers, timeout=timeout)

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body = self.codec.encode_request(attrs.evolve(_cross_format(request, self.format), stream=False))
        body.pop("stream_options", None)
        if self.model:
            body["model"] = self.model
        if self.request_logprobs:
            body.setdefault("logprobs", True)
            body.setdefault("return_token_ids", True)  # vLLM; SGLang and others ignore unknown fields
        return body | self.extra_body

    async def respond(self, request: ChatRequest, ctx: CallContext) -> Completion:
        body = self._body(request)
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=0.5, max=20),
            before_sleep=lambda s: log.warning(
                "episode %s: upstream call failed (%s), retry %d",
                ctx.episode_id,
                s.outcome.exception(),
                s.attempt_number,
            ),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._once(body)
        except _Retryable as exc:
            raise UpstreamError(f"upstream {self._client.base_url} failed {self.attempts} times: {exc}",
                                episode_id=ctx.episode_id) from None  # fmt: skip

    async def _once(self, body: dict[str, Any]) -> Completion:
        try:
            status, raw = await self._client.post_json(self._path, body)
        except (TransportError, TimeoutError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        text = raw.decode(errors="replace")
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status}: {text[:300]}")
        if status >= 400:
            raise UpstreamError(f"upstream refused the request: HTTP {status}: {text[:500]}")
        try:
            return self.codec.decode_response(json.loads(raw))
        except Exception as exc:
            raise UpstreamError(f"unreadable upstream answer ({exc}): {text[:300]}") from exc

    async def aclose(self) -> None:
        await self._client.aclose()


def new_call_id() -> str:
    return f"call-{uuid.uuid4().hex[:12]}"
