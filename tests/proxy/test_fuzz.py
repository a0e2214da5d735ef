"""Hostile input to the proxy: bad bodies get a 4xx with a message, and the proxy keeps serving.

hypothesis generates malformed JSON, wrong types and random bytes for each endpoint; clients
that hang up mid-stream must not disturb later calls.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kwaigym.proxy import InterceptionProxy, ScriptedResponder

PATHS = ["/v1/messages", "/v1/chat/completions", "/v1/responses", "/v1/messages/count_tokens"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
# Bodies shaped like requests, with fields of any type: the codecs' validation is what is exercised.
shaped = st.fixed_dictionaries(
    {},
    optional={
        "model": json_values,
        "max_tokens": json_values,
        "messages": json_values
        | st.lists(st.fixed_dictionaries({"role": json_values, "content": json_values})),
        "input": json_values,
        "tools": json_values,
        "stream": json_values,
        "system": json_values,
    },
)


class ProxyInThread:
    """hypothesis drives synchronous tests; the proxy runs in its own event loop in a thread."""

    def __init__(self, confdir):
        self.confdir = confdir
        self.loop = asyncio.new_event_loop()

    def __enter__(self):
        import threading

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.proxy = self.run(InterceptionProxy(confdir=self.confdir).start())
        self.route = self.proxy.register("fuzz", ScriptedResponder(lambda r, c: "fine"), host="127.0.0.1")
        return self

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def __exit__(self, *exc):
        self.run(self.proxy.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with ProxyInThread(tmp_path_factory.mktemp("mitm")) as running:
        with httpx.Client(
            base_url=running.route.base_url, headers={"x-api-key": running.route.token}
        ) as client:
            yield running, client


def still_serves(client: httpx.Client) -> bool:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "ping"}]}
    response = client.post("/v1/messages", json=body, timeout=10)
    return response.status_code == 200 and response.json()["content"][0]["text"] == "fine"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PATHS), body=shaped)
def test_malformed_requests_get_4xx_with_a_message(live, path, body):
    """Wrong types anywhere: a 4xx whose body says what is wrong, or a 200 for a body that is valid."""
    _, client = live
    response = client.post(path, content=json.dumps(body), timeout=10)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        payload = response.json()
        message = payload["error"]["message"]
        assert isinstance(message, str) and message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PATHS), raw=st.binary(max_size=300))
def test_random_bytes_get_400(live, path, raw):
    """Bytes that are not a JSON request get a 400 (or 200 for the rare valid one)."""
    _, client = live
    assert client.post(path, content=raw, timeout=10).status_code in (200, 400)


def test_proxy_survives_fuzzing_and_broken_streams(live):
    """After the fuzzing above and clients hanging up mid-stream, calls still work."""
    running, client = live
    body = {"model": "m", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    for _ in range(5):
        with client.stream("POST", "/v1/messages", json=body) as response:
            next(response.iter_bytes())  # read the first event, then hang up
    truncated = client.post("/v1/messages", content=b'{"model": "m", "messa', timeout=10)
    assert truncated.status_code == 400
    assert still_serves(client)
