"""The Cline adapter: its real binary in a real sandbox, driven by a scripted policy through the proxy."""

from __future__ import annotations

import json
import subprocess

import pytest

from kwaigym.chat.types import ToolResult
from kwaigym.proxy.server import EpisodeRoute
from kwaigym.sandbox.base import ExecResult
from scaffolds.base import Scaffold, finish_call
from scaffolds.check import CHECK_TEXT, check
from scaffolds.cline import ClineScaffold
from tests.conftest import episode

ROUTE = EpisodeRoute(episode_id="ep", host="10.0.2.2", port=8080, proxy_port=8081, token="tok")


def test_declares_chat_run_commands_and_submit():
    """A Scaffold speaking Chat Completions: `run_commands` runs a shell command, `submit_and_exit` ends."""
    scaffold = ClineScaffold()
    assert isinstance(scaffold, Scaffold)
    assert (scaffold.name, scaffold.wire_format) == ("cline", "openai-chat")
    call = scaffold.shell_call("echo hi", "call_1").tool_calls[0]
    assert (call.id, call.name, json.loads(call.arguments)) == (
        "call_1",
        "run_commands",
        {"commands": ["echo hi"]},
    )
    done = finish_call(scaffold, "All done.", "call_2").tool_calls[0]
    assert (done.name, json.loads(done.arguments)) == (
        "submit_and_exit",
        {"summary": "All done.", "verified": True},
    )
    command = scaffold.command("do it; rm -rf $HOME")
    assert command[-1] == "do it; rm -rf $HOME"  # an argument, not script
    assert "--yolo" in command and "--json" in command and "do it" not in command[2]


def test_env_points_cline_at_the_proxy():
    """providers.json names the openai-compatible provider at the proxy's /v1 with the episode token;
    telemetry is opted out and the state lives under /tmp."""
    env = ClineScaffold().env(ROUTE)
    providers = json.loads(env["KWAIGYM_CLINE_PROVIDERS"])
    settings = providers["providers"][providers["lastUsedProvider"]]["settings"]
    assert settings["provider"] == "openai-compatible"
    assert settings["baseUrl"] == "http://10.0.2.2:8080/v1" and settings["apiKey"] == "tok"
    assert settings["timeout"] == 3_600_000
    assert json.loads(env["KWAIGYM_CLINE_SETTINGS"]) == {"telemetryOptOut": True, "autoUpdateEnabled": False}
    assert env["CLINE_DIR"].startswith("/tmp/") and env["CLINE_NO_AUTO_UPDATE"] == "1"


def test_wrapper_writes_the_settings_files(tmp_path):
    """The command's sh wrapper writes both settings files from the environment, then execs the agent
    (here `cat`, in place of Cline) with stdin at EOF."""
    scaffold = ClineScaffold()
    env = {**scaffold.env(ROUTE), "CLINE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    settings = tmp_path / "data" / "settings"
    wrapper = scaffold.command("ignored")[:4]  # sh -c SCRIPT $0; the agent's argv follows
    proc = subprocess.run([*wrapper, "cat", "-", str(settings / "global-settings.json")], env=env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert proc.stdout == env["KWAIGYM_CLINE_SETTINGS"]  # stdin was empty
    assert json.loads((settings / "providers.json").read_text()) == scaffold.providers(ROUTE)


def _events(*events: dict) -> str:
    return "".join(json.dumps({"ts": "2026-11-29T13:47:09.382Z", **e}) + "\n" for e in events)


SUBMIT = {
    "type": "agent_event",
    "event": {
        "type": "content_start",
        "contentType": "tool",
        "toolName": "submit_and_exit",
        "toolCallId": "call_2",
        "input": {"summary": "Done: the file is written.", "verified": True},
    },
}


def test_outcome_reads_json_events():
    """The submit_and_exit summary is the final message; a run_result not completed, or none, fails."""
    scaffold = ClineScaffold()
    result = {"type": "run_result", "finishReason": "completed", "iterations": 2,
              "text": "Submission recorded (verified): Done: the file is written."}  # fmt: skip
    done = scaffold.outcome(ExecResult(exit_code=0, stdout=_events(SUBMIT, result), stderr="", duration_s=1))
    assert done.ok and done.final_message == "Done: the file is written."
    no_submit = scaffold.outcome(ExecResult(exit_code=0, stdout=_events(result), stderr="", duration_s=1))
    assert no_submit.ok and no_submit.final_message == result["text"]
    error_event = {"type": "error", "error": {"name": "Error", "message": "Forbidden"}, "errorClass": "auth"}
    error = {"type": "agent_event", "event": error_event}
    failed_run = {"type": "run_result", "finishReason": "error", "iterations": 1, "text": "Forbidden"}
    stderr = _events({"type": "error", "message": "Forbidden"})
    failed = scaffold.outcome(
        ExecResult(exit_code=1, stdout=_events(error, failed_run), stderr=stderr, duration_s=1)
    )
    assert not failed.ok and failed.exit_code == 1 and failed.final_message == "Forbidden"
    crashed = scaffold.outcome(ExecResult(exit_code=137, stdout=_events(SUBMIT), stderr="boom", duration_s=1))
    assert not crashed.ok and crashed.exit_code == 137 and "boom" in crashed.final_message


@pytest.mark.podman
async def test_cline_writes_file_with_its_own_tool(backend, base_image):
    """Cline runs the scripted command with run_commands, then submits; calls are openai-chat."""
    scaffold = ClineScaffold()
    report = await check(scaffold, image=base_image, backend=backend, episode_id=episode("cline"))
    assert report.file_content == CHECK_TEXT + "\n", report
    assert report.outcome.ok and "Done" in report.outcome.final_message, report.outcome
    assert [c.status for c in report.calls] == [200] * len(report.calls)
    main = [c for c in report.calls if c.request and c.request.tools]
    assert main[0].completion.tool_calls[0].name == "run_commands"
    assert main[-1].completion.tool_calls[0].name == "submit_and_exit"
    assert any(isinstance(p, ToolResult) for m in main[-1].request.messages for p in m.content)
    assert all(c.format == "openai-chat" for c in report.calls)
