"""A sandboxed program that calls api.anthropic.com itself reaches kwaigym instead.

The sandbox gets HTTPS_PROXY and kwaigym's CA through ``proxy.sandbox_env`` and
``proxy.sandbox_mounts``; its network policy reaches only the proxy's two ports. The call to
the real host name is decrypted and answered by the proxy; nothing leaves the machine.
"""

from __future__ import annotations

import pytest

from kwaigym.proxy import InterceptionProxy, ScriptedResponder

pytestmark = pytest.mark.podman

CALL = """
import json, urllib.request, urllib.error
body = json.dumps({"model": "m", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}).encode()
req = urllib.request.Request("https://api.anthropic.com/v1/messages", data=body,
                             headers={"content-type": "application/json", "x-api-key": "agent-own-key"})
print(json.load(urllib.request.urlopen(req, timeout=20))["content"][0]["text"])
try:
    urllib.request.urlopen("https://example.com/", timeout=20)
except urllib.error.URLError as e:
    print("refused:", e.reason)
"""


async def test_hard_coded_llm_host_is_intercepted_in_a_sandbox(backend, spec, tmp_path):
    """HTTPS to api.anthropic.com from a sandbox is answered by the episode's responder."""
    async with InterceptionProxy(confdir=tmp_path / "mitm") as proxy:
        route = proxy.register("reg-ep", ScriptedResponder(["answered by kwaigym"]))
        box = spec(
            network=proxy.network_policy(), mounts=proxy.sandbox_mounts(), env=proxy.sandbox_env(route)
        )
        async with backend.sandbox(box) as sb:
            result = await sb.exec(["python3", "-c", CALL], timeout=60)
        calls = proxy.recorder.calls("reg-ep")
    lines = result.stdout.splitlines()
    assert lines[0] == "answered by kwaigym", result.output
    assert lines[1].startswith("refused:") and "403" in lines[1]
    assert len(calls) == 1 and calls[0].status == 200
