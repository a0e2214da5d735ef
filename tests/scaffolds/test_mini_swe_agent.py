"""The mini-swe-agent adapter: the real package in a real sandbox, scripted through the proxy.

``scaffolds.check``'s policy answers "Done..." in text after the tool result, which
mini-swe-agent takes as a format error, not an end: it finishes only on its submit
command. So this test scripts its own policy: the shell call, then the submit call.
"""

from __future__ import annotations

import pytest

from kwaigym.chat.types import ChatRequest, ToolResult
from kwaigym.proxy import InterceptionProxy
from kwaigym.proxy.responders import CallContext, ScriptedResponder
from kwaigym.sandbox.base import ExecResult, SandboxSpec
from scaffolds.base import Scaffold
from scaffolds.check import CHECK_FILE, CHECK_TEXT
from scaffolds.mini_swe_agent import RESULT_PREFIX, SUBMIT, MiniSweAgentScaffold
from tests.conftest import episode


def test_declares_chat_and_bash_tool():
    """It is a Scaffold, speaks Chat Completions, and its shell tool is `bash` with a string `command`."""
    scaffold = MiniSweAgentScaffold()
    assert isinstance(scaffold, Scaffold)
    assert (scaffold.name, scaffold.wire_format) == ("mini-swe-agent", "openai-chat")
    call = scaffold.shell_call("echo hi", "call_1").tool_calls[0]
    assert (call.id, call.name, call.arguments) == ("call_1", "bash", '{"command": "echo hi"}')
    assert scaffold.command("do it; rm -rf $HOME")[-1] == "do it; rm -rf $HOME"  # an argument, not script


def test_outcome_reads_the_result_line():
    """Submitted is ok (the submission is the message); any other exit status or no result line is not."""
    scaffold = MiniSweAgentScaffold()

    def ran(info: str, exit_code: int = 0) -> ExecResult:
        return ExecResult(
            exit_code=exit_code, stdout=f"log\n{RESULT_PREFIX}{info}\n", stderr="", duration_s=1
        )

    done = scaffold.outcome(ran('{"exit_status": "Submitted", "submission": "patch"}'))
    assert done.ok and done.final_message == "patch"
    assert (
        scaffold.outcome(ran('{"exit_status": "Submitted", "submission": ""}')).final_message == "Submitted"
    )
    limited = scaffold.outcome(ran('{"exit_status": "LimitsExceeded", "submission": ""}'))
    assert not limited.ok and "LimitsExceeded" in limited.final_message
    crashed = ExecResult(exit_code=1, stdout="", stderr="Traceback: boom", duration_s=1)
    assert not scaffold.outcome(crashed).ok and "boom" in scaffold.outcome(crashed).final_message


def _policy(scaffold: MiniSweAgentScaffold) -> ScriptedResponder:
    """Write the check file with the bash tool; once a tool result is back, submit."""

    def answer(request: ChatRequest, ctx: CallContext):
        answered = any(isinstance(p, ToolResult) for m in request.messages for p in m.content)
        if answered:
            return scaffold.shell_call(SUBMIT, "call_kwaigym_submit")
        return scaffold.shell_call(f"echo {CHECK_TEXT} > {CHECK_FILE}", "call_kwaigym_check")

    return ScriptedResponder(answer)


@pytest.mark.podman
async def test_mini_swe_agent_writes_file_with_its_own_tool(backend, base_image):
    """mini-swe-agent runs the scripted command with its bash tool, then submits; calls are recorded."""
    scaffold = MiniSweAgentScaffold()
    bundle = scaffold.install()
    async with InterceptionProxy() as proxy:
        route = proxy.register(episode("mini-swe-agent"), _policy(scaffold))
        spec = SandboxSpec(
            image=base_image,
            episode_id=route.episode_id,
            network=proxy.network_policy(),
            mounts=scaffold.mounts(bundle),
            env=scaffold.env(route),
        )
        async with backend.sandbox(spec) as sb:
            python = await sb.exec(["python3", "--version"])
            if not python.ok or not python.stdout.startswith("Python 3.11"):
                pytest.skip(f"the image's python3 is not 3.11 (the bundle's): {python.output.strip()}")
            result = await sb.exec(scaffold.command("Write the check file."), timeout=300)
            content = await sb.exec(["cat", CHECK_FILE])
        calls = proxy.recorder.calls(route.episode_id)
    outcome = scaffold.outcome(result)
    assert content.stdout == CHECK_TEXT + "\n", result.output[-3000:]
    assert outcome.ok, (outcome, result.output[-3000:])
    assert len(calls) == 2, calls
    assert [c.status for c in calls] == [200] * len(calls)
    assert all(c.format == "openai-chat" for c in calls)
    assert calls[0].completion.tool_calls[0].name == "bash"
    assert any(isinstance(p, ToolResult) for m in calls[-1].request.messages for p in m.content)
