"""Tagging calls as main loop, sub-agent or auxiliary: from the agents' captured headers, and
through the real proxy (plain and streamed calls, the model listing, credentials never kept)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from kwaigym.chat.types import ChatRequest, Message, TextPart, Tool
from kwaigym.proxy import InterceptionProxy, ScriptedResponder
from kwaigym.proxy.tagging import AUXILIARY, MAIN, SUB_AGENT, Tag, Tagger, recordable_headers

FIXTURES = Path(__file__).parents[1] / "chat" / "fixtures"


def request(*tools: str) -> ChatRequest:
    return ChatRequest(
        format="openai-chat",
        model="m",
        messages=[Message(role="user", content=[TextPart(text="hi")])],
        tools=[Tool(name=t, parameters={"type": "object"}) for t in tools],
    )


def captured_headers(fixture: str) -> list[dict[str, str]]:
    """The POST headers a real agent sent, in order (from a capture's index)."""
    calls = json.loads((FIXTURES / fixture).read_text())
    return [c["headers"] for c in calls if c["method"] == "POST"]


def test_claude_code_main_loop_and_its_sub_agents():
    """Claude Code's session header keeps its main loop one loop; its agent-id header names sub-agents."""
    main_headers = captured_headers("anthropic/claude_code_2.1.197_tool_requests.json")
    tagger = Tagger()
    assert [tagger.tag("ep", "/v1/messages", h, request("Bash", "Task")) for h in main_headers] == [
        Tag(MAIN)
    ] * 2
    sub = {**main_headers[0], "x-claude-code-agent-id": "agent-7", "x-claude-code-parent-agent-id": "root"}
    assert tagger.tag("ep", "/v1/messages", sub, request("Bash")) == Tag(SUB_AGENT, "agent-7")
    assert tagger.tag("ep", "/v1/messages", main_headers[0], request("Bash", "Read")) == Tag(MAIN)


def test_codex_turns_compaction_and_sub_agents():
    """Codex turns are main; a non-turn request kind or a compaction is auxiliary; its sub-agents
    are named by their thread."""
    turns = captured_headers("openai-responses/codex_0.171.0_requests.json")
    tagger = Tagger()
    assert {tagger.tag("ep", "/v1/responses", h, request("exec_command")) for h in turns} == {Tag(MAIN)}
    metadata = json.loads(turns[0]["x-codex-turn-metadata"]) | {"request_kind": "compact"}
    compact = {**turns[0], "x-codex-turn-metadata": json.dumps(metadata)}
    assert tagger.tag("ep", "/v1/responses", compact, request("exec_command")) == Tag(AUXILIARY)
    sub = {**turns[0], "x-openai-subagent": "collab_spawn", "thread-id": "thread-2"}
    assert tagger.tag("ep", "/v1/responses", sub, request("exec_command")) == Tag(SUB_AGENT, "thread-2")
    assert tagger.tag("ep", "/v1/responses", {**sub, "x-openai-subagent": "compact"}, request()) == Tag(
        AUXILIARY
    )


def test_shape_decides_without_headers():
    """No tools is auxiliary (titles, summaries); another session or tool set is a sub-agent; the
    main loop is per episode and forgotten with it."""
    tagger = Tagger()
    assert tagger.tag("ep", "/v1/chat/completions", {}, request()) == Tag(AUXILIARY)
    assert tagger.tag("ep", "/v1/messages/count_tokens", {}, request("bash")) == Tag(AUXILIARY)
    assert tagger.tag("ep", "/v1/chat/completions", {}, request("bash", "read")) == Tag(MAIN)
    assert tagger.tag("ep", "/v1/chat/completions", {}, request("read", "bash")) == Tag(MAIN)  # order
    explore = tagger.tag("ep", "/v1/chat/completions", {}, request("read"))
    assert explore.kind == SUB_AGENT and explore.agent_id.startswith("tools:")
    assert tagger.tag("other", "/v1/chat/completions", {}, request("read")) == Tag(MAIN)
    session = {"x-session-affinity": "ses_1"}
    assert tagger.tag("oc", "/v1/chat/completions", session, request("bash")) == Tag(MAIN)
    child = {"x-session-affinity": "ses_2"}
    assert tagger.tag("oc", "/v1/chat/completions", child, request("bash")) == Tag(SUB_AGENT, "ses_2")
    tagger.forget("oc")
    assert tagger.tag("oc", "/v1/chat/completions", child, request("bash")) == Tag(MAIN)


def test_bad_codex_metadata_is_ignored():
    """Unparseable metadata falls back to the request's shape instead of failing the call."""
    headers = {"x-codex-turn-metadata": "{not json", "session-id": "s"}
    assert Tagger().tag("ep", "/v1/responses", headers, request("exec_command")) == Tag(MAIN)
    assert Tagger().tag("ep", "/v1/responses", {"x-codex-turn-metadata": "[1]"}, request("x")) == Tag(MAIN)


def test_credentials_are_never_kept():
    headers = {"authorization": "Bearer s", "x-api-key": "k", "cookie": "c", "user-agent": "agent/1"}
    assert recordable_headers(headers) == {"user-agent": "agent/1"}


@pytest.fixture
async def proxy(tmp_path):
    async with InterceptionProxy(confdir=tmp_path / "mitm", keepalive_s=0.2) as p:
        yield p


@pytest.mark.parametrize("stream", [False, True])
async def test_proxy_tags_records_and_tells_the_responder(proxy, stream):
    """Through the real proxy: a title call, the main loop, a sub-agent and a model listing are
    recorded with their kind; the responder sees the kind; no credential reaches a record."""
    seen = []

    def answer(req, ctx):
        seen.append((ctx.kind, ctx.agent_id))
        return "a title" if ctx.kind == AUXILIARY else "working"

    route = proxy.register("ep", ScriptedResponder(answer), host="127.0.0.1")
    tool = {"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    auth = {"authorization": f"Bearer {route.token}"}
    async with httpx.AsyncClient(base_url=route.base_url, headers=auth) as client:
        for extra, headers in [
            ({}, {}),
            ({"tools": [tool]}, {"x-session-affinity": "ses_main"}),
            ({"tools": [tool]}, {"x-session-affinity": "ses_child"}),
        ]:
            reply = await client.post("/v1/chat/completions", json=body | extra, headers=headers)
            assert reply.status_code == 200
        assert (await client.get("/v1/models")).status_code == 200
    calls = proxy.recorder.calls("ep")
    assert [(c.kind, c.agent_id) for c in calls] == [
        (AUXILIARY, None), (MAIN, None), (SUB_AGENT, "ses_child"), (AUXILIARY, None)
    ]  # fmt: skip
    assert seen == [(k, a) for k, a in [(c.kind, c.agent_id) for c in calls[:3]]]
    assert calls[3].path == "/v1/models" and calls[3].response_raw["data"]
    assert calls[1].headers["x-session-affinity"] == "ses_main"
    assert route.token not in json.dumps([c.headers for c in calls])
