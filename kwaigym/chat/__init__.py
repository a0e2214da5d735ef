"""Normalised model traffic and the codecs of the three wire formats agents speak."""

from kwaigym.chat.codec import BadRequest, Codec, codec_for
from kwaigym.chat.types import (
    ChatRequest,
    Completion,
    ImagePart,
    Message,
    ReasoningPart,
    SamplingParams,
    TextPart,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolResult,
    Usage,
    WireFormat,
)

__all__ = [
    "BadRequest",
    "ChatRequest",
    "Codec",
    "Completion",
    "ImagePart",
    "Message",
    "ReasoningPart",
    "SamplingParams",
    "TextPart",
    "TokenLogprob",
    "Tool",
    "ToolCall",
    "ToolResult",
    "Usage",
    "WireFormat",
    "codec_for",
]
