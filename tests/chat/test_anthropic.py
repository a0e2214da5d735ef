"""The Anthropic Messages codec: round trips, validation, the official SDK and real Claude Code traffic."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kwaigym.chat import sse
from kwaigym.chat.anthropic import (
    CODEC,
    DEFAULT_MAX_TOKENS,
    HINT,
    count_tokens_response,
    decode_count_tokens_request,
    estimate_input_tokens,
)
from kwaigym.chat.codec import BadRequest, codec_for
from kwaigym.chat.types import (
    ChatRequest,
    Completion,
    ImagePart,
    Message,
    ReasoningPart,
    SamplingParams,
    TextPart,
    Tool,
    ToolCall,
    ToolResult,
    Usage,
)
from kwaigym.errors import InfraError

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
CACHE = {"cache_control": {"type": "ephemeral"}}
IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
DOCUMENT = {
    "type": "document",
    "source": {"type": "text", "media_type": "text/plain", "data": "doc"},
    "title": "t",
}

FULL_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 4096,
    "system": [{"type": "text", "text": "You are terse."}, {"type": "text", "text": "Rules.", **CACHE}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Look:"}, IMAGE, DOCUMENT]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Need ls.", "signature": "sig=="},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Listing."},
                {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls", "n": 1.5}},
                {"type": "tool_use", "id": "toolu_2", "name": "Read", "input": {"path": "é"}, **CACHE},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a\nb", "is_error": False},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "no such file"}, IMAGE],
                    "is_error": True,
                    **CACHE,
                },
            ],
        },
        {"role": "system", "content": "<reminder>be brief</reminder>"},
        {"role": "user", "content": [{"type": "text", "text": "go on", **CACHE}]},
    ],
    "tools": [
        {"name": "Bash", "description": "Run a command", "input_schema": {"type": "object"}, **CACHE},
        {"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}, "strict": True},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    ],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 40,
    "stop_sequences": ["\n\nHuman:"],
    "thinking": {"type": "enabled", "budget_tokens": 2048},
    "metadata": {"user_id": "u1"},
    "stream": True,
    "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    "output_config": {"effort": "high"},
}


def roundtrip(body: dict[str, Any]) -> dict[str, Any]:
    return CODEC.encode_request(CODEC.decode_request(body))


def body(**fields: Any) -> dict[str, Any]:
    """A minimal valid request body with some fields replaced."""
    return {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]} | fields


# --- requests ------------------------------------------------------------------------------------


def test_registered_under_its_name():
    """codec_for("anthropic") is this codec."""
    assert CODEC.name == "anthropic"
    assert codec_for("anthropic") is CODEC


def test_full_body_round_trips():
    """Every field of a request with every block kind comes back unchanged."""
    assert roundtrip(FULL_BODY) == FULL_BODY


def test_full_body_decodes_to_normalised_parts():
    """Each wire field lands in its normalised place."""
    r = CODEC.decode_request(FULL_BODY)
    assert [m.role for m in r.messages] == ["system", "user", "assistant", "user", "system", "user"]
    assert r.messages[0].content == [TextPart(text="You are terse."), TextPart(text="Rules.", extra=CACHE)]
    assert r.messages[1].content[1:] == [ImagePart(raw=IMAGE), ImagePart(raw=DOCUMENT)]
    thinking, redacted, text, bash, read = r.messages[2].content
    assert thinking == ReasoningPart(text="Need ls.", signature="sig==")
    assert redacted == ReasoningPart(text="opaque", redacted=True)
    assert text == TextPart(text="Listing.")
    assert bash == ToolCall(id="toolu_1", name="Bash", arguments='{"command":"ls","n":1.5}')
    assert read.extra == CACHE and json.loads(read.arguments) == {"path": "é"}
    ok, failed = r.messages[3].content
    assert ok == ToolResult(call_id="toolu_1", content=[TextPart(text="a\nb")], extra={"is_error": False})
    assert failed.is_error and failed.content == [TextPart(text="no such file"), ImagePart(raw=IMAGE)]
    assert r.messages[4].text == "<reminder>be brief</reminder>"
    assert r.tools[0] == Tool(
        name="Bash", description="Run a command", parameters={"type": "object"}, extra=CACHE
    )
    assert r.tools[2] == Tool(name="web_search", extra={"type": "web_search_20250305", "max_uses": 3})
    assert r.tool_choice == FULL_BODY["tool_choice"]
    assert r.params == SamplingParams(
        max_tokens=4096,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        stop=("\n\nHuman:",),
        reasoning={"type": "enabled", "budget_tokens": 2048},
    )
    assert r.stream and r.metadata == {"user_id": "u1"} and r.format == "anthropic"
    assert r.extra == {
        "context_management": FULL_BODY["context_management"],
        "output_config": {"effort": "high"},
    }


@pytest.mark.parametrize(
    "content",
    [
        "hi",
        "",
        [{"type": "text", "text": "hi"}],
        [],
        [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
    ],
)
def test_content_string_or_blocks_round_trips(content):
    """A string stays a string and a list of one text block stays a list (through a hint)."""
    b = body(messages=[{"role": "user", "content": content}], system=content)
    assert roundtrip(b) == b


def test_string_system_is_one_system_message():
    """A top-level string system prompt is the first, system, message."""
    r = CODEC.decode_request(body(system="Be nice."))
    assert r.messages[0] == Message(role="system", content=[TextPart(text="Be nice.")])


def test_system_message_heading_messages_stays_in_messages():
    """A role: system entry opening `messages` is not mistaken for the top-level system prompt."""
    b = body(messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    assert CODEC.decode_request(b).messages[0].extra == {HINT: {"in_messages": True}}
    assert roundtrip(b) == b
    b2 = body(system="top", messages=b["messages"])
    assert roundtrip(b2) == b2


@pytest.mark.parametrize(
    "fields",
    [
        {"stream": False},
        {"system": ""},
        {"system": []},
        {"tools": []},
        {"metadata": {}},
        {"stop_sequences": []},
        {"thinking": {}},
        {"tool_choice": {}},
        {"temperature": None, "top_k": None, "system": None},
        {"temperature": 0, "top_p": 0.0, "top_k": 0, "max_tokens": 0},
    ],
)
def test_fields_that_say_nothing_round_trip(fields):
    """Optional fields sent empty, false or null come back exactly as sent."""
    assert roundtrip(body(**fields)) == body(**fields)


@pytest.mark.parametrize(
    "block",
    [
        {"type": "tool_result", "tool_use_id": "t"},
        {"type": "tool_result", "tool_use_id": "t", "content": []},
        {"type": "tool_result", "tool_use_id": "t", "content": ""},
        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "x"}]},
        {"type": "tool_result", "tool_use_id": "t", "content": "x", "is_error": True},
        {"type": "thinking", "thinking": "t"},
        {"type": "thinking", "thinking": "t", "signature": None},
        {"type": "tool_use", "id": "t", "name": "n", "input": {}, "caller": {"type": "direct"}},
        {"type": "search_result", "source": "s", "title": "t", "content": []},
        {"type": "text", "text": "x", "citations": None},
    ],
)
def test_block_variants_round_trip(block):
    """Each optional shape of a content block comes back as sent."""
    b = body(messages=[{"role": "user", "content": [block]}])
    assert roundtrip(b) == b


def test_tool_variants_round_trip():
    """Tools without description or schema, or with empty ones, come back as sent."""
    tools = [
        {"name": "a"},
        {"name": "b", "description": "", "input_schema": {}},
        {"name": "c", "description": None},
    ]
    assert roundtrip(body(tools=tools)) == body(tools=tools)


def test_count_tokens_body_needs_no_max_tokens():
    """A count_tokens body decodes without max_tokens and round-trips; a Messages body needs it."""
    b = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "system": "s"}
    assert CODEC.encode_request(decode_count_tokens_request(b)) == b
    with pytest.raises(BadRequest, match="max_tokens: missing"):
        CODEC.decode_request(b)


def test_count_tokens_estimate_is_a_quarter_of_the_json_bytes():
    """The estimate is the UTF-8 bytes of system, messages and tools as JSON over 4, rounded up."""
    r = decode_count_tokens_request({"model": "m", "messages": [{"role": "user", "content": "x" * 400}]})
    size = len(json.dumps({"messages": [{"role": "user", "content": "x" * 400}]}, separators=(",", ":")))
    assert (
        count_tokens_response(r)
        == {"input_tokens": -(-size // 4)}
        == {"input_tokens": estimate_input_tokens(r)}
    )


def test_request_from_another_format_is_translated():
    """An OpenAI-style ChatRequest becomes a valid Anthropic body, without foreign extras."""
    call = ToolCall(id="call_1", name="sh", arguments='{"c": "ls"}', extra={"type": "function"})
    request = ChatRequest(
        format="openai-chat",
        model="gpt",
        messages=[
            Message(role="system", content=[TextPart(text="a")]),
            Message(role="system", content=[TextPart(text="b")]),
            Message(
                role="user",
                content=[
                    ImagePart(raw={"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}})
                ],
            ),
            Message(role="assistant", content=[ReasoningPart(text="hmm"), call], extra={"refusal": None}),
            Message(role="tool", content=[ToolResult(call_id="call_1", content=[TextPart(text="x")])]),
            Message(role="tool", content=[ToolResult(call_id="call_2", content=[TextPart(text="y")])]),
        ],
        tools=[Tool(name="sh", parameters={}, extra={"strict": True})],
        tool_choice={"type": "function", "function": {"name": "sh"}},
        params=SamplingParams(seed=1, reasoning={"effort": "high"}),
        extra={"n": 1},
    )
    assert CODEC.encode_request(request) == {
        "model": "gpt",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "QUJD"}}
                ],
            },
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "call_1", "name": "sh", "input": {"c": "ls"}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "x"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "y"},
                ],
            },
        ],
        "tools": [{"name": "sh", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "tool", "name": "sh"},
    }


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([1, 2], "request body: expected a JSON object, got list"),
        ({"max_tokens": 1, "messages": []}, "model: missing; expected a string"),
        (body(max_tokens=None), "max_tokens: missing; expected an integer"),
        (body(max_tokens=True), "max_tokens: expected an integer, got boolean"),
        (body(max_tokens=-1), "max_tokens: expected a non-negative integer, got -1"),
        (body(messages={"role": "user"}), "messages: expected a list, got object"),
        (body(messages=["hi"]), "messages[0]: expected an object, got string"),
        (
            body(messages=[{"role": "tool", "content": "x"}]),
            "messages[0].role: expected 'user', 'assistant' or 'system'",
        ),
        (body(messages=[{"role": "user"}]), "messages[0].content: missing"),
        (
            body(messages=[{"role": "user", "content": 3}]),
            "messages[0].content: expected a string or a list of content blocks, got int",
        ),
        (
            body(messages=[{"role": "user", "content": [{"text": "x"}]}]),
            "messages[0].content[0].type: missing",
        ),
        (
            body(messages=[{"role": "user", "content": [{"type": "text"}]}]),
            "messages[0].content[0].text: missing",
        ),
        (
            body(
                messages=[
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "a", "name": "b", "input": "{}"}],
                    }
                ]
            ),
            "messages[0].content[0].input: expected an object, got string",
        ),
        (
            body(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "a", "is_error": "no"}],
                    }
                ]
            ),
            "messages[0].content[0].is_error: expected a boolean, got string",
        ),
        (
            body(
                messages=[
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": 1}]}
                ]
            ),
            "messages[0].content[0].content: expected a string or a list of content blocks, got int",
        ),
        (body(system=7), "system: expected a string or a list of content blocks, got int"),
        (body(system=False), "system: expected a string or a list of content blocks, got boolean"),
        (body(temperature="hot"), "temperature: expected a number, got string"),
        (body(temperature=False), "temperature: expected a number, got boolean"),
        (body(stop_sequences=["a", 1]), "stop_sequences[1]: expected a string, got int"),
        (body(stream="yes"), "stream: expected a boolean, got string"),
        (body(tools=[{"description": "x"}]), "tools[0].name: missing; expected a string"),
        (
            body(tools=[{"name": "x", "input_schema": []}]),
            "tools[0].input_schema: expected an object, got list",
        ),
        (body(tool_choice="auto"), "tool_choice: expected an object, got string"),
        (body(thinking=True), "thinking: expected an object, got boolean"),
    ],
)
def test_malformed_bodies_are_bad_requests(bad, message):
    """A malformed body raises BadRequest naming the field and what was expected."""
    with pytest.raises(BadRequest, match=re.escape(message)):
        CODEC.decode_request(bad)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
TEXT = st.text(max_size=5)


def mostly(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Usually (19 times in 20) a valid value, else any JSON."""
    return st.integers(0, 19).flatmap(lambda n: valid if n else JSON)


def block(**fields: st.SearchStrategy) -> st.SearchStrategy:
    """A content block: its fields mostly valid, plus an optional unknown field."""
    required = {k: mostly(v) for k, v in fields.items() if k != "type"}
    return st.fixed_dictionaries(
        {"type": fields["type"], **required}, optional={"cache_control": JSON, "zz": JSON}
    )


TEXT_BLOCK = block(type=st.just("text"), text=TEXT)
OTHER_BLOCK = block(type=st.sampled_from(["image", "document", "search_result", "x"]), source=JSON)
TOOL_RESULT = st.fixed_dictionaries(
    {"type": st.just("tool_result"), "tool_use_id": mostly(TEXT)},
    optional={
        "content": mostly(st.one_of(TEXT, st.lists(st.one_of(TEXT_BLOCK, OTHER_BLOCK), max_size=2))),
        "is_error": mostly(st.booleans()),
    },
)
BLOCK = st.one_of(
    TEXT_BLOCK,
    OTHER_BLOCK,
    TOOL_RESULT,
    block(type=st.just("thinking"), thinking=TEXT, signature=st.one_of(TEXT, st.none())),
    block(type=st.just("redacted_thinking"), data=TEXT),
    block(type=st.just("tool_use"), id=TEXT, name=TEXT, input=st.dictionaries(TEXT, JSON, max_size=3)),
    st.dictionaries(st.sampled_from(["type", "text", "content", "input", "id"]), JSON),
)
CONTENT = mostly(st.one_of(TEXT, st.lists(BLOCK, max_size=3)))
MESSAGE = st.fixed_dictionaries(
    {"role": mostly(st.sampled_from(["user", "assistant", "system"])), "content": CONTENT},
    optional={"zz": JSON},
)
TOOL = st.fixed_dictionaries(
    {"name": mostly(TEXT)},
    optional={
        "description": mostly(st.one_of(TEXT, st.none())),
        "input_schema": mostly(st.dictionaries(TEXT, JSON, max_size=2)),
        "type": TEXT,
        "cache_control": JSON,
    },
)
NEAR_VALID = st.fixed_dictionaries(
    {
        "model": mostly(TEXT),
        "max_tokens": mostly(st.integers(0, 10**6)),
        "messages": mostly(st.lists(MESSAGE, max_size=4)),
    },
    optional={
        "system": CONTENT,
        "tools": mostly(st.lists(TOOL, max_size=3)),
        "tool_choice": mostly(st.dictionaries(TEXT, JSON, max_size=2)),
        "temperature": mostly(st.floats(0, 1)),
        "top_p": mostly(st.floats(0, 1)),
        "top_k": mostly(st.integers(0, 100)),
        "stop_sequences": mostly(st.lists(TEXT, max_size=2)),
        "thinking": mostly(st.dictionaries(TEXT, JSON, max_size=2)),
        "metadata": mostly(st.dictionaries(TEXT, JSON, max_size=2)),
        "stream": mostly(st.booleans()),
        "context_management": JSON,
    },
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.one_of(JSON, NEAR_VALID))
def test_fuzzed_bodies_raise_only_bad_request_and_round_trip_when_valid(fuzzed):
    """Any JSON body either raises BadRequest or decodes and re-encodes to itself."""
    try:
        request = CODEC.decode_request(fuzzed)
    except BadRequest:
        return
    assert CODEC.encode_request(request) == fuzzed


# --- responses -----------------------------------------------------------------------------------

REQUEST = CODEC.decode_request(body(stream=True))
COMPLETIONS = {
    "text": Completion(text="Hello!", usage=Usage(input_tokens=50, output_tokens=3)),
    "reasoning_and_tools": Completion(
        text="Running two commands.",
        reasoning=(
            ReasoningPart(text="Plan it.", signature="c2ln"),
            ReasoningPart(text="opaque", redacted=True),
        ),
        tool_calls=(
            ToolCall(id="toolu_a", name="Bash", arguments='{"command": "ls -la"}'),
            ToolCall(id="toolu_b", name="Read", arguments='{"path":"/tmp/é"}'),
        ),
        usage=Usage(
            input_tokens=120,
            output_tokens=30,
            cache_read_tokens=80,
            cache_write_tokens=20,
            reasoning_tokens=9,
        ),
    ),
    "tool_only": Completion(tool_calls=(ToolCall(id="toolu_c", name="Noop", arguments="{}"),)),
    "length": Completion(text="cut", finish_reason="length"),
    "refusal": Completion(text="no", finish_reason="content_filter"),
    "empty": Completion(),
}


def same(got: Completion, want: Completion, *, response_id: str) -> None:
    """``got`` is ``want`` with the wire's id and model, and tool arguments equal as JSON."""
    assert got.id == response_id and got.model == REQUEST.model
    assert [json.loads(c.arguments) for c in got.tool_calls] == [
        json.loads(c.arguments) for c in want.tool_calls
    ]
    assert (got.text, got.reasoning, got.finish_reason, got.usage) == (
        want.text,
        want.reasoning,
        want.finish_reason,
        want.usage,
    )
    assert [(c.id, c.name) for c in got.tool_calls] == [(c.id, c.name) for c in want.tool_calls]


@pytest.mark.parametrize("name", COMPLETIONS)
def test_response_round_trips(name):
    """decode_response(encode_response(c)) gives c back (arguments equal as JSON)."""
    wire = CODEC.encode_response(COMPLETIONS[name], REQUEST, response_id="msg_1")
    same(CODEC.decode_response(wire), COMPLETIONS[name], response_id="msg_1")


@pytest.mark.parametrize("name", COMPLETIONS)
def test_stream_round_trips_with_keepalives_and_any_chunking(name):
    """decode_stream(parse(prelude + pings + completion)), cut anywhere, gives c back, arguments verbatim."""
    c = COMPLETIONS[name]
    stream = CODEC.sse_prelude(REQUEST, response_id="msg_2") + CODEC.sse_keepalive() * 2
    stream += CODEC.sse_completion(c, REQUEST, response_id="msg_2")
    text = stream.decode()  # cut as text: sse.parse cannot yet mend a character cut in two (see below)
    for size in (len(text), 7, 1):
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        got = CODEC.decode_stream(sse.parse(chunks))
        same(got, c, response_id="msg_2")
        assert [t.arguments for t in got.tool_calls] == [t.arguments for t in c.tool_calls]


def test_stream_cut_inside_a_character():
    """A byte stream cut inside a multi-byte character decodes."""
    c = Completion(text="é")
    stream = CODEC.sse_prelude(REQUEST, response_id="m") + CODEC.sse_completion(c, REQUEST, response_id="m")
    assert CODEC.decode_stream(sse.parse([stream[i : i + 1] for i in range(len(stream))])).text == "é"


def test_response_wire_shape():
    """The JSON answer has the documented fields, the uncached input count and thinking tokens."""
    wire = CODEC.encode_response(COMPLETIONS["reasoning_and_tools"], REQUEST, response_id="msg_3")
    assert [b["type"] for b in wire["content"]] == [
        "thinking",
        "redacted_thinking",
        "text",
        "tool_use",
        "tool_use",
    ]
    assert wire["content"][3] == {
        "type": "tool_use",
        "id": "toolu_a",
        "name": "Bash",
        "input": {"command": "ls -la"},
    }
    assert (wire["id"], wire["type"], wire["role"], wire["stop_reason"], wire["stop_sequence"]) == (
        "msg_3",
        "message",
        "assistant",
        "tool_use",
        None,
    )
    assert wire["usage"] == {
        "input_tokens": 20,
        "output_tokens": 30,
        "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 80,
        "output_tokens_details": {"thinking_tokens": 9},
    }


def test_stream_event_sequence():
    """message_start, ping, one start/delta/stop run per block, message_delta, message_stop."""
    c = Completion(
        text="hi",
        reasoning=(ReasoningPart(text="r", signature="s"),),
        tool_calls=(ToolCall(id="t", name="n", arguments="{}"),),
    )
    stream = CODEC.sse_prelude(REQUEST, response_id="m") + CODEC.sse_completion(c, REQUEST, response_id="m")
    events = [(name, json.loads(data)) for name, data in sse.parse([stream])]
    assert all(name == data["type"] for name, data in events)
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        *["content_block_start", "content_block_delta", "content_block_delta", "content_block_stop"],
        *["content_block_start", "content_block_delta", "content_block_stop"],
        *["content_block_start", "content_block_delta", "content_block_stop"],
        "message_delta",
        "message_stop",
    ]
    deltas = [d["delta"]["type"] for _, d in events if d["type"] == "content_block_delta"]
    assert deltas == ["thinking_delta", "signature_delta", "text_delta", "input_json_delta"]
    assert events[0][1]["message"]["usage"]["input_tokens"] == estimate_input_tokens(REQUEST)


def test_keepalive_is_a_ping_event():
    """The keep-alive is Anthropic's own ping event."""
    assert list(sse.parse([CODEC.sse_keepalive()])) == [("ping", '{"type":"ping"}')]


def test_invalid_tool_arguments_are_answered_as_empty_object():
    """Arguments that are not a JSON object go out as {} so the client can still parse them."""
    c = Completion(tool_calls=(ToolCall(id="t", name="n", arguments='{"a": '),))
    assert CODEC.encode_response(c, REQUEST, response_id="m")["content"][0]["input"] == {}
    stream = CODEC.sse_prelude(REQUEST, response_id="m") + CODEC.sse_completion(c, REQUEST, response_id="m")
    assert CODEC.decode_stream(sse.parse([stream])).tool_calls[0].arguments == "{}"


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_upstream_stop_reasons(stop_reason, finish):
    """Every Anthropic stop reason maps to a finish reason."""
    wire = {
        "id": "m",
        "type": "message",
        "content": [{"type": "text", "text": "x"}],
        "stop_reason": stop_reason,
    }
    assert CODEC.decode_response(wire).finish_reason == finish


def test_upstream_stream_usage_is_cumulative():
    """message_delta usage overrides message_start's; counts it lacks survive."""
    events = [
        (
            "message_start",
            json.dumps(
                {
                    "type": "message_start",
                    "message": {
                        "id": "m",
                        "model": "x",
                        "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 1},
                    },
                }
            ),
        ),
        (
            "content_block_start",
            json.dumps(
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            ),
        ),
        (
            "content_block_delta",
            json.dumps(
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ab"}}
            ),
        ),
        ("unknown", json.dumps({"type": "brand_new_event"})),
        (
            "message_delta",
            json.dumps(
                {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}
            ),
        ),
    ]
    got = CODEC.decode_stream(events)
    assert got.text == "ab"
    assert got.usage == Usage(input_tokens=15, output_tokens=7, cache_read_tokens=5)


def test_upstream_errors_raise_infra_error():
    """An error body or an error event is an infrastructure failure, with the upstream's message."""
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(InfraError, match="overloaded_error: Overloaded"):
        CODEC.decode_response(error)
    with pytest.raises(InfraError, match="Overloaded"):
        CODEC.decode_stream([("error", json.dumps(error))])


# --- the official SDK against a loopback server --------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.bodies.append(raw)
        if self.path.split("?")[0].endswith("/count_tokens"):
            return self._send(json.dumps(count_tokens_response(decode_count_tokens_request(raw))).encode())
        request = CODEC.decode_request(raw)
        if not request.stream:
            return self._send(
                json.dumps(
                    CODEC.encode_response(self.server.completion, request, response_id="msg_sdk")
                ).encode()
            )
        stream = CODEC.sse_prelude(request, response_id="msg_sdk") + CODEC.sse_keepalive()
        self._send(
            stream + CODEC.sse_completion(self.server.completion, request, response_id="msg_sdk"),
            "text/event-stream",
        )

    def _send(self, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    """A Messages API server on 127.0.0.1 answering with ``server.completion`` through the codec."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.bodies, srv.completion = [], COMPLETIONS["reasoning_and_tools"]
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()
    for sent in srv.bodies:  # whatever the SDK sent decodes and round-trips
        assert CODEC.encode_request(decode_count_tokens_request(sent)) == sent


def sdk(server: ThreadingHTTPServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=f"http://127.0.0.1:{server.server_address[1]}", api_key="test", max_retries=0
    )


SDK_CALL = {
    "model": "kwaigym-policy",
    "max_tokens": 2048,
    "messages": [{"role": "user", "content": "List files."}],
    "tools": [
        {
            "name": "Bash",
            "description": "Run",
            "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
        }
    ],
}


def check_sdk_message(message: Any) -> None:
    assert [b.type for b in message.content] == [
        "thinking",
        "redacted_thinking",
        "text",
        "tool_use",
        "tool_use",
    ]
    assert (message.content[0].thinking, message.content[0].signature) == ("Plan it.", "c2ln")
    assert message.content[1].data == "opaque" and message.content[2].text == "Running two commands."
    assert (message.content[3].id, message.content[3].input) == ("toolu_a", {"command": "ls -la"})
    assert message.content[4].input == {"path": "/tmp/é"}
    assert message.stop_reason == "tool_use" and message.id == "msg_sdk"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (20, 30)
    assert (message.usage.cache_read_input_tokens, message.usage.cache_creation_input_tokens) == (80, 20)


def test_sdk_accepts_json_answer(server):
    """The SDK parses a non-streamed answer with reasoning, text and two tool calls."""
    with sdk(server) as client:
        check_sdk_message(client.messages.create(**SDK_CALL, system="Be brief."))


def test_sdk_accepts_streamed_answer(server):
    """The SDK's stream helper accumulates the streamed answer, pings included, into the same message."""
    with sdk(server) as client:
        with client.messages.stream(
            **SDK_CALL, thinking={"type": "enabled", "budget_tokens": 1024}
        ) as stream:
            kinds = [event.type for event in stream]
            message = stream.get_final_message()
    check_sdk_message(message)
    assert {"thinking", "signature", "text", "input_json"} <= set(kinds)


async def test_async_sdk_streams_plain_text(server):
    """The async SDK streams a plain text answer and reads its text deltas."""
    server.completion = COMPLETIONS["text"]
    async with anthropic.AsyncAnthropic(
        base_url=f"http://127.0.0.1:{server.server_address[1]}", api_key="t", max_retries=0
    ) as client:
        async with client.messages.stream(**SDK_CALL) as stream:
            text = "".join([t async for t in stream.text_stream])
            message = await stream.get_final_message()
    assert text == "Hello!" and message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (50, 3)


def test_sdk_count_tokens(server):
    """The SDK reads the count_tokens answer."""
    with sdk(server) as client:
        counted = client.messages.count_tokens(
            model="m", messages=SDK_CALL["messages"], tools=SDK_CALL["tools"]
        )
    assert counted.input_tokens == estimate_input_tokens(decode_count_tokens_request(server.bodies[0]))


# --- captured traffic ----------------------------------------------------------------------------

CAPTURED = sorted(p for p in FIXTURES.glob("*.json") if not p.name.endswith("_requests.json"))


def test_fixtures_were_captured():
    """The folder holds Claude Code and SDK captures, each listed in an index of its run."""
    names = [p.name for p in CAPTURED]
    assert any(n.startswith("claude_code_") and "tool_result" in n for n in names)
    assert any(n.startswith("sdk_python_") for n in names)
    listed = {r.get("fixture") for p in FIXTURES.glob("*_requests.json") for r in json.loads(p.read_text())}
    assert set(names) <= listed


@pytest.mark.parametrize("path", CAPTURED, ids=lambda p: p.name)
def test_captured_bodies_decode_and_round_trip(path):
    """Every captured request decodes and re-encodes to exactly what the client sent."""
    sent = json.loads(path.read_text())
    decode = decode_count_tokens_request if "count_tokens" in path.name else CODEC.decode_request
    assert CODEC.encode_request(decode(sent)) == sent


def test_claude_code_tool_turn_is_understood():
    """Claude Code's second turn carries its reminders, the tool call and its result, normalised."""
    (path,) = FIXTURES.glob("claude_code_*_tool_*_tool_result.json")
    r = CODEC.decode_request(json.loads(path.read_text()))
    assert r.stream and len(r.tools) > 10 and r.params.reasoning.get("type")
    assert r.messages[0].role == "system" and "Claude" in "".join(p.text for p in r.messages[0].content)
    assert "system" in [m.role for m in r.messages[1:]]  # a mid-conversation system message, in place
    (call,) = r.messages[-2].tool_calls
    (result,) = r.messages[-1].content
    assert isinstance(result, ToolResult) and result.call_id == call.id and call.name == "Bash"
