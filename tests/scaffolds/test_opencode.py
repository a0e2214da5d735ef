"""The OpenCode adapter runs the real OpenCode binary in a sandbox, driven by a scripted policy."""

from __future__ import annotations

import json

import pytest

from kwaigym.chat.types import ToolResult
from kwaigym.proxy.server import EpisodeRoute
from kwaigym.sandbox.base import ExecResult
from scaffolds.check import CHECK_TEXT, check
from scaffolds.opencode import OpenCodeScaffold
from tests.conftest import episode


def test_env_points_opencode_at_the_proxy():
    """The inline config names one openai-compatible provider at the proxy's /v1 with the episode token."""
    route = EpisodeRoute(episode_id="ep", host="10.0.2.2", port=8080, proxy_port=8081, token="tok")
    env = OpenCodeScaffold().env(route)
    config = json.loads(env["OPENCODE_CONFIG_CONTENT"])
    (provider,) = config["provider"].values()
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert provider["options"]["baseURL"] == "http://10.0.2.2:8080/v1"
    assert provider["options"]["apiKey"] == "tok"
    assert env["PWD"] == "/workspace" and env["HOME"] == "/root"


@pytest.mark.podman
async def test_opencode_writes_file_with_its_own_tool(backend, base_image):
    """OpenCode runs the scripted command with its `bash` tool, then finishes; calls are openai-chat."""
    scaffold = OpenCodeScaffold()
    report = await check(scaffold, image=base_image, backend=backend, episode_id=episode("opencode"))
    assert report.file_content == CHECK_TEXT + "\n", report
    assert report.outcome.ok and "Done" in report.outcome.final_message, report.outcome
    main = [c for c in report.calls if c.kind == "main"]
    assert main and all(c.request.tools for c in main), [(c.kind, c.path) for c in report.calls]
    assert all(c.kind == "auxiliary" for c in report.calls if not (c.request and c.request.tools))
    assert [c.status for c in report.calls] == [200] * len(report.calls)
    assert main[0].completion.tool_calls[0].name == "bash"
    first_user = next(m for m in main[0].request.messages if m.role == "user")
    assert first_user.text.startswith("Write the check file."), first_user.text  # verbatim, unquoted
    assert any(isinstance(p, ToolResult) for m in main[-1].request.messages for p in m.content)
    assert all(c.format == "openai-chat" for c in report.calls)


def test_outcome_reads_json_events():
    """The last text event is the final message; an error event (OpenCode exits 1) fails the run."""
    scaffold = OpenCodeScaffold()
    text = {"type": "text", "part": {"type": "text", "text": "Done: the file is written."}}
    error = {"type": "error", "error": {"name": "APIError", "data": {"message": "bad request"}}}
    done = scaffold.outcome(ExecResult(exit_code=0, stdout=json.dumps(text) + "\n", stderr="", duration_s=1))
    failed = scaffold.outcome(ExecResult(exit_code=1, stdout=json.dumps(error), stderr="", duration_s=1))
    crashed = scaffold.outcome(ExecResult(exit_code=2, stdout="", stderr="boom", duration_s=1))
    assert done.ok and done.final_message == "Done: the file is written."
    assert not failed.ok and failed.final_message == "APIError: bad request"
    assert not crashed.ok and crashed.exit_code == 2 and "boom" in crashed.final_message
