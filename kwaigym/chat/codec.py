"""The contract every wire-format codec keeps, and the registry of the three.

A codec converts one wire format both ways:

- as a server (the proxy, facing an agent): ``decode_request`` turns the agent's JSON
  body into a ``ChatRequest``; ``encode_response`` turns a ``Completion`` into the JSON
  answer; a streamed answer is ``sse_prelude`` (sent at once, before the completion is
  known), any number of ``sse_keepalive`` while the policy thinks, then
  ``sse_completion`` (the rest of the event sequence, ending the stream as the
  format requires);
- as a client (``UpstreamResponder``, facing a model server): ``encode_request``
  turns a ``ChatRequest`` into a JSON body, and ``decode_response`` /
  ``decode_stream`` turn the server's answer into a ``Completion``.

Codecs are pure functions of their inputs (no I/O), so they are tested in isolation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from kwaigym.chat.types import ChatRequest, Completion, WireFormat
from kwaigym.errors import ConfigError


class Codec(Protocol):
    name: WireFormat

    def decode_request(self, body: Mapping[str, Any]) -> ChatRequest:
        """The agent's request body -> ChatRequest. Raises ``BadRequest`` naming the bad field."""

    def encode_request(self, request: ChatRequest) -> dict[str, Any]:
        """ChatRequest -> a request body for an upstream server of this format."""

    def encode_response(
        self, completion: Completion, request: ChatRequest, *, response_id: str
    ) -> dict[str, Any]:
        """Completion -> the non-streaming JSON answer."""

    def sse_prelude(self, request: ChatRequest, *, response_id: str) -> bytes:
        """SSE events that may go out before the completion is known (may be empty)."""

    def sse_keepalive(self) -> bytes:
        """An SSE event or comment that keeps the client's idle timer from firing."""

    def sse_completion(self, completion: Completion, request: ChatRequest, *, response_id: str) -> bytes:
        """The rest of the SSE event sequence, after the prelude, ending the stream properly."""

    def decode_response(self, body: Mapping[str, Any]) -> Completion:
        """An upstream server's non-streaming JSON answer -> Completion."""

    def decode_stream(self, events: Iterable[tuple[str | None, str]]) -> Completion:
        """An upstream server's SSE events, as (event name or None, data text) -> Completion."""


METHODS = (
    "decode_request", "encode_request", "encode_response", "sse_prelude", "sse_keepalive",
    "sse_completion", "decode_response", "decode_stream",
)  # fmt: skip


class ModuleCodec:
    """A codec whose methods are the functions of the same names in its module (``CODEC`` there)."""

    def __init__(self, name: WireFormat, module_globals: Mapping[str, Any]):
        self.name = name
        for method in METHODS:
            setattr(self, method, module_globals[method])


class BadRequest(ConfigError):
    """A request body that does not follow its wire format; answered with HTTP 400 and this message."""


def codec_for(name: WireFormat) -> Codec:
    """The codec of a wire format: ``anthropic``, ``openai-chat`` or ``openai-responses``."""
    import importlib

    if name not in _MODULES:
        raise ConfigError(f"unknown wire format {name!r}; expected one of {sorted(_MODULES)}")
    return importlib.import_module(f"kwaigym.chat.{_MODULES[name]}").CODEC


_MODULES = {"anthropic": "anthropic", "openai-chat": "openai_chat", "openai-responses": "openai_responses"}
