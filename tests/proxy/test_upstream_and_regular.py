"""UpstreamResponder (credentials, retries, token data) and the regular-proxy mode with kwaigym's CA.

The "upstream model server" is a small OpenAI-compatible server on loopback (a neighbour; the
parts under test, the proxy and the responder, are real). Regular-proxy calls to LLM hosts are
answered by the proxy itself, so nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import json
import ssl

import anthropic
import httpx
import pytest

from kwaigym.proxy import InterceptionProxy, ScriptedResponder, UpstreamResponder
from tests.loopback import LoopbackServer, read_json_request

SECRET = "sk-real-upstream-key-0123456789"


class FakeUpstream(LoopbackServer):
    """An OpenAI-compatible chat server: fails the first ``failures`` calls, then answers with logprobs."""

    def __init__(self, failures: list[int]):
        self.failures = list(failures)
        self.seen: list[tuple[dict, dict]] = []

    async def _handle(self, reader, writer):
        headers, body = await read_json_request(reader)
        self.seen.append((headers, body))
        if self.failures:
            status, payload = self.failures.pop(0), {"error": {"message": "busy"}}
        else:
            status, payload = 200, {
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "from upstream"},
                             "logprobs": {"content": [{"token": "from", "logprob": -0.5, "bytes": None,
                                                       "top_logprobs": []}]}}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
            }  # fmt: skip
        data = json.dumps(payload).encode()
        head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n"
        writer.write(head.encode() + b"connection: close\r\n\r\n" + data)
        await writer.drain()
        writer.close()


@pytest.fixture
async def proxy(tmp_path):
    async with InterceptionProxy(confdir=tmp_path / "mitm") as p:
        yield p


async def test_upstream_gets_the_key_the_agent_and_record_never_do(proxy):
    """Claude-style agent -> proxy -> OpenAI-compatible upstream: answer arrives, key stays on the host."""
    pytest.importorskip("kwaigym.chat.openai_chat")
    async with FakeUpstream(failures=[500, 429]) as upstream:
        responder = UpstreamResponder(upstream.url, api_key=SECRET, model="served-model")
        route = proxy.register("ep-up", responder, host="127.0.0.1")
        client = anthropic.AsyncAnthropic(base_url=route.base_url, api_key=route.token)
        msg = await client.messages.create(
            model="claude-x", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
        )
        await client.close()
        await responder.aclose()
    assert msg.content[0].text == "from upstream"
    assert len(upstream.seen) == 3  # two transient failures retried
    headers, body = upstream.seen[-1]
    assert headers["authorization"] == f"Bearer {SECRET}" and body["model"] == "served-model"
    assert body["logprobs"] is True and route.token not in json.dumps(upstream.seen)
    (call,) = proxy.recorder.calls("ep-up")
    assert call.completion.logprobs[0].token == "from" and call.completion.usage.input_tokens == 7
    assert SECRET not in repr(call)


async def test_upstream_refusal_is_an_api_error_for_the_agent(proxy):
    """A 4xx from upstream is not retried; the agent gets a 502 and the record says why."""
    pytest.importorskip("kwaigym.chat.openai_chat")
    async with FakeUpstream(failures=[400]) as upstream:
        responder = UpstreamResponder(upstream.url, attempts=3)
        route = proxy.register("ep-refused", responder, host="127.0.0.1")
        client = anthropic.AsyncAnthropic(base_url=route.base_url, api_key=route.token, max_retries=0)
        with pytest.raises(anthropic.APIStatusError) as info:
            await client.messages.create(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
        await client.close()
        await responder.aclose()
    assert info.value.status_code == 502 and len(upstream.seen) == 1
    assert "refused" in proxy.recorder.calls("ep-refused")[0].error


async def test_regular_proxy_intercepts_llm_hosts_with_kwaigym_ca(proxy):
    """An agent using HTTPS_PROXY and kwaigym's CA calls api.anthropic.com; the proxy answers it."""
    route = proxy.register("ep-reg", ScriptedResponder(["intercepted"]), host="127.0.0.1")
    http_client = httpx.AsyncClient(
        proxy=route.https_proxy, verify=ssl.create_default_context(cafile=proxy.ca_cert)
    )
    client = anthropic.AsyncAnthropic(api_key="the-agents-own-key", http_client=http_client)
    msg = await client.messages.create(model="m", max_tokens=9, messages=[{"role": "user", "content": "hi"}])
    await client.close()
    assert msg.content[0].text == "intercepted"
    assert proxy.recorder.calls("ep-reg")[0].status == 200


async def test_regular_proxy_refuses_other_hosts_and_passes_allowed_ones(proxy):
    """Hosts off the allowlist get 403 (before any connection is made); allowed ones pass through."""

    async def hello(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(hello, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    route = proxy.register("ep-egress", ScriptedResponder([]), host="127.0.0.1", allow_hosts=["127.0.0.1"])
    async with server, httpx.AsyncClient(proxy=route.https_proxy) as client:
        allowed = await client.get(f"http://127.0.0.1:{port}/")
        refused = await client.get("http://example.invalid/")
        with pytest.raises(httpx.ProxyError):
            await client.get("https://example.invalid/")
    async with httpx.AsyncClient(proxy=f"http://kwaigym:kw-wrong@127.0.0.1:{route.proxy_port}") as client:
        unknown = await client.get(f"http://127.0.0.1:{port}/")
    assert allowed.text == "hello"
    assert refused.status_code == 403 and "allowlist" in refused.text
    assert unknown.status_code == 407
