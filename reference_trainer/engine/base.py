"""What every rollout engine shares: token-level samples, and the chat layer that turns agent requests
into prompts and samples into completions.

An engine implements ``agenerate`` (token ids in, a :class:`Sample` out) and ``aprefill_logprobs``
(score given sequences); :class:`ChatEngine` adds the rest: rendering a chat request with the model's
own chat template (tools included), the request's sampling, and reading Hermes tool calls
(``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``) out of the text. The local engine
(:mod:`reference_trainer.engine.local`) and the SGLang client (:mod:`reference_trainer.engine.sglang`)
are the two implementations; :class:`EngineResponder` makes either one a kwaigym responder.

``session`` names the trajectory a request belongs to (the episode id): an engine with several
servers sends one session's requests to one server, where its shared prefix is cached.
"""

from __future__ import annotations

import abc
import asyncio
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Literal

import attrs

from kwaigym.chat.types import ChatRequest, Completion, TokenLogprob, ToolCall, Usage
from kwaigym.errors import ConfigError
from kwaigym.proxy.responders import CallContext
from kwaigym.trajectory.export import chat_messages, chat_tools

_TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


def parse_tool_calls(text: str) -> tuple[str, list[ToolCall]]:
    """Split Hermes-style tool calls out of generated text; malformed ones stay in the text."""
    calls = []
    for match in _TOOL_CALL.finditer(text):
        try:
            data = json.loads(match.group(1))
            name, arguments = data["name"], data.get("arguments", {})
        except (ValueError, KeyError, TypeError):
            continue
        arguments = arguments if isinstance(arguments, str) else json.dumps(arguments)
        calls.append(ToolCall(id=f"call_{uuid.uuid4().hex[:12]}", name=str(name), arguments=arguments))
    if calls:
        text = _TOOL_CALL.sub("", text)
    return text.strip(), calls


def _within(low: float, high: float = float("inf"), *, open_low: bool = False):
    """An attrs validator raising ``ConfigError`` (a bad request, answered with 400 by the server)."""

    def check(instance, attribute, value):
        if isinstance(value, bool) or not (low < value <= high if open_low else low <= value <= high):
            interval = f"{'(' if open_low else '['}{low}, {high}{']' if high != float('inf') else ')'}"
            raise ConfigError(f"sampling: {attribute.name} must be in {interval}, got {value!r}")

    return check


@attrs.frozen(kw_only=True)
class SampleParams:
    """How to sample one prompt."""

    temperature: float = attrs.field(default=1.0, validator=_within(0.0))
    """0 is greedy (its log-probabilities are then at temperature 1)."""
    top_p: float = attrs.field(default=1.0, validator=_within(0.0, 1.0, open_low=True))
    """Nucleus sampling: draw among the smallest set of tokens holding this much probability."""
    max_new_tokens: int = attrs.field(default=512, validator=_within(1))
    """The row is cut at this many tokens (the batch runs to its longest limit)."""
    stop: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """The completion ends at the first of these strings (kept in the tokens, cut from ``text``)."""
    top_logprobs: int = attrs.field(default=0, validator=_within(0, 20))
    """How many most likely alternatives to report per token."""


@attrs.frozen(kw_only=True)
class Sample:
    """One sampled completion of a token prompt."""

    prompt_ids: tuple[int, ...]
    token_ids: tuple[int, ...]
    """What was drawn: an end-of-sequence token and the token that completed a stop string are kept."""
    logprobs: tuple[float, ...]
    """log p(token) under the policy: log_softmax(raw logits / ``logprob_temperature``), one per token."""
    finish_reason: Literal["stop", "length"]
    text: str
    """The decoded completion without special tokens, cut before the stop string if one matched."""
    top_logprobs: tuple[tuple[tuple[int, float], ...], ...] = ()
    """Per token, the ``top_logprobs`` most likely (token id, log-probability), when asked."""
    weights_version: int = 0
    """The engine's ``weights_version`` when it was sampled."""
    logprob_temperature: float = 1.0
    """The temperature ``logprobs`` are at: the sampling one (1 for greedy), or 1 where an engine
    reports raw log-probs. A trainer comparing them with its own must use the same temperature."""


class ChatEngine(abc.ABC):
    """The chat layer over a token-level engine: subclasses set ``tokenizer`` and implement
    ``agenerate`` and ``aprefill_logprobs``.

    Attributes every engine has: ``name`` (the model's name in answers), ``max_new_tokens`` (a
    request's ``max_tokens`` is capped by it), ``temperature``/``top_p`` (the policy's sampling),
    ``request_sampling`` (honour a request's own temperature and top-p instead), ``weights_version``.
    """

    tokenizer: object
    name: str = "model"
    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    request_sampling: bool = False
    weights_version: int = 0

    @abc.abstractmethod
    async def agenerate(
        self, prompt_ids: Sequence[int], params: SampleParams, *, session: str | None = None
    ) -> Sample:
        """Sample one completion of ``prompt_ids``; ``session`` keeps a trajectory on one server."""

    @abc.abstractmethod
    async def aprefill_logprobs(
        self, sequences: Sequence[Sequence[int]], *, passes: int = 1
    ) -> list[list[float]]:
        """Per sequence, log p(token_t | tokens before t) at temperature 1 for t >= 1 (``len - 1`` values);
        with ``passes`` > 1 the mean of that many independent forward passes (MCLA)."""

    @property
    def logprob_temperature(self) -> float:
        """The temperature a trainer computes its log-probs at, to compare with this engine's rollouts."""
        return self.temperature

    @abc.abstractmethod
    async def sync_from(self, model, tokenizer=None) -> int:
        """Make the engine sample from ``model``'s current weights (after an optimizer step).

        Returns the new ``weights_version``."""

    def render(self, request: ChatRequest) -> list[int]:
        """The prompt's token ids: the conversation and tools through the model's chat template."""
        messages = [m for group in chat_messages(request.messages, request) for m in group]
        tools = chat_tools(request) or None
        prompt = self.tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        return list(prompt["input_ids"] if isinstance(prompt, Mapping) else prompt)

    def params_for(self, request: ChatRequest) -> SampleParams:
        """A request's sampling: its token limit (capped), stop strings, and temperature/top-p if honoured."""
        p = request.params
        own = self.request_sampling
        return SampleParams(
            temperature=p.temperature if own and p.temperature is not None else self.temperature,
            top_p=p.top_p if own and p.top_p is not None else self.top_p,
            max_new_tokens=min(p.max_tokens or self.max_new_tokens, self.max_new_tokens),
            stop=tuple(p.stop),
            top_logprobs=p.top_logprobs or 0,
        )

    def to_completion(self, sample: Sample) -> Completion:
        """A ``Completion`` of a sample: Hermes tool calls read out of its text, tokens and logprobs kept."""
        text, calls = parse_tool_calls(sample.text)
        token = self.tokenizer.decode
        logprobs = [
            TokenLogprob(
                token=token([t]),
                token_id=t,
                logprob=lp,
                top=tuple((token([a]), v) for a, v in sample.top_logprobs[i]) if sample.top_logprobs else (),
            )
            for i, (t, lp) in enumerate(zip(sample.token_ids, sample.logprobs, strict=True))
        ]
        return Completion(
            text=text,
            tool_calls=calls,
            finish_reason="stop" if sample.finish_reason == "stop" or calls else "length",
            usage=Usage(input_tokens=len(sample.prompt_ids), output_tokens=len(sample.token_ids)),
            prompt_token_ids=list(sample.prompt_ids),
            token_ids=list(sample.token_ids),
            logprobs=logprobs,
        )

    async def acomplete(self, request: ChatRequest, *, session: str | None = None) -> Completion:
        """Sample one answer to ``request`` (rendering off the event loop)."""
        prompt = await asyncio.to_thread(self.render, request)
        return self.to_completion(await self.agenerate(prompt, self.params_for(request), session=session))

    def complete(self, request: ChatRequest, *, session: str | None = None) -> Completion:
        """``acomplete`` for synchronous callers (not from inside a running event loop)."""
        return self._run(self.acomplete(request, session=session))

    def prefill_logprobs(self, sequences: Sequence[Sequence[int]], *, passes: int = 1) -> list[list[float]]:
        """``aprefill_logprobs`` for synchronous callers (not from inside a running event loop)."""
        return self._run(self.aprefill_logprobs(sequences, passes=passes))

    def _run(self, coroutine):
        """Run ``coroutine`` in an event loop of its own (an engine may close what it opened there)."""
        return asyncio.run(coroutine)


class EngineResponder:
    """Answers every call with ``engine``; the call's episode is its session (one trajectory, one server)."""

    def __init__(self, engine: ChatEngine):
        self.engine = engine

    async def respond(self, request: ChatRequest, ctx: CallContext) -> Completion:
        return await self.engine.acomplete(request, session=ctx.episode_id)
