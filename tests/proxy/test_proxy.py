"""The interception proxy with real clients: routing, probes, the three formats, keep-alives, recording.

Everything runs on this host's loopback: the embedded mitmproxy, its model endpoints and the
official SDKs as clients. No request leaves the machine.
"""

from __future__ import annotations

import asyncio
import json

import anthropic
import httpx
import openai
import pytest

from kwaigym.chat.types import Completion, ToolCall
from kwaigym.proxy import GymResponder, InterceptionProxy, ScriptedResponder

TOOL = {"name": "bash", "description": "run a command", "input_schema": {"type": "object"}}
OPENAI_TOOL = {"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}
BASH_CALL = Completion(tool_calls=[ToolCall(id="call_1", name="bash", arguments='{"command": "ls"}')])


@pytest.fixture
async def proxy(tmp_path):
    async with InterceptionProxy(confdir=tmp_path / "mitm", keepalive_s=0.2) as p:
        yield p


def on_host(proxy, episode, responder, **kw):
    """Register an episode whose agent runs on this host (so the proxy is at 127.0.0.1)."""
    return proxy.register(episode, responder, host="127.0.0.1", **kw)


async def test_probes_and_unknown_tokens(proxy):
    """HEAD / and /v1/models answer; a wrong token gets 401 and an unknown path 404, with messages."""
    route = on_host(proxy, "ep", ScriptedResponder([]))
    async with httpx.AsyncClient(base_url=route.base_url) as client:
        assert (await client.head("/")).status_code == 200
        assert (await client.get("/v1/models")).json()["data"][0]["id"] == "kwaigym-policy"
        bad = await client.post("/v1/messages", json={}, headers={"x-api-key": "kw-wrong"})
        missing = await client.post("/v1/nothing", json={}, headers={"x-api-key": route.token})
    assert bad.status_code == 401 and "unknown episode token" in bad.json()["error"]["message"]
    assert bad.json()["type"] == "error"  # Anthropic's error shape for an Anthropic route
    assert missing.status_code == 404


async def test_anthropic_sdk_plain_and_streaming(proxy):
    """The anthropic SDK gets text and tool calls, streamed and not; every call is recorded."""
    responder = ScriptedResponder(["Hello there", BASH_CALL, "streamed text", BASH_CALL])
    route = on_host(proxy, "ep-a", responder)
    client = anthropic.AsyncAnthropic(base_url=route.base_url, api_key=route.token)
    ask = {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], "tools": [TOOL]}
    plain = await client.messages.create(**ask)
    tool = await client.messages.create(**ask)
    async with client.messages.stream(**ask) as stream:
        streamed = await stream.get_final_message()
    async with client.messages.stream(**ask) as stream:
        streamed_tool = await stream.get_final_message()
    await client.close()
    assert plain.content[0].text == "Hello there" and plain.stop_reason == "end_turn"
    assert tool.stop_reason == "tool_use" and tool.content[0].input == {"command": "ls"}
    assert streamed.content[0].text == "streamed text"
    assert streamed_tool.content[0].name == "bash" and streamed_tool.content[0].input == {"command": "ls"}
    calls = proxy.recorder.calls("ep-a")
    assert [c.stream for c in calls] == [False, False, True, True]
    assert all(c.status == 200 and c.request.messages[0].text == "hi" for c in calls)
    assert calls[3].completion.tool_calls[0].name == "bash" and all(c.ttfb_s is not None for c in calls)
    assert route.token not in json.dumps([c.request_raw for c in calls]) + str(calls[2].response_raw)


async def test_count_tokens_and_bad_bodies(proxy):
    """count_tokens answers an estimate; bodies that are not JSON or break the format get 400s."""
    route = on_host(proxy, "ep-c", ScriptedResponder([]))
    headers = {"x-api-key": route.token}
    body = {"model": "m", "messages": [{"role": "user", "content": "count me " * 50}]}
    async with httpx.AsyncClient(base_url=route.base_url, headers=headers) as client:
        counted = await client.post("/v1/messages/count_tokens?beta=true", json=body)
        not_json = await client.post("/v1/messages", content=b"{nope")
        wrong = await client.post("/v1/messages", json={"model": "m", "max_tokens": 5, "messages": 7})
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 50
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]["message"]
    assert wrong.status_code == 400 and "messages" in wrong.json()["error"]["message"]


async def test_stream_keeps_alive_while_the_policy_thinks(proxy):
    """A slow policy: the stream starts at once and carries keep-alives until the answer comes."""

    async def slow(request, ctx):
        await asyncio.sleep(1.0)
        return "finally"

    route = on_host(proxy, "ep-slow", ScriptedResponder(slow))
    body = {"model": "m", "max_tokens": 16, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    arrivals = []
    async with httpx.AsyncClient(base_url=route.base_url, headers={"x-api-key": route.token}) as client:
        async with client.stream("POST", "/v1/messages", json=body) as response:
            loop = asyncio.get_running_loop()
            async for chunk in response.aiter_bytes():
                arrivals.append((loop.time(), chunk))
    first, last = arrivals[0][0], arrivals[-1][0]
    text = b"".join(c for _, c in arrivals).decode()
    assert last - first > 0.8 and "message_start" in arrivals[0][1].decode()
    assert text.count("event: ping") >= 3 and "finally" in text and text.rstrip().endswith("}")


async def test_gym_responder_hands_calls_to_the_env(proxy):
    """Each request waits for its answer from the env side, which sees the normalised request."""
    gym = GymResponder()
    route = on_host(proxy, "ep-gym", gym)
    client = anthropic.AsyncAnthropic(base_url=route.base_url, api_key=route.token)

    async def env_side():
        for n in range(2):
            call = await gym.next_call(timeout=10)
            assert call.request.messages[-1].text == f"turn {n}"
            gym.answer(call.ctx.call_id, f"answer {n}")

    env = asyncio.create_task(env_side())
    texts = []
    for n in range(2):
        msg = await client.messages.create(
            model="m", max_tokens=9, messages=[{"role": "user", "content": f"turn {n}"}]
        )
        texts.append(msg.content[0].text)
    await env
    await client.close()
    assert texts == ["answer 0", "answer 1"] and gym.waiting == []


async def test_unregistered_episode_is_refused(proxy):
    """After unregister the token no longer works."""
    route = on_host(proxy, "ep-gone", ScriptedResponder(["x"]))
    proxy.unregister("ep-gone")
    client = anthropic.AsyncAnthropic(base_url=route.base_url, api_key=route.token, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        await client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    await client.close()


async def test_token_in_path_routes_without_api_key(proxy):
    """`/kw/<token>` in the base URL routes the call for agents that cannot set an API key."""
    route = on_host(proxy, "ep-path", ScriptedResponder(["via path"]))
    client = anthropic.AsyncAnthropic(base_url=route.token_url, api_key="anything")
    msg = await client.messages.create(model="m", max_tokens=9, messages=[{"role": "user", "content": "hi"}])
    await client.close()
    assert msg.content[0].text == "via path"


async def test_huge_body_gets_413(proxy):
    """A body over the limit is refused before it is read."""
    route = on_host(proxy, "ep-big", ScriptedResponder([]))
    async with httpx.AsyncClient(base_url=route.base_url, headers={"x-api-key": route.token}) as client:
        big = await client.post("/v1/messages", content=b"x" * (33 * 1024 * 1024))
        ok = await client.head("/")
    assert big.status_code == 413 and ok.status_code == 200


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_sdk_chat_completions(proxy, stream):
    """The openai SDK's chat completions, streamed and not, with a tool call."""
    pytest.importorskip("kwaigym.chat.openai_chat")
    route = on_host(proxy, f"ep-oc-{stream}", ScriptedResponder(["plain answer", BASH_CALL]))
    client = openai.AsyncOpenAI(base_url=route.base_url + "/v1", api_key=route.token)
    ask = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [OPENAI_TOOL]}
    results = []
    for _ in range(2):
        if stream:
            text, calls = "", {}
            async for chunk in await client.chat.completions.create(**ask, stream=True):
                for choice in chunk.choices:
                    text += choice.delta.content or ""
                    for tc in choice.delta.tool_calls or []:
                        calls.setdefault(tc.index, ["", ""])
                        calls[tc.index][0] += tc.function.name or ""
                        calls[tc.index][1] += tc.function.arguments or ""
            results.append((text, list(calls.values())))
        else:
            r = await client.chat.completions.create(**ask)
            msg = r.choices[0].message
            results.append(
                (msg.content or "", [[t.function.name, t.function.arguments] for t in msg.tool_calls or []])
            )
    await client.close()
    assert results == [("plain answer", []), ("", [["bash", '{"command": "ls"}']])]


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_sdk_responses(proxy, stream):
    """The openai SDK's Responses API, streamed and not, with a function call."""
    pytest.importorskip("kwaigym.chat.openai_responses")
    route = on_host(proxy, f"ep-or-{stream}", ScriptedResponder(["plain answer", BASH_CALL]))
    client = openai.AsyncOpenAI(base_url=route.base_url + "/v1", api_key=route.token)
    tool = {"type": "function", "name": "bash", "parameters": {"type": "object"}}
    results = []
    for _ in range(2):
        if stream:
            async with client.responses.stream(model="m", input="hi", tools=[tool]) as s:
                response = await s.get_final_response()
        else:
            response = await client.responses.create(model="m", input="hi", tools=[tool])
        calls = [[o.name, o.arguments] for o in response.output if o.type == "function_call"]
        results.append((response.output_text, calls))
    await client.close()
    assert results == [("plain answer", []), ("", [["bash", '{"command": "ls"}']])]
