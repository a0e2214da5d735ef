"""The OpenAI Responses codec: round trips, validation, SSE, the ``openai`` SDK, captured Codex traffic."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import attrs
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kwaigym.chat import sse
from kwaigym.chat.codec import BadRequest, codec_for
from kwaigym.chat.openai_responses import CODEC
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

FIXTURES = Path(__file__).parent / "fixtures" / "openai-responses"
TOOL = {
    "type": "function",
    "name": "exec_command",
    "description": "Run a shell command.",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
    "strict": False,
}
REASONING_ITEM = {
    "type": "reasoning",
    "id": "rs_1",
    "summary": [{"type": "summary_text", "text": "Look first."}],
    "encrypted_content": "gAAAA-opaque",
}
CALL_ITEM = {
    "type": "function_call",
    "id": "fc_1",
    "call_id": "call_1",
    "name": "exec_command",
    "arguments": '{"cmd":"ls"}',
    "status": "completed",
}
OUTPUT_ITEM = {"type": "function_call_output", "call_id": "call_1", "output": "a.txt\n"}
ASSISTANT_ITEM = {
    "type": "message",
    "id": "msg_1",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "Listing.", "annotations": []}],
}


def roundtrip(body: dict[str, Any]) -> dict[str, Any]:
    return CODEC.encode_request(CODEC.decode_request(body))


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-test", "input": "hi"} | fields


# --- requests ------------------------------------------------------------------------------------


def test_registered_under_its_name():
    """codec_for('openai-responses') is this codec."""
    assert CODEC.name == "openai-responses" and codec_for("openai-responses") is CODEC


def test_string_input_is_one_user_message_and_round_trips():
    """A string ``input`` is one user message marked so it goes back as a string."""
    request = CODEC.decode_request(body(input="say hi"))
    assert [(m.role, m.text) for m in request.messages] == [("user", "say hi")]
    assert request.format == "openai-responses" and roundtrip(body(input="say hi")) == body(input="say hi")


def test_instructions_become_a_leading_system_message():
    """``instructions`` is the first message, a system one, and is encoded back as ``instructions``."""
    wire = body(instructions="Be terse.", input=[{"role": "user", "content": "hi"}])
    request = CODEC.decode_request(wire)
    assert [(m.role, m.text) for m in request.messages] == [("system", "Be terse."), ("user", "hi")]
    assert request.messages[0].extra == {"from": "instructions"}
    assert roundtrip(wire) == wire
    assert roundtrip(body(instructions="")) == body(instructions="")


@pytest.mark.parametrize("role", ["user", "assistant", "system", "developer"])
@pytest.mark.parametrize(
    "content", ["plain", [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]]
)
def test_message_items_of_every_role_round_trip(role, content):
    """Message items of each role, with string or part-list content, come back unchanged."""
    item = {"type": "message", "role": role, "content": content, "id": "msg_x"}
    if role == "assistant" and isinstance(content, list):
        item["content"] = [{"type": "output_text", "text": "a", "annotations": []}]
    request = CODEC.decode_request(body(input=[item]))
    assert request.messages[0].role == ("system" if role == "developer" else role)
    assert roundtrip(body(input=[item])) == body(input=[item])


def test_developer_message_is_a_system_message_marked_developer():
    """``developer`` becomes a system message whose ``extra`` says so."""
    message = CODEC.decode_request(body(input=[{"role": "developer", "content": "rules"}])).messages[0]
    assert (message.role, message.text, message.extra) == ("system", "rules", {"role": "developer"})


def test_content_parts_become_text_and_raw_image_parts():
    """``input_text`` -> TextPart keeping its type; ``input_image`` and ``input_file`` are kept whole."""
    image = {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"}
    file = {"type": "input_file", "file_id": "file_1"}
    parts = [{"type": "input_text", "text": "look"}, image, file]
    message = CODEC.decode_request(body(input=[{"role": "user", "content": parts}])).messages[0]
    assert message.content == [
        TextPart(text="look", extra={"type": "input_text"}),
        ImagePart(raw=image),
        ImagePart(raw=file),
    ]
    assert roundtrip(body(input=[{"role": "user", "content": parts}]))["input"][0]["content"] == parts


def test_one_turn_of_items_is_one_assistant_message():
    """Reasoning, message and function call items of one turn form one assistant message, in order."""
    items = [{"role": "user", "content": "go"}, REASONING_ITEM, ASSISTANT_ITEM, CALL_ITEM, OUTPUT_ITEM]
    messages = CODEC.decode_request(body(input=items)).messages
    assert [m.role for m in messages] == ["user", "assistant", "tool"]
    reasoning, text, call = messages[1].content
    assert reasoning == ReasoningPart(text="Look first.", signature="gAAAA-opaque", extra={"id": "rs_1"})
    assert text == TextPart(text="Listing.", extra={"type": "output_text", "annotations": []})
    assert call == ToolCall(
        id="call_1",
        name="exec_command",
        arguments='{"cmd":"ls"}',
        extra={"id": "fc_1", "status": "completed"},
    )
    assert messages[1].extra == {"type": "message", "id": "msg_1", "status": "completed"}
    assert messages[2].content == [ToolResult(call_id="call_1", content=[TextPart(text="a.txt\n")])]
    assert roundtrip(body(input=items)) == body(input=items)


def test_second_message_item_starts_a_new_assistant_message():
    """Two assistant message items in a row stay two messages, each with its own fields."""
    second = ASSISTANT_ITEM | {"id": "msg_2", "phase": "final_answer"}
    items = [ASSISTANT_ITEM, CALL_ITEM, second, REASONING_ITEM]
    messages = CODEC.decode_request(body(input=items)).messages
    assert [len(m.content) for m in messages] == [2, 2]
    assert messages[1].extra["phase"] == "final_answer"
    assert roundtrip(body(input=items)) == body(input=items)


@pytest.mark.parametrize(
    "item",
    [
        REASONING_ITEM | {"summary": [], "content": None},  # Codex replays content: null
        REASONING_ITEM
        | {"summary": [{"type": "summary_text", "text": "a"}, {"type": "summary_text", "text": "b"}]},
        {
            "type": "reasoning",
            "id": "rs_2",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "raw"}],
        },
        {"type": "reasoning", "summary": None},
        REASONING_ITEM | {"encrypted_content": None, "status": "completed"},
    ],
)
def test_reasoning_item_variants_round_trip(item):
    """Summaries of several parts, raw reasoning content, null fields: all come back as sent."""
    assert roundtrip(body(input=[item])) == body(input=[item])


def test_reasoning_text_is_the_summary_or_else_the_content():
    """Summary parts join with a blank line; without a summary the ``reasoning_text`` content is the text."""
    two = REASONING_ITEM | {
        "summary": [{"type": "summary_text", "text": "a"}, {"type": "summary_text", "text": "b"}]
    }
    raw = {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "raw"}]}
    (part,) = CODEC.decode_request(body(input=[two])).messages[0].content
    (other,) = CODEC.decode_request(body(input=[raw])).messages[0].content
    assert (part.text, part.signature, other.text, other.signature) == ("a\n\nb", "gAAAA-opaque", "raw", None)


def test_edited_reasoning_text_is_sent_as_the_summary():
    """A reasoning part whose text changed goes out with that text as its one summary part."""
    message = Message(
        role="assistant", content=[ReasoningPart(text="new", extra={"summary": [], "id": "rs_9"})]
    )
    request = ChatRequest(format="openai-responses", model="m", messages=[message])
    (item,) = CODEC.encode_request(request)["input"]
    assert item == {"type": "reasoning", "id": "rs_9", "summary": [{"type": "summary_text", "text": "new"}]}


@pytest.mark.parametrize(
    "output",
    [
        "plain",
        "",
        [{"type": "input_text", "text": "a"}],
        [
            {"type": "input_text", "text": "see"},
            {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"},
        ],
    ],
)
def test_function_call_output_forms_round_trip(output):
    """A tool output given as a string or as parts comes back in the same form."""
    item = OUTPUT_ITEM | {"output": output, "id": "fco_1"}
    (result,) = CODEC.decode_request(body(input=[item])).messages[0].content
    assert isinstance(result, ToolResult) and result.call_id == "call_1" and result.extra == {"id": "fco_1"}
    assert roundtrip(body(input=[item])) == body(input=[item])


@pytest.mark.parametrize(
    ("item", "role"),
    [
        (
            {"type": "local_shell_call", "call_id": "c", "action": {"type": "exec", "command": ["ls"]}},
            "assistant",
        ),
        ({"type": "local_shell_call_output", "call_id": "c", "output": "x"}, "user"),
        (
            {"type": "custom_tool_call", "call_id": "c", "name": "apply_patch", "input": "*** Begin"},
            "assistant",
        ),
        ({"type": "custom_tool_call_output", "call_id": "c", "output": "ok"}, "user"),
        (
            {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}},
            "assistant",
        ),
        ({"type": "compaction", "encrypted_content": "zzz"}, "assistant"),
        ({"type": "item_reference", "id": "msg_0"}, "user"),
        ({"type": "message", "role": "assistant", "content": []}, "assistant"),
    ],
)
def test_other_items_are_kept_raw(item, role):
    """Items kwaigym does not interpret are empty messages carrying the item whole."""
    (message,) = CODEC.decode_request(body(input=[item])).messages
    assert (message.role, message.content, message.extra) == (role, [], {"item": item})
    assert roundtrip(body(input=[item, OUTPUT_ITEM])) == body(input=[item, OUTPUT_ITEM])


def test_tools_function_and_others():
    """Function tools are interpreted (``strict`` in extra); web_search, namespace, custom are kept whole."""
    namespace = {"type": "namespace", "name": "agents", "description": "d", "tools": [TOOL]}
    others = [
        {"type": "web_search", "external_web_access": False},
        namespace,
        {"type": "custom", "name": "apply_patch"},
    ]
    request = CODEC.decode_request(body(tools=[TOOL, *others], tool_choice="auto"))
    assert request.tools[0] == Tool(
        name="exec_command",
        description="Run a shell command.",
        parameters=TOOL["parameters"],
        extra={"strict": False},
    )
    assert [(t.name, t.extra) for t in request.tools[1:]] == [
        ("web_search", others[0]),
        ("agents", namespace),
        ("apply_patch", others[2]),
    ]
    assert request.tool_choice == "auto"
    bare = {"type": "function", "name": "noop"}
    assert roundtrip(body(tools=[TOOL, *others, bare])) == body(tools=[TOOL, *others, bare])


def test_sampling_fields_are_interpreted():
    """max_output_tokens, temperature, top_p, top_logprobs, reasoning and the logprobs include are params."""
    wire = body(
        max_output_tokens=512,
        temperature=0.3,
        top_p=0.8,
        top_logprobs=5,
        reasoning={"effort": "high", "summary": "auto"},
        include=["reasoning.encrypted_content", "message.output_text.logprobs"],
    )
    request = CODEC.decode_request(wire)
    assert request.params == SamplingParams(
        max_tokens=512,
        temperature=0.3,
        top_p=0.8,
        logprobs=True,
        top_logprobs=5,
        reasoning={"effort": "high", "summary": "auto"},
    )
    assert request.extra == {"include": ["reasoning.encrypted_content", "message.output_text.logprobs"]}
    assert roundtrip(wire) == wire


def test_other_top_level_fields_stay_in_extra():
    """store, parallel_tool_calls, prompt_cache_key, text, previous_response_id... go to extra and back."""
    rest = {
        "store": False,
        "parallel_tool_calls": True,
        "prompt_cache_key": "thread-1",
        "text": {"format": {"type": "text"}, "verbosity": "low"},
        "previous_response_id": "resp_0",
        "truncation": "auto",
        "service_tier": "flex",
        "client_metadata": {"x-codex-installation-id": "i"},
        "stream_options": {"include_obfuscation": False},
    }
    request = CODEC.decode_request(body(**rest, stream=True, metadata={"a": "b"}, user="u1"))
    assert request.extra == rest and request.stream
    assert request.metadata == {"metadata": {"a": "b"}, "user": "u1"}
    assert roundtrip(body(**rest, stream=True, metadata={"a": "b"}, user="u1")) == body(
        **rest, stream=True, metadata={"a": "b"}, user="u1"
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"stream": False},
        {"metadata": {}},
        {"reasoning": {}},
        {"tools": []},
        {"instructions": None},
        {"tool_choice": None},
        {"user": ""},
        {"max_output_tokens": None, "temperature": None},
        {"input": []},
    ],
)
def test_fields_that_say_nothing_round_trip(fields):
    """Optional fields sent as null or as the default are echoed as sent."""
    assert roundtrip(body(**fields)) == body(**fields)


def test_request_from_another_format_is_translated():
    """Anthropic-style tool results, images and chat reasoning settings become Responses items."""
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    request = ChatRequest(
        format="openai-responses",
        model="m",
        messages=[
            Message(role="system", content=[TextPart(text="sys")]),
            Message(role="user", content=[TextPart(text="look"), ImagePart(raw=image)]),
            Message(
                role="assistant",
                content=[
                    ReasoningPart(text="hm"),
                    TextPart(text="ok"),
                    ToolCall(id="t1", name="f", arguments="{}"),
                ],
            ),
            Message(
                role="user",
                content=[ToolResult(call_id="t1", content=[TextPart(text="done")]), TextPart(text="next")],
            ),
        ],
        tools=[Tool(name="f", description="does f", parameters={"type": "object"})],
        params=SamplingParams(max_tokens=10, logprobs=True, reasoning={"reasoning_effort": "low"}),
    )
    assert CODEC.encode_request(request) == {
        "model": "m",
        "input": [
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
                ],
            },
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "hm"}]},
            {"role": "assistant", "content": "ok"},
            {"type": "function_call", "call_id": "t1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "t1", "output": "done"},
            {"role": "user", "content": "next"},
        ],
        "tools": [
            {"type": "function", "name": "f", "description": "does f", "parameters": {"type": "object"}}
        ],
        "max_output_tokens": 10,
        "reasoning": {"effort": "low"},
        "include": ["message.output_text.logprobs"],
    }


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([], "request body: expected an object, got list"),
        ({"input": "hi"}, "model: expected a string, got no such field"),
        (body(model=3), "model: expected a string, got int"),
        ({"model": "m"}, "input: expected a string or a list of items, got no such field"),
        (body(input=5), "input: expected a string or a list of items, got int"),
        (body(input=["hi"]), "input[0]: expected an object, got str"),
        (body(input=[{"content": "x"}]), "input[0]: expected an item with a 'type'"),
        (body(input=[{"role": "robot", "content": "x"}]), "input[0].role: expected one of user, assistant"),
        (
            body(input=[{"role": "user"}]),
            "input[0].content: expected a string or a list of content parts, got no such field",
        ),
        (
            body(input=[{"role": "user", "content": 3}]),
            "input[0].content: expected a string or a list of content parts, got int",
        ),
        (
            body(input=[{"role": "user", "content": [{"text": "x"}]}]),
            "input[0].content[0].type: expected a string",
        ),
        (
            body(input=[{"role": "user", "content": [{"type": "input_text"}]}]),
            "input[0].content[0].text: expected a string",
        ),
        (body(input=[CALL_ITEM | {"call_id": None}]), "input[0].call_id: expected a string, got null"),
        (body(input=[CALL_ITEM | {"arguments": {}}]), "input[0].arguments: expected a string, got object"),
        (
            body(input=[{"type": "function_call_output", "call_id": "c"}]),
            "input[0].output: expected a string or a list",
        ),
        (body(input=[REASONING_ITEM | {"summary": "s"}]), "input[0].summary: expected a list, got str"),
        (
            body(input=[REASONING_ITEM | {"summary": [{"text": 1}]}]),
            "input[0].summary[0].text: expected a string, got int",
        ),
        (
            body(input=[REASONING_ITEM | {"encrypted_content": 7}]),
            "input[0].encrypted_content: expected a string",
        ),
        (body(instructions=["x"]), "instructions: expected a string, got list"),
        (body(tools={}), "tools: expected a list, got object"),
        (body(tools=[{"name": "f"}]), "tools[0].type: expected a string, got no such field"),
        (body(tools=[{"type": "function"}]), "tools[0].name: expected a string, got no such field"),
        (body(tools=[TOOL | {"parameters": "x"}]), "tools[0].parameters: expected an object, got str"),
        (body(include=[1]), "include[0]: expected a string, got int"),
        (body(max_output_tokens="9"), "max_output_tokens: expected an integer, got str"),
        (body(temperature=True), "temperature: expected a number, got bool"),
        (body(stream="yes"), "stream: expected a boolean, got str"),
        (body(tool_choice=1), "tool_choice: expected a string or an object, got int"),
        (body(metadata=[]), "metadata: expected an object, got list"),
        (body(reasoning="high"), "reasoning: expected an object, got str"),
    ],
)
def test_malformed_bodies_are_bad_requests(bad, message):
    """Malformed bodies raise BadRequest naming the field and what was expected."""
    with pytest.raises(BadRequest) as error:
        CODEC.decode_request(bad)
    assert str(error.value).startswith(message)


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


def item(**fields: st.SearchStrategy) -> st.SearchStrategy:
    """An item or part: its fields mostly valid, plus optional extra fields."""
    fixed = {k: v if k == "type" else mostly(v) for k, v in fields.items()}
    return st.fixed_dictionaries(fixed, optional={"id": mostly(TEXT), "status": JSON, "zz": JSON})


TEXT_PART = item(type=st.sampled_from(["input_text", "output_text"]), text=TEXT)
PART = st.one_of(
    TEXT_PART, item(type=st.sampled_from(["input_image", "input_file", "refusal"]), image_url=JSON)
)
CONTENT = mostly(st.one_of(TEXT, st.lists(PART, max_size=3)))
SUMMARY = st.lists(item(type=st.just("summary_text"), text=TEXT), max_size=2)
ITEM = st.one_of(
    st.fixed_dictionaries(
        {"role": mostly(st.sampled_from(["user", "assistant", "system", "developer"])), "content": CONTENT},
        optional={"type": st.just("message"), "id": TEXT, "phase": JSON},
    ),
    item(type=st.just("reasoning"), summary=SUMMARY, encrypted_content=st.one_of(TEXT, st.none())),
    item(
        type=st.just("reasoning"),
        summary=st.just([]),
        content=st.lists(item(type=st.just("reasoning_text"), text=TEXT), max_size=2),
    ),
    item(type=st.just("function_call"), call_id=TEXT, name=TEXT, arguments=TEXT),
    item(type=st.just("function_call_output"), call_id=TEXT, output=CONTENT),
    item(type=st.sampled_from(["local_shell_call", "custom_tool_call", "item_reference", "x"]), input=JSON),
    st.dictionaries(st.sampled_from(["type", "role", "content", "call_id", "summary", "output"]), JSON),
)
TOOL_ST = st.one_of(
    st.fixed_dictionaries(
        {"type": mostly(st.just("function")), "name": mostly(TEXT)},
        optional={
            "description": mostly(TEXT),
            "parameters": mostly(st.dictionaries(TEXT, JSON, max_size=2)),
            "strict": JSON,
        },
    ),
    st.fixed_dictionaries(
        {"type": mostly(st.sampled_from(["web_search", "namespace", "custom"]))},
        optional={"name": JSON, "tools": JSON},
    ),
)
NEAR_VALID = st.fixed_dictionaries(
    {"model": mostly(TEXT), "input": mostly(st.one_of(TEXT, st.lists(ITEM, max_size=5)))},
    optional={
        "instructions": mostly(st.one_of(TEXT, st.none())),
        "tools": mostly(st.lists(TOOL_ST, max_size=3)),
        "tool_choice": mostly(
            st.one_of(st.sampled_from(["auto", "none", "required"]), st.dictionaries(TEXT, JSON, max_size=2))
        ),
        "max_output_tokens": mostly(st.integers(0, 10**6)),
        "temperature": mostly(st.floats(0, 2)),
        "top_p": mostly(st.floats(0, 1)),
        "top_logprobs": mostly(st.integers(0, 20)),
        "reasoning": mostly(st.dictionaries(TEXT, JSON, max_size=2)),
        "include": mostly(
            st.lists(
                st.sampled_from(["reasoning.encrypted_content", "message.output_text.logprobs"]), max_size=2
            )
        ),
        "metadata": mostly(st.dictionaries(TEXT, TEXT, max_size=2)),
        "user": mostly(TEXT),
        "stream": mostly(st.booleans()),
        "store": JSON,
    },
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.one_of(JSON, NEAR_VALID))
def test_fuzzed_bodies_raise_only_bad_request_and_round_trip_when_valid(fuzzed):
    """Any JSON body either raises BadRequest or decodes and re-encodes to itself."""
    try:
        request = CODEC.decode_request(fuzzed)
    except BadRequest:
        return
    assert CODEC.encode_request(request) == fuzzed


# --- responses -----------------------------------------------------------------------------------

REQUEST = CODEC.decode_request(body(instructions="Be terse.", tools=[TOOL], stream=True, store=False))
LOGPROBS = (
    TokenLogprob(token="Hi", logprob=-0.1, top=(("Hi", -0.1), ("Hey", -2.5))),
    TokenLogprob(token="é", logprob=-0.5),
)
COMPLETIONS = {
    "text": Completion(text="Hello!", usage=Usage(input_tokens=50, output_tokens=3)),
    "reasoning_and_tools": Completion(
        text="Running two commands.",
        reasoning=(ReasoningPart(text="Plan it.", signature="gAAAA-1"), ReasoningPart(text="")),
        tool_calls=(
            ToolCall(id="call_a", name="exec_command", arguments='{"cmd": "ls -la"}'),
            ToolCall(id="call_b", name="exec_command", arguments='{"cmd":"cat é"}', extra={"namespace": "x"}),
        ),
        usage=Usage(
            input_tokens=120,
            output_tokens=30,
            cache_read_tokens=80,
            cache_write_tokens=20,
            reasoning_tokens=9,
        ),
    ),
    "tool_only": Completion(tool_calls=(ToolCall(id="call_c", name="noop", arguments="not json"),)),
    "kept_ids": Completion(
        reasoning=(ReasoningPart(text="r", signature="s", extra={"id": "rs_upstream"}),),
        tool_calls=(ToolCall(id="call_d", name="f", arguments="{}", extra={"id": "fc_upstream"}),),
    ),
    "logprobs": Completion(text="Hié", logprobs=LOGPROBS),
    "no_logprobs_tokens": Completion(text="", logprobs=()),
    "length": Completion(text="cut", finish_reason="length"),
    "refusal": Completion(text="no", finish_reason="content_filter"),
    "length_in_a_call": Completion(
        tool_calls=(ToolCall(id="call_e", name="f", arguments='{"a":'),), finish_reason="length"
    ),
    "error": Completion(finish_reason="error"),
    "empty": Completion(),
}


def stamped(c: Completion, response_id: str) -> Completion:
    """``c`` as it comes back: with the wire's id, and the request's model when it had none."""
    return attrs.evolve(c, id=response_id, model=c.model or REQUEST.model)


@pytest.mark.parametrize("name", COMPLETIONS)
def test_response_round_trips(name):
    """decode_response(encode_response(c)) is c, with the response id and model filled in."""
    wire = CODEC.encode_response(COMPLETIONS[name], REQUEST, response_id="resp_1")
    assert CODEC.decode_response(json.loads(json.dumps(wire))) == stamped(COMPLETIONS[name], "resp_1")


@pytest.mark.parametrize("name", COMPLETIONS)
def test_stream_round_trips_with_keepalives_and_any_chunking(name):
    """decode_stream(parse(prelude + keep-alives + completion)), cut anywhere, is c."""
    c = COMPLETIONS[name]
    stream = CODEC.sse_prelude(REQUEST, response_id="resp_2") + CODEC.sse_keepalive() * 3
    text = (stream + CODEC.sse_completion(c, REQUEST, response_id="resp_2")).decode()
    for size in (len(text), 13, 1):
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        assert CODEC.decode_stream(sse.parse(chunks)) == stamped(c, "resp_2")


def test_response_wire_shape():
    """The JSON answer is a ``response`` object: reasoning, message and function_call items, usage."""
    wire = CODEC.encode_response(COMPLETIONS["reasoning_and_tools"], REQUEST, response_id="resp_3")
    assert (wire["id"], wire["object"], wire["status"], wire["model"]) == (
        "resp_3",
        "response",
        "completed",
        "gpt-test",
    )
    assert (
        isinstance(wire["created_at"], int) and wire["error"] is None and wire["incomplete_details"] is None
    )
    assert (wire["instructions"], wire["tools"], wire["store"]) == ("Be terse.", [TOOL], False)
    assert [i["type"] for i in wire["output"]] == [
        "reasoning",
        "reasoning",
        "message",
        "function_call",
        "function_call",
    ]
    assert wire["output"][0] == {
        "id": "rs_3_0",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "Plan it."}],
        "encrypted_content": "gAAAA-1",
    }
    assert wire["output"][1] == {"id": "rs_3_1", "type": "reasoning", "summary": []}
    assert wire["output"][2] == {
        "id": "msg_3_2",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Running two commands.", "annotations": []}],
    }
    assert wire["output"][4] == {
        "id": "fc_3_4",
        "type": "function_call",
        "namespace": "x",
        "call_id": "call_b",
        "name": "exec_command",
        "arguments": '{"cmd":"cat é"}',
        "status": "completed",
    }
    assert wire["usage"] == {
        "input_tokens": 120,
        "input_tokens_details": {"cached_tokens": 80, "cache_write_tokens": 20},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 9},
        "total_tokens": 150,
    }


@pytest.mark.parametrize(
    ("name", "status", "details", "finish"),
    [
        ("text", "completed", None, "stop"),
        ("tool_only", "completed", None, "tool_calls"),
        ("length", "incomplete", {"reason": "max_output_tokens"}, "length"),
        ("refusal", "incomplete", {"reason": "content_filter"}, "content_filter"),
        ("error", "failed", None, "error"),
    ],
)
def test_finish_reasons_map_to_status(name, status, details, finish):
    """stop/tool_calls -> completed, length -> incomplete max_output_tokens, error -> failed."""
    wire = CODEC.encode_response(COMPLETIONS[name], REQUEST, response_id="resp_4")
    assert (wire["status"], wire["incomplete_details"]) == (status, details)
    assert CODEC.decode_response(wire).finish_reason == finish


def test_logprobs_are_sent_on_the_output_text():
    """Token logprobs go on output_text with bytes and top alternatives (token ids have no place)."""
    wire = CODEC.encode_response(COMPLETIONS["logprobs"], REQUEST, response_id="resp_5")
    assert wire["output"][0]["content"][0]["logprobs"][0] == {
        "token": "Hi",
        "logprob": -0.1,
        "bytes": [72, 105],
        "top_logprobs": [
            {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
            {"token": "Hey", "logprob": -2.5, "bytes": [72, 101, 121]},
        ],
    }


def events_of(c: Completion, request: ChatRequest = REQUEST) -> list[dict[str, Any]]:
    stream = CODEC.sse_prelude(request, response_id="resp_6") + CODEC.sse_keepalive()
    stream += CODEC.sse_completion(c, request, response_id="resp_6")
    parsed = list(sse.parse([stream]))
    assert all(name == json.loads(data)["type"] for name, data in parsed)
    return [json.loads(data) for _, data in parsed]


def test_stream_event_sequence():
    """The full event sequence Codex needs, with type and increasing sequence numbers on every event."""
    events = events_of(COMPLETIONS["reasoning_and_tools"])
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    kinds = [e["type"].removeprefix("response.") for e in events]
    reasoning = ["output_item.added", "reasoning_summary_part.added", "reasoning_summary_text.delta"]
    reasoning += ["reasoning_summary_text.done", "reasoning_summary_part.done", "output_item.done"]
    message = ["output_item.added", "content_part.added", "output_text.delta", "output_text.done"]
    message += ["content_part.done", "output_item.done"]
    call = [
        "output_item.added",
        "function_call_arguments.delta",
        "function_call_arguments.done",
        "output_item.done",
    ]
    empty_reasoning = ["output_item.added", "output_item.done"]
    assert kinds == [
        "created",
        "in_progress",
        *reasoning,
        *empty_reasoning,
        *message,
        *call,
        *call,
        "completed",
    ]
    created, added, final = events[0]["response"], events[2]["item"], events[-1]["response"]
    assert (created["status"], created["output"], created["usage"]) == ("in_progress", [], None)
    assert added == {"id": "rs_6_0", "type": "reasoning", "summary": [], "status": "in_progress"}
    assert final == CODEC.encode_response(
        COMPLETIONS["reasoning_and_tools"], REQUEST, response_id="resp_6"
    ) | {"created_at": final["created_at"]}
    assert [e["item"] for e in events if e["type"] == "response.output_item.done"] == final["output"]
    text = next(e for e in events if e["type"] == "response.output_text.delta")
    assert (text["item_id"], text["output_index"], text["content_index"], text["delta"]) == (
        "msg_6_2",
        2,
        0,
        "Running two commands.",
    )
    args = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert (args["item_id"], args["name"], args["arguments"]) == (
        "fc_6_3",
        "exec_command",
        '{"cmd": "ls -la"}',
    )


def test_incomplete_answer_still_ends_with_response_completed():
    """A truncated answer ends in response.completed, status incomplete (Codex fails on the other)."""
    final = events_of(COMPLETIONS["length"])[-1]
    assert (final["type"], final["response"]["status"]) == ("response.completed", "incomplete")
    assert events_of(COMPLETIONS["error"])[-1]["type"] == "response.failed"


def test_keepalive_is_an_sse_comment():
    """The keep-alive is a comment line, which SSE clients skip."""
    assert CODEC.sse_keepalive().startswith(b":") and list(sse.parse([CODEC.sse_keepalive()])) == []


def stream_of(events: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
    return [(e["type"], json.dumps(e)) for e in events]


def test_decode_stream_rebuilds_from_events_without_the_final_response():
    """Cut before response.completed, the items are rebuilt from added/delta/done events; finish is error."""
    events = events_of(COMPLETIONS["reasoning_and_tools"])[:-1]
    got = CODEC.decode_stream(stream_of(events))
    want = COMPLETIONS["reasoning_and_tools"]
    assert (got.text, got.reasoning, got.tool_calls, got.finish_reason) == (
        want.text,
        want.reasoning,
        want.tool_calls,
        "error",
    )
    deltas_only = [e for e in events if e["type"] != "response.output_item.done"]
    got = CODEC.decode_stream(stream_of(deltas_only))
    assert (got.text, [c.arguments for c in got.tool_calls]) == (
        want.text,
        [c.arguments for c in want.tool_calls],
    )
    assert [r.text for r in got.reasoning] == ["Plan it.", ""]


def test_decode_stream_prefers_the_final_response():
    """The response.completed object wins over the deltas; an empty final output falls back to the items."""
    events = events_of(COMPLETIONS["text"])
    for e in events:
        if e["type"] == "response.output_text.delta":
            e["delta"] = "something else"
    assert CODEC.decode_stream(stream_of(events)).text == "Hello!"
    events[-1]["response"]["output"] = []
    assert CODEC.decode_stream(stream_of(events)).text == "Hello!"


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([(None, "not json")], "stream: an event is not JSON"),
        ([(None, "[1]")], "stream event: expected an object, got list"),
        (
            [("error", '{"type":"error","code":"rate_limit_exceeded","message":"slow down"}')],
            "the server sent an error",
        ),
        (
            [
                (
                    None,
                    '{"type":"response.failed","response":{"id":"r","output":[],"error":{"code":"server_error"}}}',
                )
            ],
            "the server answered with an error",
        ),
        (
            [(None, '{"type":"response.completed","response":[]}')],
            "stream: response.completed.response: expected an object",
        ),
    ],
)
def test_bad_streams_are_bad_requests(events, message):
    """Non-JSON events, error events and failed responses raise BadRequest."""
    with pytest.raises(BadRequest, match=message):
        CODEC.decode_stream(events)


def test_decode_response_errors():
    """An error body or an object without output raises BadRequest naming the field."""
    with pytest.raises(BadRequest, match="the server answered with an error"):
        CODEC.decode_response({"error": {"message": "bad key", "type": "invalid_request_error"}})
    with pytest.raises(BadRequest, match="response.output: expected a list, got no such field"):
        CODEC.decode_response({"id": "resp_1", "object": "response"})
    with pytest.raises(BadRequest, match=r"response.output\[0\].call_id: expected a string"):
        CODEC.decode_response({"output": [{"type": "function_call", "name": "f", "arguments": "{}"}]})


def test_upstream_answer_keeps_what_matters():
    """An OpenAI-made response: usage with cached tokens, vLLM-style raw reasoning, hosted items skipped."""
    upstream = {
        "id": "resp_68af",
        "object": "response",
        "status": "completed",
        "model": "gpt-5",
        "output": [
            {
                "id": "rs_68af1",
                "type": "reasoning",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": "think"}],
            },
            {"id": "ws_1", "type": "web_search_call", "status": "completed"},
            {
                "id": "msg_68af2",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "hi", "annotations": []}],
            },
        ],
        "usage": {
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 60},
            "output_tokens": 7,
            "output_tokens_details": {"reasoning_tokens": 4},
            "total_tokens": 107,
        },
    }
    got = CODEC.decode_response(upstream)
    assert (got.text, got.id, got.model, got.finish_reason) == ("hi", "resp_68af", "gpt-5", "stop")
    assert got.reasoning == (
        ReasoningPart(
            text="think",
            extra={"id": "rs_68af1", "summary": [], "content": [{"type": "reasoning_text", "text": "think"}]},
        ),
    )
    assert got.usage == Usage(input_tokens=100, output_tokens=7, cache_read_tokens=60, reasoning_tokens=4)
    again = CODEC.encode_response(got, REQUEST, response_id="resp_7")["output"][0]
    assert again == upstream["output"][0]


# --- the real openai SDK -----------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        wire = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.bodies.append(wire)  # type: ignore[attr-defined]
        request = CODEC.decode_request(wire)
        completion = self.server.completion  # type: ignore[attr-defined]
        if request.stream:
            data = CODEC.sse_prelude(request, response_id="resp_sdk") + CODEC.sse_keepalive() * 2
            data += CODEC.sse_completion(completion, request, response_id="resp_sdk")
            kind = "text/event-stream"
        else:
            data = json.dumps(CODEC.encode_response(completion, request, response_id="resp_sdk")).encode()
            kind = "application/json"
        self.send_response(200)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    """A loopback server answering /v1/responses with the codec: ``server.completion`` is the answer."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.bodies, httpd.completion = [], COMPLETIONS["reasoning_and_tools"]  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()
    for wire in httpd.bodies:  # type: ignore[attr-defined]
        assert roundtrip(wire) == wire


def url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/v1"


def check_response(response: Any, c: Completion) -> None:
    """The SDK's parsed Response holds the completion."""
    assert response.id == "resp_sdk" and response.status == "completed"
    assert response.output_text == c.text
    calls = [item for item in response.output if item.type == "function_call"]
    assert [(i.call_id, i.name, i.arguments) for i in calls] == [
        (t.id, t.name, t.arguments) for t in c.tool_calls
    ]
    reasoning = [item for item in response.output if item.type == "reasoning"]
    assert [r.encrypted_content for r in reasoning] == [r.signature for r in c.reasoning]
    assert response.usage.input_tokens_details.cached_tokens == c.usage.cache_read_tokens
    assert response.usage.output_tokens_details.reasoning_tokens == c.usage.reasoning_tokens


def test_sdk_accepts_json_answer(server):
    """client.responses.create (not streamed, with tools) parses the JSON answer."""
    with openai.OpenAI(base_url=url(server), api_key="k", max_retries=0) as client:
        response = client.responses.create(
            model="gpt-test", input="hi", tools=[TOOL], instructions="Be terse."
        )
    check_response(response, server.completion)


def test_sdk_accepts_streamed_answer(server):
    """client.responses.create(stream=True) parses every event; the completed one holds the whole response."""
    with openai.OpenAI(base_url=url(server), api_key="k", max_retries=0) as client:
        with client.responses.create(model="gpt-test", input="hi", tools=[TOOL], stream=True) as stream:
            events = list(stream)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    check_response(events[-1].response, server.completion)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == server.completion.text


def test_sdk_stream_helper_accumulates_the_answer(server):
    """client.responses.stream() accumulates deltas into its snapshot and returns the final response."""
    server.completion = Completion(
        text="Hello there", usage=Usage(input_tokens=5, output_tokens=2), finish_reason="length"
    )
    with openai.OpenAI(base_url=url(server), api_key="k", max_retries=0) as client:
        with client.responses.stream(model="gpt-test", input=[{"role": "user", "content": "hi"}]) as stream:
            texts = [e.snapshot for e in stream if e.type == "response.output_text.delta"]
            final = stream.get_final_response()
    assert texts == ["Hello there"] and final.output_text == "Hello there"
    assert (final.status, final.incomplete_details.reason) == ("incomplete", "max_output_tokens")


async def test_async_sdk_streams_tool_calls(server):
    """AsyncOpenAI's stream helper sees the function call arguments and the reasoning summary."""
    async with openai.AsyncOpenAI(base_url=url(server), api_key="k", max_retries=0) as client:
        async with client.responses.stream(model="gpt-test", input="hi", tools=[TOOL]) as stream:
            kinds = [event.type async for event in stream]
            final = await stream.get_final_response()
    assert (
        "response.function_call_arguments.delta" in kinds and "response.reasoning_summary_text.delta" in kinds
    )
    check_response(final, server.completion)


def test_sdk_history_with_its_own_output_items_round_trips(server):
    """Feeding response.output back as input (the SDK's usual loop) decodes to one assistant turn."""
    with openai.OpenAI(base_url=url(server), api_key="k", max_retries=0) as client:
        first = client.responses.create(model="gpt-test", input="hi", tools=[TOOL])
        history: list[Any] = [{"role": "user", "content": "hi"}, *first.output]
        history += [
            {"type": "function_call_output", "call_id": c.id, "output": "ok"}
            for c in server.completion.tool_calls
        ]
        client.responses.create(model="gpt-test", input=history, tools=[TOOL])
    messages = CODEC.decode_request(server.bodies[-1]).messages
    assert [m.role for m in messages] == ["user", "assistant", "tool", "tool"]
    assert [p.signature for p in messages[1].content if isinstance(p, ReasoningPart)] == ["gAAAA-1", None]
    assert [c.id for c in messages[1].tool_calls] == ["call_a", "call_b"]


# --- captured traffic ----------------------------------------------------------------------------------


CAPTURED = sorted(p.name for p in FIXTURES.glob("*_[0-9]_*.json"))


def test_fixtures_were_captured():
    """Codex CLI and SDK requests are on disk, each listed with its headers."""
    assert any(n.startswith("codex_") for n in CAPTURED) and any(
        n.startswith("sdk_python_") for n in CAPTURED
    )
    listed = {r["fixture"] for p in FIXTURES.glob("*_requests.json") for r in json.loads(p.read_text())}
    assert set(CAPTURED) <= listed
    for p in FIXTURES.glob("*_requests.json"):
        assert all("authorization" not in r["headers"] for r in json.loads(p.read_text()))


@pytest.mark.parametrize("name", CAPTURED)
def test_captured_bodies_decode_and_round_trip(name):
    """Every captured request decodes and encodes back to itself."""
    wire = json.loads((FIXTURES / name).read_text())
    assert roundtrip(wire) == wire


def test_codex_tool_turn_is_understood():
    """Codex's second request: developer messages, the replayed turn as one assistant message, the output."""
    (path,) = FIXTURES.glob("codex_*_2_tool_output.json")
    request = CODEC.decode_request(json.loads(path.read_text()))
    assert (
        request.stream and request.tool_choice == "auto" and request.params.reasoning == {"summary": "auto"}
    )
    assert request.extra["include"] == ["reasoning.encrypted_content"] and request.extra["store"] is False
    assert [m.extra.get("role") for m in request.messages[:2]] == ["developer", "developer"]
    assert [m.role for m in request.messages[2:]] == ["user", "user", "assistant", "tool"]
    reasoning, call = request.messages[4].content
    assert (reasoning.text, reasoning.signature) == ("The user wants a greeting; run echo.", "opaque-1")
    assert (call.id, call.name, call.arguments) == ("call_capture_1", "exec_command", '{"cmd":"echo hi"}')
    (result,) = request.messages[5].content
    assert result.call_id == "call_capture_1" and "hi" in result.content[0].text
    names = [t.name for t in request.tools]
    assert "exec_command" in names and {t.extra.get("type") for t in request.tools} >= {
        "namespace",
        "web_search",
    }
