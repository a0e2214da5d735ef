"""The one internal format of model traffic, whatever wire format an agent speaks.

Every intercepted call is decoded into a ``ChatRequest`` (messages, tools, sampling
parameters), answered with a ``Completion`` (text, reasoning, tool calls, finish
reason, usage, and token ids + logprobs when the responder has them), and encoded
back into the agent's own wire format. Codecs for the three wire formats live next
to this module; each converts both ways, streaming and not.

Content that kwaigym does not interpret (images, documents, cache-control marks,
provider-specific fields) is kept in ``raw`` / ``extra`` so that a round trip loses
nothing a client sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]
WireFormat = Literal["anthropic", "openai-chat", "openai-responses"]


@attrs.frozen(kw_only=True)
class TextPart:
    """Plain text."""

    text: str
    extra: Mapping[str, Any] = attrs.field(factory=dict)
    """Wire fields kwaigym does not interpret (e.g. Anthropic ``cache_control``), kept for round trips."""


@attrs.frozen(kw_only=True)
class ReasoningPart:
    """Model reasoning ("thinking"), with the provider's signature or encrypted form when given."""

    text: str
    signature: str | None = None
    """Anthropic thinking signature / OpenAI Responses encrypted content; must be echoed unchanged."""
    redacted: bool = False
    """Anthropic ``redacted_thinking``: ``text`` then holds the opaque data."""
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ImagePart:
    """An image, or any other content block kwaigym does not interpret (documents, search results,
    server-tool blocks), passed through untouched in its wire form; ``raw["type"]`` says which."""

    raw: Mapping[str, Any]
    """The content block exactly as the client sent it."""


@attrs.frozen(kw_only=True)
class ToolCall:
    """One call of a tool by the assistant."""

    id: str
    name: str
    arguments: str
    """JSON text of the arguments, as the model produced it (may be invalid JSON: kept as is)."""
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ToolResult:
    """The result of one tool call, sent back by the agent."""

    call_id: str
    content: Sequence[TextPart | ImagePart]
    is_error: bool = False
    extra: Mapping[str, Any] = attrs.field(factory=dict)


Part = TextPart | ReasoningPart | ImagePart | ToolCall | ToolResult


@attrs.frozen(kw_only=True)
class Message:
    """One message of the conversation.

    ``system``: instructions (Anthropic's top-level ``system`` becomes the first such message;
    ``role: system`` entries inside ``messages``, as Claude Code sends them, stay in place).
    ``user``: text and images, and tool results (Anthropic sends them in user messages).
    ``assistant``: text, reasoning and tool calls. ``tool``: one tool result (OpenAI chat).
    """

    role: Role
    content: Sequence[Part]
    name: str | None = None
    extra: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def text(self) -> str:
        """The concatenated text parts."""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [p for p in self.content if isinstance(p, ToolCall)]


@attrs.frozen(kw_only=True)
class Tool:
    """A tool the model may call."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = attrs.field(factory=dict)
    """JSON schema of the arguments."""
    extra: Mapping[str, Any] = attrs.field(factory=dict)
    """Other fields (Anthropic server tools, ``cache_control``, OpenAI ``strict``...)."""


@attrs.frozen(kw_only=True)
class SamplingParams:
    """How to sample; None means "not given by the client"."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: Sequence[str] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    reasoning: Mapping[str, Any] = attrs.field(factory=dict)
    """Reasoning settings as sent (Anthropic ``thinking``, OpenAI ``reasoning``/``reasoning_effort``)."""


@attrs.frozen(kw_only=True)
class ChatRequest:
    """One model call, normalised."""

    format: WireFormat
    """The wire format it arrived in (and its answer must go back in)."""
    model: str
    messages: Sequence[Message]
    tools: Sequence[Tool] = ()
    tool_choice: Any = None
    """As sent: ``"auto"``, ``"none"``, ``"required"``/``"any"``, or a named tool (wire form)."""
    params: SamplingParams = attrs.field(factory=SamplingParams)
    stream: bool = False
    include_usage: bool = False
    """OpenAI chat ``stream_options.include_usage``: send a final usage chunk."""
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    """Client metadata (Anthropic ``metadata``, OpenAI ``user``/``metadata``)."""
    extra: Mapping[str, Any] = attrs.field(factory=dict)
    """Top-level fields kwaigym does not interpret, kept for forwarding upstream."""


@attrs.frozen(kw_only=True)
class Usage:
    """Token counts of one call. ``input_tokens`` is the whole prompt, cached parts included (Anthropic's
    wire ``input_tokens`` excludes cache reads and writes; its codec adds them)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


@attrs.frozen(kw_only=True)
class TokenLogprob:
    """One generated token with its log-probability (and the top alternatives when asked)."""

    token: str
    logprob: float
    token_id: int | None = None
    top: Sequence[tuple[str, float]] = ()


@attrs.frozen(kw_only=True)
class Completion:
    """The answer to a ``ChatRequest``."""

    text: str = ""
    reasoning: Sequence[ReasoningPart] = ()
    tool_calls: Sequence[ToolCall] = ()
    finish_reason: FinishReason = "stop"
    usage: Usage = attrs.field(factory=Usage)
    model: str | None = None
    id: str | None = None
    prompt_token_ids: Sequence[int] | None = None
    """Token ids of the prompt as the engine saw it, when the responder knows them."""
    token_ids: Sequence[int] | None = None
    """Token ids of the completion, when known."""
    logprobs: Sequence[TokenLogprob] | None = None
    """Per-token log-probabilities of the completion, when known."""

    def __attrs_post_init__(self):
        # A completion that calls tools ended because of them; scripted answers need not say so.
        if self.tool_calls and self.finish_reason == "stop":
            object.__setattr__(self, "finish_reason", "tool_calls")
