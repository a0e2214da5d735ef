"""The OpenClaw adapter: its real `agent exec` on the portable Node in a sandbox, driven through the proxy."""

from __future__ import annotations

import json

import pytest

from kwaigym.chat.types import ToolResult
from kwaigym.proxy.server import EpisodeRoute
from kwaigym.sandbox.base import ExecResult
from scaffolds.base import Scaffold
from scaffolds.check import CHECK_TEXT, check
from scaffolds.node import NODE
from scaffolds.openclaw import OpenClawScaffold
from tests.conftest import episode

ROUTE = EpisodeRoute(episode_id="ep", host="10.0.2.2", port=8080, proxy_port=8081, token="tok")


def test_declares_chat_and_the_exec_tool():
    """It is a Scaffold speaking Chat Completions; its shell tool is `exec` with a string `command`."""
    scaffold = OpenClawScaffold()
    assert isinstance(scaffold, Scaffold)
    assert (scaffold.name, scaffold.wire_format) == ("openclaw", "openai-chat")
    call = scaffold.shell_call("echo hi", "call_1").tool_calls[0]
    assert (call.id, call.name, json.loads(call.arguments)) == ("call_1", "exec", {"command": "echo hi"})


def test_command_runs_agent_exec_on_the_mounted_node():
    """`sh -c` writes the config, then execs node on `agent exec`; the instruction stays one argument."""
    instruction = "--help; rm -rf $HOME 'quoted'"
    command = OpenClawScaffold().command(instruction)
    assert command[:2] == ["sh", "-c"] and "KWAIGYM_OPENCLAW_CONFIG" in command[2]
    assert instruction not in command[2]
    assert command[4] == NODE and command[5].endswith("/node_modules/openclaw/openclaw.mjs")
    assert command[6:8] == ["agent", "exec"] and "--json" in command
    assert command[-2:] == ["--", instruction]


def test_mounts_bring_the_bundle_and_node(tmp_path):
    """Both bundles are mounted read-only: OpenClaw's node_modules and the Node runtime holding NODE."""
    scaffold = OpenClawScaffold()
    openclaw, node = scaffold.mounts(tmp_path)
    assert openclaw.source == str(tmp_path) and openclaw.target == scaffold.target
    assert NODE.startswith(node.target + "/") and openclaw.read_only and node.read_only


def test_env_points_openclaw_at_the_proxy():
    """The config names one provider at the proxy's /v1 with the episode token; nothing phones home."""
    env = OpenClawScaffold().env(ROUTE)
    config = json.loads(env["KWAIGYM_OPENCLAW_CONFIG"])
    (name, provider), *others = config["models"]["providers"].items()
    assert not others and config["models"]["mode"] == "replace"
    assert provider["baseUrl"] == "http://10.0.2.2:8080/v1" and provider["apiKey"] == "tok"
    assert provider["api"] == "openai-completions" and provider["timeoutSeconds"] == 3600
    assert config["agents"]["defaults"]["model"]["primary"] == f"{name}/{provider['models'][0]['id']}"
    assert config["update"]["checkOnStart"] is False and config["telemetry"]["enabled"] is False
    assert env["OPENCLAW_NO_AUTO_UPDATE"] == "1" and env["HOME"] == "/root"


def test_anthropic_messages_variant():
    """With api="anthropic-messages" it speaks the Messages API at the proxy's root."""
    scaffold = OpenClawScaffold(api="anthropic-messages")
    (provider,) = json.loads(scaffold.env(ROUTE)["KWAIGYM_OPENCLAW_CONFIG"])["models"]["providers"].values()
    assert scaffold.wire_format == "anthropic" and provider["baseUrl"] == "http://10.0.2.2:8080"
    with pytest.raises(ValueError, match="api must be one of"):
        OpenClawScaffold(api="google-generative-ai")


def test_outcome_reads_the_json_envelope():
    """`final` is the final message; an `ok: false` envelope (exit 1 or 2) or a crash fails the run."""
    scaffold = OpenClawScaffold()
    done = {"ok": True, "status": "ok", "final": "All done.", "payloads": [{"text": "All done."}]}
    failed = {"ok": False, "status": "timeout", "final": "", "error": {"message": "LLM request failed"}}
    pretty = json.dumps(done, indent=2)  # as `--json` prints it
    ran = scaffold.outcome(ExecResult(exit_code=0, stdout=pretty, stderr="", duration_s=1))
    assert ran.ok and ran.final_message == "All done."
    lost = scaffold.outcome(ExecResult(exit_code=2, stdout=json.dumps(failed), stderr="", duration_s=1))
    assert not lost.ok and lost.exit_code == 2 and lost.final_message == "LLM request failed"
    crashed = scaffold.outcome(ExecResult(exit_code=1, stdout="", stderr="SyntaxError: boom", duration_s=1))
    assert not crashed.ok and "boom" in crashed.final_message


@pytest.mark.podman
@pytest.mark.parametrize("api", ["openai-completions", "anthropic-messages"])
async def test_openclaw_writes_file_with_its_own_tool(backend, base_image, api):
    """OpenClaw runs the scripted command with its `exec` tool, then finishes; every call is recorded."""
    scaffold = OpenClawScaffold(api=api)
    report = await check(scaffold, image=base_image, backend=backend, episode_id=episode("openclaw"))
    assert report.file_content == CHECK_TEXT + "\n", report
    assert report.outcome.ok and "Done" in report.outcome.final_message, report.outcome
    assert [c.status for c in report.calls] == [200] * len(report.calls)
    main = [c for c in report.calls if c.request and c.request.tools]
    assert main[0].completion.tool_calls[0].name == "exec"
    assert any(isinstance(p, ToolResult) for m in main[-1].request.messages for p in m.content)
    assert all(c.format == scaffold.wire_format for c in report.calls)
