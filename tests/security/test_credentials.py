"""Credential hygiene: an upstream API key given to kwaigym reaches the upstream server and nothing
else: not the sandbox (its environment, its processes, its files), not the container's
configuration, not a record, log or report of the run.

The upstream is a small OpenAI-compatible server on this host's loopback. Its first answer makes
the real `mini` agent hunt for the key inside its sandbox; while that call is open the server reads
the container's inspect data from podman. The run goes through ``rollout(..., out=DIR)`` with the
key in ``OPENAI_API_KEY``, as ``kwaigym eval --policy openai:URL`` would.
"""

from __future__ import annotations

import json
import logging
import secrets
from urllib.parse import quote

import pytest

from kwaigym.episode import OK
from kwaigym.report import write_report
from kwaigym.rollout import rollout
from kwaigym.sandbox import wire
from kwaigym.sandbox.base import LABEL_EPISODE
from tests.conftest import episode
from tests.loopback import LoopbackServer, read_json_request

pytestmark = pytest.mark.podman

PREFIX = "sk-kwaigym-test-"
# Looks for anything shaped like the key: the environment, every process's, every file.
HUNT = (
    f"env | grep -F {PREFIX}; "
    f"cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -F {PREFIX}; "
    f"grep -rslF {PREFIX} / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev; "
    "env | grep -c KWAIGYM_API_KEY; echo hunted"
)


class KeyCheckingUpstream(LoopbackServer):
    """An OpenAI-compatible chat server: answers with the hunt, then a final text; keeps every
    request's headers and body, and the inspect data of the agent's container during the hunt."""

    def __init__(self, service, task_id: str):
        self.service, self.task_id = service, task_id
        self.seen: list[tuple[dict, dict]] = []
        self.inspect: list[str] = []

    async def _containers(self) -> list[str]:
        filters = quote(json.dumps({"label": [LABEL_EPISODE]}))
        boxes = await wire.request(self.service, "GET", f"/containers/json?filters={filters}")
        ours = [b["Id"] for b in boxes if b["Labels"][LABEL_EPISODE].startswith(self.task_id)]
        return [json.dumps(await wire.request(self.service, "GET", f"/containers/{i}/json")) for i in ours]

    async def _handle(self, reader, writer):
        headers, body = await read_json_request(reader)
        self.seen.append((headers, body))
        if len(self.seen) == 1:
            self.inspect = await self._containers()
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_hunt", "type": "function",
                "function": {"name": "bash", "arguments": json.dumps({"command": HUNT})}}]}  # fmt: skip
        else:
            message = {"role": "assistant", "content": "nothing found"}
        payload = {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
        }  # fmt: skip
        data = json.dumps(payload).encode()
        head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n"
        writer.write(head.encode() + b"connection: close\r\n\r\n" + data)
        await writer.drain()
        writer.close()


async def test_upstream_key_stays_on_the_host(backend, service, task_factory, tmp_path, monkeypatch, caplog):
    """The key reaches the upstream on every call and appears nowhere in the sandbox, the
    container's configuration, the run directory (records and report) or the logs."""
    key = PREFIX + secrets.token_hex(16)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    caplog.set_level(logging.DEBUG)
    task = task_factory(episode("cred"))
    out = tmp_path / "run"
    async with KeyCheckingUpstream(service, task.id) as upstream:
        (result,) = await rollout([task], ["mini"], f"openai:{upstream.url}", out=out, backend=backend,
                                  show_progress=False, attempts=1)  # fmt: skip
    assert (result.status, result.turns) == (OK, 2), result.error

    # the key was there to be leaked: the upstream got it with every call
    assert [h["authorization"] for h, _ in upstream.seen] == [f"Bearer {key}"] * 2

    # the sandbox: the hunt ran and found nothing shaped like a key
    tool = next(m for m in upstream.seen[1][1]["messages"] if m["role"] == "tool")["content"]
    assert tool.startswith("exit code 0\n") and tool.endswith("\n1\nhunted\n") and PREFIX not in tool

    # the container's configuration (environment included) as podman reports it
    (inspect,) = upstream.inspect
    assert "KWAIGYM_API_KEY" in inspect and key not in inspect and PREFIX not in inspect

    # every file of the run directory, the HTML report included, and every log line
    write_report(out)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"episodes.jsonl", "report.html"}
    assert not [p for p in files if key.encode() in p.read_bytes()]
    assert key not in caplog.text and key not in json.dumps([b for _, b in upstream.seen])
