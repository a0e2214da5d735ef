"""The OpenAI Chat Completions codec: round trips, validation, upstream streams, the SDK, OpenCode traffic."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs
import openai
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kwaigym.chat import sse
from kwaigym.chat.codec import BadRequest
from kwaigym.chat.openai_chat import CODEC
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
)
from kwaigym.errors import InfraError

FIXTURES = Path(__file__).parent / "fixtures" / "openai-chat"
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    },
}

FULL_BODY: dict[str, Any] = {
    "model": "gpt-5",
    "messages": [
        {"role": "developer", "content": "Be terse."},
        {"role": "system", "content": [{"type": "text", "text": "Rules."}], "name": "rules"},
        {"role": "user", "content": [{"type": "text", "text": "Look:"}, IMAGE], "name": "ann"},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "Need the weather twice.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{bad json"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rain"}]},
        {"role": "assistant", "content": "Sunny, and rain.", "reasoning": "vLLM's field name."},
        {"role": "user", "content": "Thanks."},
    ],
    "tools": [WEATHER, {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": True,
    "max_completion_tokens": 512,
    "temperature": 0.2,
    "top_p": 0.9,
    "stop": ["\n\nUser:", "END"],
    "seed": 7,
    "logprobs": True,
    "top_logprobs": 3,
    "n": 1,
    "stream": True,
    "stream_options": {"include_usage": True, "include_obfuscation": False},
    "user": "user-1",
    "metadata": {"run": "r1"},
    "reasoning_effort": "low",
    "response_format": {"type": "text"},
    "frequency_penalty": 0.0,
    "return_token_ids": True,
}


def roundtrip(body: dict[str, Any]) -> dict[str, Any]:
    return CODEC.encode_request(CODEC.decode_request(body))


def body(**fields: Any) -> dict[str, Any]:
    """A minimal valid request body with some fields replaced."""
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}]} | fields


# --- requests ------------------------------------------------------------------------------------


def test_registered_under_its_name():
    """codec_for("openai-chat") is this codec (once the sibling codecs exist)."""
    assert CODEC.name == "openai-chat"
    pytest.importorskip("kwaigym.chat.openai_responses")
    from kwaigym.chat.codec import codec_for

    assert codec_for("openai-chat") is CODEC


def test_full_body_round_trips():
    """Every field of a request using every role and field comes back unchanged."""
    assert roundtrip(FULL_BODY) == FULL_BODY


def test_full_body_decodes_to_normalised_parts():
    """Roles, parts, tools and sampling parameters land in their normalised places."""
    r = CODEC.decode_request(FULL_BODY)
    assert (r.format, r.model, r.stream, r.include_usage) == ("openai-chat", "gpt-5", True, True)
    dev, system, user, call, res1, res2, answer, last = r.messages
    assert (dev.role, dev.text, dev.extra) == ("system", "Be terse.", {"role": "developer"})
    assert (system.role, system.text, system.name) == ("system", "Rules.", "rules")
    assert user.content == [TextPart(text="Look:", extra={"type": "text"}), ImagePart(raw=IMAGE)]
    assert call.content[0] == ReasoningPart(text="Need the weather twice.")
    assert [(c.id, c.name, c.arguments) for c in call.tool_calls] == [
        ("call_1", "get_weather", '{"city":"Paris"}'),
        ("call_2", "get_weather", "{bad json"),
    ]
    assert res1 == Message(
        role="tool", content=[ToolResult(call_id="call_1", content=[TextPart(text="sunny")])]
    )
    assert res2.content[0].content == [TextPart(text="rain", extra={"type": "text"})]
    assert answer.content == [
        ReasoningPart(text="vLLM's field name.", extra={"field": "reasoning"}),
        TextPart(text="Sunny, and rain."),
    ]
    assert last.text == "Thanks."
    assert r.tools[0] == Tool(
        name="get_weather",
        description="Weather of a city.",
        parameters=WEATHER["function"]["parameters"],
        extra={"strict": True},
    )
    assert r.tool_choice == FULL_BODY["tool_choice"]
    assert r.params == SamplingParams(
        max_tokens=512,
        temperature=0.2,
        top_p=0.9,
        stop=("\n\nUser:", "END"),
        seed=7,
        logprobs=True,
        top_logprobs=3,
        reasoning={"reasoning_effort": "low"},
    )
    assert r.metadata == {"user": "user-1", "metadata": {"run": "r1"}}
    assert r.extra["parallel_tool_calls"] is True and r.extra["response_format"] == {"type": "text"}
    assert r.extra["stream_options"] == {"include_obfuscation": False}


@pytest.mark.parametrize(
    "fields",
    [
        {"max_tokens": 100},
        {"max_completion_tokens": 100},
        {"max_tokens": 100, "max_completion_tokens": 200},
        {"max_tokens": None, "temperature": None, "tools": None, "tool_choice": None},
        {"stop": "END"},
        {"stop": []},
        {"stop": None},
        {"logprobs": False, "stream": False, "n": 1},
        {"tools": [], "metadata": {}, "user": ""},
        {"stream_options": {"include_usage": False}},
        {"stream_options": {}},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"tool_choice": "required", "parallel_tool_calls": False},
        {"top_k": 20, "min_p": 0.05, "chat_template_kwargs": {"enable_thinking": False}},
        {"reasoning": {"effort": "high"}},
        {"functions": [{"name": "f", "parameters": {}}], "function_call": "auto"},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {}, "strict": True},
            }
        },
    ],
)
def test_top_level_variants_round_trip(fields):
    """Each form of each top-level field (including explicit null, false, [] and {}) comes back as sent."""
    assert roundtrip(body(**fields)) == body(**fields)


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": ""},
        {"role": "user", "content": []},
        {"role": "user", "content": [{"type": "text", "text": "a"}]},
        {"role": "user", "content": [{"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}}]},
        {
            "role": "user",
            "content": [{"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}],
        },
        {"role": "user", "content": [{"type": "file", "file": {"file_id": "f1"}}], "name": ""},
        {"role": "system", "content": "s", "name": None},
        {"role": "developer", "content": [{"type": "text", "text": "d"}], "name": "n"},
        {"role": "assistant", "content": "a"},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": None},
        {"role": "assistant"},
        {"role": "assistant", "content": []},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "a"}, {"type": "refusal", "refusal": "no"}],
        },
        {"role": "assistant", "content": "a", "tool_calls": []},
        {"role": "assistant", "content": "a", "refusal": None, "audio": None, "function_call": None},
        {"role": "assistant", "content": "a", "reasoning_content": ""},
        {"role": "assistant", "content": "a", "reasoning_content": None, "reasoning": "r"},
        {"role": "assistant", "content": "a", "reasoning_content": "r", "reasoning": "r"},
        {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": ""}, "x": 1},
                {"id": "d", "type": "function", "function": {"name": "g", "arguments": "{}", "y": 2}},
            ],
        },
        {"role": "tool", "tool_call_id": "c", "content": ""},
        {"role": "tool", "tool_call_id": "c", "content": [], "name": "f"},
    ],
)
def test_message_variants_round_trip(message):
    """Each message form (content string, blocks, null, absent; reasoning fields; extras) comes back."""
    sent = body(messages=[message])
    assert roundtrip(sent) == sent


@pytest.mark.parametrize(
    "tool",
    [
        {"type": "function", "function": {"name": "f"}},
        {"type": "function", "function": {"name": "f", "description": "", "parameters": {}}},
        {
            "type": "function",
            "function": {"name": "f", "strict": None},
            "cache_control": {"type": "ephemeral"},
        },
        WEATHER,
    ],
)
def test_tool_variants_round_trip(tool):
    """Tools with and without description, parameters, strict, and fields outside ``function``."""
    assert roundtrip(body(tools=[tool])) == body(tools=[tool])


def test_tool_call_without_type_gets_it():
    """The one normalisation: a tool call lacking ``type`` is sent back with ``type: function``."""
    call = {"id": "c", "function": {"name": "f", "arguments": "{}"}}
    sent = body(messages=[{"role": "assistant", "tool_calls": [call]}])
    assert roundtrip(sent)["messages"][0]["tool_calls"] == [call | {"type": "function"}]


def test_edited_request_keeps_the_clients_field_names():
    """Changing interpreted values after decoding writes them under the names the client used."""
    r = CODEC.decode_request(body(max_completion_tokens=10, stop="END", stream=True))
    edited = attrs.evolve(r, params=attrs.evolve(r.params, max_tokens=99, stop=("X", "Y")), stream=False)
    wire = CODEC.encode_request(edited)
    assert (wire["max_completion_tokens"], wire["stop"], "max_tokens" in wire, "stream" in wire) == (
        99,
        ["X", "Y"],
        False,
        False,
    )
    cleared = CODEC.encode_request(attrs.evolve(r, params=attrs.evolve(r.params, stop=())))
    assert "stop" not in cleared


def test_request_from_another_format_is_translated():
    """An Anthropic request goes out as chat: no foreign extras; tool messages, image_url, tool choice."""
    anthropic_image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
    }
    request = ChatRequest(
        format="anthropic",
        model="claude",
        messages=[
            Message(
                role="system", content=[TextPart(text="sys", extra={"cache_control": {"type": "ephemeral"}})]
            ),
            Message(role="user", content=[TextPart(text="look"), ImagePart(raw=anthropic_image)]),
            Message(
                role="assistant",
                content=[
                    ReasoningPart(text="hm", signature="sig"),
                    TextPart(text="ok"),
                    ToolCall(id="toolu_1", name="Bash", arguments='{"command":"ls"}'),
                ],
            ),
            Message(
                role="user",
                content=[
                    ToolResult(call_id="toolu_1", content=[TextPart(text="a.py")]),
                    TextPart(text="go on"),
                ],
            ),
        ],
        tools=[Tool(name="Bash", parameters={"type": "object"}, extra={"cache_control": {}})],
        tool_choice={"type": "any"},
        params=SamplingParams(max_tokens=100, reasoning={"thinking": {"type": "enabled"}}),
        metadata={"user_id": "u"},
        extra={"context_management": {}},
    )
    assert CODEC.encode_request(request) == {
        "model": "claude",
        "messages": [
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
            {
                "role": "assistant",
                "reasoning_content": "hm",
                "content": "ok",
                "tool_calls": [
                    {
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "Bash", "arguments": '{"command":"ls"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_1", "content": "a.py"},
            {"role": "user", "content": "go on"},
        ],
        "tools": [{"type": "function", "function": {"name": "Bash", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
        "max_tokens": 100,
    }


def test_n_other_than_one_is_refused():
    """Only one completion per call: n=2 is a BadRequest saying so."""
    with pytest.raises(BadRequest, match=r"n: only n=1 is supported .*got 2"):
        CODEC.decode_request(body(n=2))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([], r"request body: expected an object, got list"),
        ({"messages": []}, r"model: expected a string, got no such field"),
        (body(model=3), r"model: expected a string, got int"),
        (body(messages=None), r"messages: expected a list, got null"),
        (body(messages=[]), r"messages: expected at least one message"),
        (body(messages=["hi"]), r"messages\[0\]: expected an object, got str"),
        (body(messages=[{"content": "x"}]), r"messages\[0\]\.role: expected a string, got no such field"),
        (
            body(messages=[{"role": "bot", "content": "x"}]),
            r"messages\[0\]\.role: expected one of system, .*'bot'",
        ),
        (body(messages=[{"role": "function", "name": "f", "content": "x"}]), r"got 'function'"),
        (
            body(messages=[{"role": "user"}]),
            r"messages\[0\]\.content: expected a string or a list of content",
        ),
        (
            body(messages=[{"role": "user", "content": 5}]),
            r"messages\[0\]\.content: expected a string or a list of content blocks, got int",
        ),
        (
            body(messages=[{"role": "user", "content": [5]}]),
            r"messages\[0\]\.content\[0\]: expected an object, got int",
        ),
        (
            body(messages=[{"role": "user", "content": [{"text": "a"}]}]),
            r"content\[0\]\.type: expected a string",
        ),
        (
            body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
            r"content\[0\]\.text: expected a string",
        ),
        (
            body(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": "u"}]}]),
            r"image_url: expected an object, got str",
        ),
        (
            body(messages=[{"role": "user", "content": "x", "name": 1}]),
            r"messages\[0\]\.name: expected a string, got int",
        ),
        (
            body(messages=[{"role": "tool", "content": "x"}]),
            r"messages\[0\]\.tool_call_id: expected a string",
        ),
        (
            body(messages=[{"role": "assistant", "content": 1}]),
            r"messages\[0\]\.content: expected a string or a list",
        ),
        (
            body(messages=[{"role": "assistant", "reasoning_content": 1}]),
            r"reasoning_content: expected a string, got int",
        ),
        (
            body(messages=[{"role": "assistant", "tool_calls": {}}]),
            r"tool_calls: expected a list, got object",
        ),
        (
            body(messages=[{"role": "assistant", "tool_calls": [{"type": "function"}]}]),
            r"tool_calls\[0\]\.id: expected a string",
        ),
        (
            body(
                messages=[{"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {}}]}]
            ),
            r"tool_calls\[0\]\.type: expected 'function', got 'custom'",
        ),
        (
            body(
                messages=[
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": {}}}],
                    }
                ]
            ),
            r"tool_calls\[0\]\.function\.arguments: expected a string, got object",
        ),
        (body(tools={}), r"tools: expected a list, got object"),
        (body(tools=[{"function": {"name": "f"}}]), r"tools\[0\]\.type: expected a string"),
        (
            body(tools=[{"type": "custom", "custom": {"name": "f"}}]),
            r"tools\[0\]\.type: expected 'function' .*'custom'",
        ),
        (
            body(tools=[{"type": "function", "function": {"description": "d"}}]),
            r"tools\[0\]\.function\.name: expected a string",
        ),
        (
            body(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
            r"function\.parameters: expected an object, got list",
        ),
        (body(tool_choice=1), r"tool_choice: expected a string or an object, got int"),
        (body(max_tokens="9"), r"max_tokens: expected an integer, got str"),
        (body(max_completion_tokens=1.5), r"max_completion_tokens: expected an integer, got float"),
        (body(temperature="hot"), r"temperature: expected a number, got str"),
        (body(top_p=True), r"top_p: expected a number, got bool"),
        (body(stop=3), r"stop: expected a string or a list of strings, got int"),
        (body(stop=["a", 3]), r"stop\[1\]: expected a string, got int"),
        (body(seed=1.0), r"seed: expected an integer, got float"),
        (body(logprobs="yes"), r"logprobs: expected a boolean, got str"),
        (body(n="1"), r"n: expected an integer, got str"),
        (body(stream=1), r"stream: expected a boolean, got int"),
        (body(stream_options=[]), r"stream_options: expected an object, got list"),
        (body(stream_options={"include_usage": "y"}), r"stream_options\.include_usage: expected a boolean"),
        (body(user=5), r"user: expected a string, got int"),
        (body(metadata="m"), r"metadata: expected an object, got str"),
        (body(reasoning_effort=1), r"reasoning_effort: expected a string, got int"),
    ],
)
def test_malformed_bodies_are_bad_requests(bad, message):
    """A malformed body raises BadRequest naming the field, what was expected and what came."""
    with pytest.raises(BadRequest, match=message):
        CODEC.decode_request(bad)


# --- fuzzing -------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
TEXT = st.text(max_size=6)


def mostly(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Usually a valid value, sometimes any JSON."""
    return st.one_of(valid, valid, valid, JSON)


BLOCK = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": mostly(TEXT)}, optional={"zz": JSON}),
    st.fixed_dictionaries(
        {
            "type": mostly(st.sampled_from(["image_url", "file"])),
            "image_url": mostly(st.fixed_dictionaries({"url": mostly(TEXT)})),
        }
    ),
    st.dictionaries(st.sampled_from(["type", "text", "image_url"]), JSON, max_size=3),
)
CONTENT = mostly(st.one_of(TEXT, st.lists(BLOCK, max_size=3)))
CALL = st.fixed_dictionaries(
    {
        "id": mostly(TEXT),
        "function": mostly(st.fixed_dictionaries({"name": mostly(TEXT), "arguments": mostly(TEXT)})),
    },
    optional={"type": mostly(st.just("function")), "zz": JSON},
)
MESSAGE = st.fixed_dictionaries(
    {"role": mostly(st.sampled_from(["system", "developer", "user", "assistant", "tool"]))},
    optional={
        "content": CONTENT,
        "name": mostly(TEXT),
        "tool_call_id": mostly(TEXT),
        "tool_calls": mostly(st.lists(CALL, max_size=2)),
        "reasoning_content": mostly(st.one_of(TEXT, st.none())),
        "reasoning": mostly(TEXT),
        "zz": JSON,
    },
)
TOOL = st.fixed_dictionaries(
    {
        "type": mostly(st.just("function")),
        "function": mostly(
            st.fixed_dictionaries(
                {"name": mostly(TEXT)},
                optional={
                    "description": mostly(TEXT),
                    "parameters": mostly(st.dictionaries(TEXT, JSON, max_size=2)),
                    "strict": JSON,
                },
            )
        ),
    }
)
NEAR_VALID = st.fixed_dictionaries(
    {"model": mostly(TEXT), "messages": mostly(st.lists(MESSAGE, max_size=4))},
    optional={
        "tools": mostly(st.lists(TOOL, max_size=2)),
        "tool_choice": mostly(st.one_of(TEXT, st.dictionaries(TEXT, JSON, max_size=2))),
        "max_tokens": mostly(st.integers(0, 10**6)),
        "max_completion_tokens": mostly(st.integers(0, 10**6)),
        "temperature": mostly(st.floats(0, 2)),
        "top_p": mostly(st.floats(0, 1)),
        "top_k": mostly(st.integers(-1, 100)),
        "stop": mostly(st.one_of(TEXT, st.lists(mostly(TEXT), max_size=2))),
        "seed": mostly(st.integers()),
        "logprobs": mostly(st.booleans()),
        "top_logprobs": mostly(st.integers(0, 20)),
        "n": mostly(st.just(1)),
        "stream": mostly(st.booleans()),
        "stream_options": mostly(
            st.fixed_dictionaries({}, optional={"include_usage": mostly(st.booleans()), "zz": JSON})
        ),
        "user": mostly(TEXT),
        "metadata": mostly(st.dictionaries(TEXT, TEXT, max_size=2)),
        "reasoning_effort": mostly(TEXT),
        "reasoning": mostly(st.dictionaries(TEXT, JSON, max_size=2)),
        "response_format": JSON,
    },
)


def with_call_types(sent: dict[str, Any]) -> dict[str, Any]:
    """``sent`` with ``type: function`` on every assistant tool call (the documented normalisation)."""

    def typed(m: dict[str, Any]) -> dict[str, Any]:
        if m.get("role") != "assistant" or not m.get("tool_calls"):
            return m
        return m | {"tool_calls": [{"type": "function"} | c for c in m["tool_calls"]]}

    return sent | {"messages": [typed(m) for m in sent["messages"]]}


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.one_of(JSON, NEAR_VALID))
def test_fuzzed_bodies_raise_only_bad_request_and_round_trip_when_valid(fuzzed):
    """Any JSON body either raises BadRequest or decodes and re-encodes to itself."""
    try:
        request = CODEC.decode_request(fuzzed)
    except BadRequest:
        return
    assert CODEC.encode_request(request) == with_call_types(fuzzed)


# --- answers -------------------------------------------------------------------------------------

REQUEST = CODEC.decode_request(body(stream=True, stream_options={"include_usage": True}))
LOGPROBS = (
    TokenLogprob(token="Hi", logprob=-0.01, token_id=13347, top=(("Hi", -0.01), ("Hello", -4.6))),
    TokenLogprob(token=" é", logprob=-0.5, token_id=1376, top=()),
)
COMPLETIONS = {
    "text": Completion(text="Hello!", usage=Usage(input_tokens=50, output_tokens=3)),
    "reasoning_and_tools": Completion(
        text="Checking two cities.",
        reasoning=(ReasoningPart(text="Plan: call twice."),),
        tool_calls=(
            ToolCall(id="call_a", name="get_weather", arguments='{"city": "Paris"}'),
            ToolCall(id="call_b", name="get_weather", arguments='{"city":"Zürich"}'),
        ),
        usage=Usage(input_tokens=120, output_tokens=30, cache_read_tokens=80, reasoning_tokens=9),
    ),
    "tokens": Completion(
        text="Hi é",
        usage=Usage(input_tokens=4, output_tokens=2),
        prompt_token_ids=(1, 2, 3, 4),
        token_ids=(13347, 1376),
        logprobs=LOGPROBS,
    ),
    "tool_only": Completion(tool_calls=(ToolCall(id="call_c", name="noop", arguments=""),)),
    "length": Completion(text="cut", finish_reason="length"),
    "content_filter": Completion(text="no", finish_reason="content_filter"),
    "error": Completion(text="partial", finish_reason="error"),
    "empty": Completion(),
}


def same(got: Completion, want: Completion, *, response_id: str) -> None:
    """``got`` is ``want`` with the wire's id and the request's model."""
    assert got == attrs.evolve(want, id=response_id, model=want.model or REQUEST.model)


@pytest.mark.parametrize("name", COMPLETIONS)
def test_response_round_trips(name):
    """decode_response(encode_response(c)) gives c back, token ids and logprobs included."""
    wire = CODEC.encode_response(COMPLETIONS[name], REQUEST, response_id="chatcmpl-1")
    same(CODEC.decode_response(json.loads(json.dumps(wire))), COMPLETIONS[name], response_id="chatcmpl-1")


@pytest.mark.parametrize("name", COMPLETIONS)
@pytest.mark.parametrize("cut", [1, 7, 64, 10**6])
def test_stream_round_trips_with_keepalives_and_any_chunking(name, cut):
    """prelude + keep-alives + completion, cut into pieces of any size, decodes back to the completion."""
    c = COMPLETIONS[name]
    stream = (
        CODEC.sse_prelude(REQUEST, response_id="chatcmpl-2")
        + CODEC.sse_keepalive() * 3
        + CODEC.sse_completion(c, REQUEST, response_id="chatcmpl-2")
    )
    text = (
        stream.decode()
    )  # cut as text: sse.parse decodes each chunk alone, so a character cut in two is lost
    pieces = [text[i : i + cut] for i in range(0, len(text), cut)]
    same(CODEC.decode_stream(sse.parse(pieces)), c, response_id="chatcmpl-2")


def test_response_wire_shape():
    """A chat.completion object as OpenAI writes it, plus vLLM's token id fields."""
    c = COMPLETIONS["reasoning_and_tools"]
    wire = CODEC.encode_response(c, REQUEST, response_id="chatcmpl-3")
    assert {k: wire[k] for k in ("id", "object", "model")} == {
        "id": "chatcmpl-3",
        "object": "chat.completion",
        "model": "m",
    }
    assert isinstance(wire["created"], int)
    assert wire["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Checking two cities.",
                "reasoning_content": "Plan: call twice.",
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Zürich"}'},
                    },
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ]
    assert wire["usage"] == {
        "prompt_tokens": 120,
        "completion_tokens": 30,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 80},
        "completion_tokens_details": {"reasoning_tokens": 9},
    }
    tokens = CODEC.encode_response(COMPLETIONS["tokens"], REQUEST, response_id="x")
    assert tokens["prompt_token_ids"] == [1, 2, 3, 4] and tokens["choices"][0]["token_ids"] == [13347, 1376]
    assert tokens["choices"][0]["logprobs"]["content"][1] == {
        "token": " é",
        "logprob": -0.5,
        "bytes": [32, 195, 169],
        "top_logprobs": [],
    }
    only_calls = CODEC.encode_response(COMPLETIONS["tool_only"], REQUEST, response_id="x")
    assert only_calls["choices"][0]["message"]["content"] is None


def test_what_chat_cannot_carry_is_dropped():
    """Signatures, redacted reasoning, cache writes and tool-call extras have no chat field: they are lost."""
    c = Completion(
        reasoning=(
            ReasoningPart(text="a", signature="sig"),
            ReasoningPart(text="b"),
            ReasoningPart(text="x", redacted=True),
        ),
        tool_calls=(ToolCall(id="t", name="f", arguments="{}", extra={"item_id": "fc_1"}),),
        usage=Usage(input_tokens=100, output_tokens=5, cache_read_tokens=60, cache_write_tokens=20),
    )
    got = CODEC.decode_response(CODEC.encode_response(c, REQUEST, response_id="x"))
    assert got.reasoning == (ReasoningPart(text="ab"),)
    assert got.tool_calls == (ToolCall(id="t", name="f", arguments="{}"),)
    assert got.usage == Usage(input_tokens=100, output_tokens=5, cache_read_tokens=60)


def test_stream_event_sequence():
    """Role first, then reasoning, content, one delta per tool call by index, finish, usage chunk, [DONE]."""
    c = COMPLETIONS["reasoning_and_tools"]
    raw = CODEC.sse_prelude(REQUEST, response_id="r") + CODEC.sse_completion(c, REQUEST, response_id="r")
    events = list(sse.parse([raw]))
    assert all(name is None for name, _ in events) and events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert all(ch["object"] == "chat.completion.chunk" and ch["id"] == "r" for ch in chunks)
    deltas = [ch["choices"][0]["delta"] if ch["choices"] else None for ch in chunks]
    assert deltas[:3] == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "Plan: call twice."},
        {"content": "Checking two cities."},
    ]
    assert [d["tool_calls"][0]["index"] for d in deltas[3:5]] == [0, 1]
    assert deltas[3]["tool_calls"][0] == {
        "index": 0,
        "id": "call_a",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    assert [ch["choices"][0]["finish_reason"] if ch["choices"] else "-" for ch in chunks] == [None] * 5 + [
        "tool_calls",
        "-",
    ]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 120
    assert all(ch["usage"] is None for ch in chunks[:-1])


def test_stream_without_include_usage_has_no_usage_chunk():
    """Without stream_options.include_usage the stream ends at the finish chunk; usage decodes as zero."""
    request = CODEC.decode_request(body(stream=True))
    c = COMPLETIONS["text"]
    raw = CODEC.sse_prelude(request, response_id="r") + CODEC.sse_completion(c, request, response_id="r")
    chunks = [json.loads(d) for _, d in sse.parse([raw]) if d != "[DONE]"]
    assert all("usage" not in ch for ch in chunks) and chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert CODEC.decode_stream(sse.parse([raw])).usage == Usage()


def test_keepalive_is_an_sse_comment():
    """The keep-alive is a comment line, which clients (and sse.parse) ignore."""
    assert CODEC.sse_keepalive().startswith(b":") and list(sse.parse([CODEC.sse_keepalive()])) == []


# --- upstream answers as vLLM, SGLang and OpenAI send them ----------------------------------------


def events(*chunks: dict[str, Any], done: bool = True) -> list[tuple[None, str]]:
    base = {"id": "chatcmpl-u", "object": "chat.completion.chunk", "created": 1, "model": "qwen"}
    out = [(None, json.dumps(base | chunk)) for chunk in chunks]
    return out + ([(None, "[DONE]")] if done else [])


def delta(d: dict[str, Any], finish: str | None = None, **choice: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish, **choice}]}


def call(index: int, arguments: str | None = None, **head: Any) -> dict[str, Any]:
    fn = ({"name": head.pop("name")} if "name" in head else {}) | (
        {"arguments": arguments} if arguments is not None else {}
    )
    return {"tool_calls": [{"index": index, **head, "function": fn}]}


def test_openai_parallel_tool_call_fragments_are_assembled():
    """OpenAI: id, name and empty arguments first for each index, then argument fragments; usage last."""
    got = CODEC.decode_stream(
        events(
            delta(
                {"role": "assistant", "content": None, "refusal": None}
                | call(0, "", id="call_1", type="function", name="get_weather")
            ),
            delta(call(0, '{"ci')),
            delta(call(0, 'ty": "Par')),
            delta(call(0, 'is"}')),
            delta(call(1, "", id="call_2", type="function", name="get_weather")),
            delta(call(1, '{"city"')),
            delta(call(1, ': "Oslo"}')),
            delta({}, "tool_calls"),
            {
                "choices": [],
                "usage": {
                    "prompt_tokens": 80,
                    "completion_tokens": 40,
                    "total_tokens": 120,
                    "prompt_tokens_details": {"cached_tokens": 64},
                    "completion_tokens_details": {"reasoning_tokens": 0},
                },
            },
        )
    )
    assert [(c.id, c.name, c.arguments) for c in got.tool_calls] == [
        ("call_1", "get_weather", '{"city": "Paris"}'),
        ("call_2", "get_weather", '{"city": "Oslo"}'),
    ]
    assert (got.finish_reason, got.text, got.id, got.model) == ("tool_calls", "", "chatcmpl-u", "qwen")
    assert got.usage == Usage(input_tokens=80, output_tokens=40, cache_read_tokens=64)


def test_vllm_stream_with_reasoning_token_ids_and_interleaved_fragments():
    """vLLM: ``reasoning`` deltas, name before any arguments, token_ids per chunk, prompt ids on the first."""
    got = CODEC.decode_stream(
        events(
            delta({"role": "assistant", "content": ""}) | {"prompt_token_ids": [9, 8, 7]},
            delta({"reasoning": "Two "}, token_ids=[11]),
            delta({"reasoning": "calls."}, token_ids=[12]),
            delta(call(0, id="chatcmpl-tool-a", type="function", name="read"), token_ids=[13]),
            delta(call(1, id="chatcmpl-tool-b", type="function", name="bash"), token_ids=[14]),
            delta(call(1, '{"command": "ls"}'), token_ids=[15, 16]),
            delta(call(0, '{"path": '), token_ids=[17]),
            delta(call(0, '"a.py"}'), token_ids=[18]),
            delta({}, "tool_calls", stop_reason=None, token_ids=[19]),
        )
    )
    assert got.reasoning == (ReasoningPart(text="Two calls."),)
    assert [(c.id, c.name, c.arguments) for c in got.tool_calls] == [
        ("chatcmpl-tool-a", "read", '{"path": "a.py"}'),
        ("chatcmpl-tool-b", "bash", '{"command": "ls"}'),
    ]
    assert got.prompt_token_ids == (9, 8, 7) and got.token_ids == tuple(range(11, 20))


def test_stream_logprobs_are_joined_and_matched_to_token_ids():
    """Logprobs of each chunk are joined; token ids come from token_ids, or from vLLM's token_id:N form."""
    lp = {
        "content": [
            {"token": "A", "logprob": -0.1, "bytes": [65], "top_logprobs": [{"token": "A", "logprob": -0.1}]}
        ]
    }
    got = CODEC.decode_stream(
        events(
            delta({"content": "A"}, logprobs=lp, token_ids=[5]),
            delta(
                {"content": "B"},
                "stop",
                logprobs={"content": [{"token": "B", "logprob": -0.2}]},
                token_ids=[6],
            ),
        )
    )
    assert got.logprobs == (
        TokenLogprob(token="A", logprob=-0.1, token_id=5, top=(("A", -0.1),)),
        TokenLogprob(token="B", logprob=-0.2, token_id=6),
    )
    as_ids = {"content": [{"token": "token_id:42", "logprob": -1.0, "top_logprobs": []}]}
    assert (
        CODEC.decode_stream(events(delta({"content": "x"}, "stop", logprobs=as_ids))).logprobs[0].token_id
        == 42
    )


def test_tool_calls_without_index_are_told_apart_by_id():
    """Without ``index``, a new id starts a new call and an id-less fragment goes to the last one."""
    got = CODEC.decode_stream(
        events(
            delta({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{"}}]}),
            delta({"tool_calls": [{"function": {"arguments": "}"}}]}),
            delta({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{}"}}]}),
            delta({}, "tool_calls"),
        )
    )
    assert [(c.id, c.name, c.arguments) for c in got.tool_calls] == [("a", "f", "{}"), ("b", "g", "{}")]


def test_stream_cut_off_before_finish_is_an_error():
    """A stream that ends without a finish reason decodes with finish_reason="error"."""
    assert CODEC.decode_stream(events(delta({"content": "par"}), done=False)).finish_reason == "error"


@pytest.mark.parametrize(
    ("wire", "finish"),
    [("stop", "stop"), ("length", "length"), ("tool_calls", "tool_calls"), ("function_call", "tool_calls"),
     ("content_filter", "content_filter"), ("abort", "error"), (None, "stop"), ("eos", "stop")],
)  # fmt: skip
def test_upstream_finish_reasons(wire, finish):
    """Finish reasons map onto kwaigym's; vLLM's and SGLang's ``abort`` is an error."""
    answer = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": wire}]
    }
    assert CODEC.decode_response(answer).finish_reason == finish


def test_vllm_and_sglang_bodies_give_token_ids_and_reasoning():
    """vLLM puts prompt_token_ids at the top and ``reasoning``; SGLang puts them in the choice."""
    vllm = {
        "id": "chatcmpl-v",
        "object": "chat.completion",
        "created": 1,
        "model": "qwen",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok", "reasoning": "think", "tool_calls": []},
                "logprobs": None,
                "finish_reason": "stop",
                "stop_reason": None,
                "token_ids": [5, 6],
            }
        ],
        "usage": {
            "prompt_tokens": 3,
            "total_tokens": 5,
            "completion_tokens": 2,
            "prompt_tokens_details": None,
        },
        "prompt_logprobs": None,
        "prompt_token_ids": [1, 2, 3],
        "kv_transfer_params": None,
    }
    got = CODEC.decode_response(vllm)
    assert (got.text, got.reasoning, got.prompt_token_ids, got.token_ids) == (
        "ok",
        (ReasoningPart(text="think"),),
        (1, 2, 3),
        (5, 6),
    )
    assert got.usage == Usage(input_tokens=3, output_tokens=2)
    sglang = {
        "id": "s",
        "object": "chat.completion",
        "created": 1,
        "model": "qwen",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "r",
                    "tool_calls": [
                        {
                            "id": "call_0",
                            "index": 0,
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a": 1}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
                "matched_stop": None,
                "prompt_token_ids": [4, 5],
                "token_ids": [7],
            }
        ],
        "usage": {
            "prompt_tokens": 2,
            "total_tokens": 3,
            "completion_tokens": 1,
            "prompt_tokens_details": None,
            "reasoning_tokens": 1,
        },
    }
    got = CODEC.decode_response(sglang)
    assert (got.reasoning[0].text, got.prompt_token_ids, got.token_ids, got.usage.reasoning_tokens) == (
        "r",
        (4, 5),
        (7,),
        1,
    )
    assert got.tool_calls == (ToolCall(id="call_0", name="f", arguments='{"a": 1}'),)


@pytest.mark.parametrize(
    "bad",
    [
        {"error": {"message": "model overloaded", "type": "server_error"}},
        {"object": "chat.completion", "choices": []},
        {"choices": [{"index": 0}]},
        {"choices": [{"index": 0, "message": {"content": 5}}]},
        [],
    ],
)
def test_unreadable_or_failed_upstream_answers_raise_infra_error(bad):
    """An error body or an unreadable answer is an infrastructure failure that names what was wrong."""
    with pytest.raises(InfraError, match="upstream chat completion"):
        CODEC.decode_response(bad)


def test_upstream_stream_errors_raise_infra_error():
    """A mid-stream error object, a non-JSON event or a malformed chunk raise InfraError."""
    with pytest.raises(InfraError, match="rate limited"):
        CODEC.decode_stream(events(delta({"content": "a"}), {"error": {"message": "rate limited"}}))
    with pytest.raises(InfraError, match="not JSON"):
        CODEC.decode_stream([(None, "{oops")])
    with pytest.raises(InfraError, match=r"delta: expected an object, got str"):
        CODEC.decode_stream(events({"choices": [{"index": 0, "delta": "x"}]}))


# --- the official SDK against a loopback server --------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.bodies.append(raw)
        request = CODEC.decode_request(raw)
        if not request.stream:
            answer = CODEC.encode_response(self.server.completion, request, response_id="chatcmpl-sdk")
            return self._send(json.dumps(answer).encode(), "application/json")
        stream = CODEC.sse_prelude(request, response_id="chatcmpl-sdk") + CODEC.sse_keepalive()
        self._send(
            stream + CODEC.sse_completion(self.server.completion, request, response_id="chatcmpl-sdk"),
            "text/event-stream",
        )

    def _send(self, payload: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def server(request) -> Iterator[ThreadingHTTPServer]:
    """A chat completions server on 127.0.0.1 answering ``server.completion`` through the codec.

    What the SDK sent must decode and round-trip; with ``KWAIGYM_WRITE_FIXTURES=1`` it is also saved
    under ``fixtures/openai-chat/`` (that is how the ``sdk_python_*`` fixtures were made).
    """
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.bodies, srv.completion = [], COMPLETIONS["reasoning_and_tools"]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()
    for i, sent in enumerate(srv.bodies):
        assert roundtrip(sent) == sent
        if os.environ.get("KWAIGYM_WRITE_FIXTURES"):
            name = request.node.name.removeprefix("test_").removeprefix("sdk_")
            path = FIXTURES / f"sdk_python_{openai.__version__}_{name}_{i}.json"
            path.write_text(json.dumps(sent, indent=1, ensure_ascii=False) + "\n")


def sdk(server: ThreadingHTTPServer) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="test", max_retries=0
    )


SDK_CALL: dict[str, Any] = {
    "model": "gpt-5",
    "messages": [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}, IMAGE]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "hot"},
        {"role": "user", "content": "And Paris, Zürich?"},
    ],
    "tools": [WEATHER],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "max_completion_tokens": 256,
    "temperature": 0.0,
    "stop": "END",
    "seed": 1,
    "user": "u-1",
    "metadata": {"episode": "e1"},
}


def check_sdk_completion(completion: Any) -> None:
    choice = completion.choices[0]
    assert (completion.id, choice.finish_reason, choice.message.content) == (
        "chatcmpl-sdk",
        "tool_calls",
        "Checking two cities.",
    )
    assert [(t.id, t.function.name, json.loads(t.function.arguments)) for t in choice.message.tool_calls] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_weather", {"city": "Zürich"}),
    ]
    assert (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
        completion.usage.total_tokens,
    ) == (120, 30, 150)
    assert completion.usage.prompt_tokens_details.cached_tokens == 80
    assert completion.usage.completion_tokens_details.reasoning_tokens == 9


def test_sdk_accepts_json_answer(server):
    """The SDK parses a non-streamed answer with reasoning, text and two tool calls."""
    with sdk(server) as client:
        completion = client.chat.completions.create(
            **SDK_CALL, reasoning_effort="low", response_format={"type": "text"}
        )
    check_sdk_completion(completion)
    assert completion.choices[0].message.model_extra["reasoning_content"] == "Plan: call twice."


def test_sdk_reads_logprobs_and_token_ids(server):
    """Logprobs parse into the SDK's types; vLLM's token id fields are there as extra fields."""
    server.completion = COMPLETIONS["tokens"]
    with sdk(server) as client:
        completion = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            logprobs=True,
            top_logprobs=2,
            extra_body={"return_token_ids": True},
        )
    content = completion.choices[0].logprobs.content
    assert [(t.token, t.logprob, t.bytes) for t in content] == [
        ("Hi", -0.01, [72, 105]),
        (" é", -0.5, [32, 195, 169]),
    ]
    assert [(a.token, a.logprob) for a in content[0].top_logprobs] == [("Hi", -0.01), ("Hello", -4.6)]
    assert completion.model_extra["prompt_token_ids"] == [1, 2, 3, 4]
    assert completion.choices[0].model_extra["token_ids"] == [13347, 1376]


def test_sdk_stream_helper_assembles_the_streamed_answer(server):
    """The SDK's stream helper accumulates the stream (keep-alive included) into the same completion."""
    with sdk(server) as client:
        with client.chat.completions.stream(**SDK_CALL, stream_options={"include_usage": True}) as stream:
            kinds = [event.type for event in stream]
            completion = stream.get_final_completion()
    check_sdk_completion(completion)
    assert {"content.delta", "content.done", "tool_calls.function.arguments.done", "chunk"} <= set(kinds)


def test_sdk_stream_helper_collects_logprobs(server):
    """Logprobs sent on the finish chunk are collected by the stream helper like OpenAI's per-chunk ones."""
    server.completion = COMPLETIONS["tokens"]
    with sdk(server) as client:
        with client.chat.completions.stream(
            model="m", messages=[{"role": "user", "content": "hi"}], logprobs=True
        ) as stream:
            completion = stream.get_final_completion()
    assert [t.token for t in completion.choices[0].logprobs.content] == ["Hi", " é"]
    assert completion.choices[0].message.content == "Hi é"


def test_sdk_raw_stream_ends_with_the_usage_chunk(server):
    """Iterating a raw stream: role first, deltas, then a usage chunk with no choices; [DONE] ends it."""
    with sdk(server) as client:
        chunks = list(
            client.chat.completions.create(**SDK_CALL, stream=True, stream_options={"include_usage": True})
        )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 150
    ids = [
        t.id
        for ch in chunks
        if ch.choices and ch.choices[0].delta.tool_calls
        for t in ch.choices[0].delta.tool_calls
    ]
    assert ids == ["call_a", "call_b"]


def test_sdk_parse_with_strict_pydantic_tool_and_schema(server):
    """``parse`` with a pydantic strict tool and a JSON-schema response format: both sides agree."""

    class City(pydantic.BaseModel):
        city: str

    server.completion = Completion(
        text='{"city": "Paris"}',
        tool_calls=(ToolCall(id="call_p", name="City", arguments='{"city": "Oslo"}'),),
    )
    with sdk(server) as client:
        completion = client.chat.completions.parse(
            model="gpt-5",
            messages=[{"role": "user", "content": "Pick."}],
            tools=[openai.pydantic_function_tool(City)],
            response_format=City,
        )
    message = completion.choices[0].message
    assert message.parsed == City(city="Paris") and message.tool_calls[0].function.parsed_arguments == City(
        city="Oslo"
    )
    sent = server.bodies[0]
    assert sent["tools"][0]["function"]["strict"] is True and sent["response_format"]["type"] == "json_schema"


async def test_async_sdk_streams_plain_text(server):
    """The async SDK streams a plain text answer without usage (none asked for)."""
    server.completion = COMPLETIONS["text"]
    async with openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="t", max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert text == "Hello!"


# --- captured traffic ----------------------------------------------------------------------------

CAPTURED = sorted(FIXTURES.glob("*.json"))


def test_fixtures_were_captured():
    """The folder holds OpenCode captures (with a tool-result turn) and openai SDK captures."""
    names = [p.name for p in CAPTURED]
    assert any(n.startswith("opencode_") and "tool_results" in n for n in names)
    assert any(n.startswith("sdk_python_") and "stream" in n for n in names)


@pytest.mark.parametrize("path", CAPTURED, ids=[p.name for p in CAPTURED])
def test_captured_bodies_decode_and_round_trip(path):
    """Each captured request body decodes and re-encodes to itself."""
    sent = json.loads(path.read_text())
    assert roundtrip(sent) == sent


def test_opencode_tool_turn_is_understood():
    """OpenCode's second turn: its reasoning, two parallel tool calls and both results, in order."""
    [path] = FIXTURES.glob("opencode_*_3_tool_results.json")
    r = CODEC.decode_request(json.loads(path.read_text()))
    assert (r.stream, r.include_usage, r.tool_choice, r.params.max_tokens) == (True, True, "auto", 32000)
    assert "bash" in [t.name for t in r.tools]
    roles = [m.role for m in r.messages]
    assert roles == ["system", "user", "assistant", "tool", "tool"]
    assistant = r.messages[2]
    assert assistant.content[0] == ReasoningPart(text="I should read the file first.")
    assert [c.id for c in assistant.tool_calls] == ["call_read_1", "call_bash_2"]
    assert [m.content[0].call_id for m in r.messages[3:]] == ["call_read_1", "call_bash_2"]
    assert "print('hello')" in r.messages[3].content[0].content[0].text
