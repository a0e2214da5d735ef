"""The Codex CLI adapter: its real binary in a real sandbox, driven by a scripted policy through the proxy."""

from __future__ import annotations

import pytest

from kwaigym.chat.types import ToolResult
from kwaigym.sandbox.base import ExecResult
from scaffolds.base import Scaffold
from scaffolds.check import CHECK_TEXT, check
from scaffolds.codex import CodexScaffold
from tests.conftest import episode


def test_declares_responses_and_exec_command():
    """It is a Scaffold, speaks Responses, and its shell tool is `exec_command` with a string `cmd`."""
    scaffold = CodexScaffold()
    assert isinstance(scaffold, Scaffold)
    assert (scaffold.name, scaffold.wire_format) == ("codex", "openai-responses")
    call = scaffold.shell_call("echo hi", "call_1").tool_calls[0]
    assert (call.id, call.name, call.arguments) == ("call_1", "exec_command", '{"cmd": "echo hi"}')
    assert scaffold.command("do it; rm -rf $HOME")[-1] == "do it; rm -rf $HOME"  # an argument, not script


def test_outcome_reads_the_final_message():
    """`codex exec` prints only the final message on stdout; a failed or silent run is not ok."""
    scaffold = CodexScaffold()
    ran = ExecResult(exit_code=0, stdout="All done.\n", stderr="OpenAI Codex v0.171.0\n...", duration_s=1)
    outcome = scaffold.outcome(ran)
    assert outcome.ok and outcome.final_message == "All done."
    failed = ExecResult(exit_code=1, stdout="", stderr="ERROR: boom", duration_s=1)
    assert not scaffold.outcome(failed).ok and "boom" in scaffold.outcome(failed).final_message
    silent = ExecResult(exit_code=0, stdout="", stderr="", duration_s=1)
    assert not scaffold.outcome(silent).ok


@pytest.mark.podman
async def test_codex_writes_file_with_its_own_tool(backend, base_image):
    """Codex runs the scripted shell command with exec_command, then finishes; calls are recorded."""
    scaffold = CodexScaffold()
    report = await check(scaffold, image=base_image, backend=backend, episode_id=episode("codex"))
    assert report.file_content == CHECK_TEXT + "\n", report
    assert report.outcome.ok and "Done" in report.outcome.final_message, report.outcome
    assert [c.status for c in report.calls] == [200] * len(report.calls)
    main = [c for c in report.calls if c.kind == "main"]
    assert main and all(c.request.tools for c in main), [(c.kind, c.path) for c in report.calls]
    assert all(c.kind == "auxiliary" for c in report.calls if not (c.request and c.request.tools))
    assert main[0].completion.tool_calls[0].name == "exec_command"
    assert any(isinstance(p, ToolResult) for m in main[-1].request.messages for p in m.content)
    assert all(c.format == "openai-responses" for c in report.calls)
