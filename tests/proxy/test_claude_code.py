"""The real Claude Code binary in a real podman sandbox, driven through the proxy by a script.

The sandbox's network policy lets it reach only the proxy's port, so no request can leave the
machine; the script makes Claude Code run its Bash tool once and then finish.
"""

from __future__ import annotations

import pytest

from kwaigym.chat.types import Completion, ToolCall, ToolResult
from kwaigym.proxy import InterceptionProxy, ScriptedResponder
from kwaigym.sandbox import Mount, NetworkPolicy
from scaffolds.npm import npm_bundle

pytestmark = pytest.mark.podman

CLAUDE_CODE_VERSION = "2.1.197"
PROOF = "/workspace/proof.txt"


def drive_claude(request, ctx):
    """Main loop: call Bash once, then finish; side calls (titles, probes) get a short text."""
    names = {tool.name for tool in request.tools}
    answered = any(isinstance(p, ToolResult) for m in request.messages for p in m.content)
    if "Bash" in names and not answered:
        command = f'{{"command": "echo made-by-claude > {PROOF}", "description": "write the proof file"}}'
        return Completion(tool_calls=[ToolCall(id="toolu_kwaigym_1", name="Bash", arguments=command)])
    return "Done: the file is written." if answered else "ok"


async def test_claude_code_runs_bash_through_the_proxy(backend, spec, tmp_path):
    """Claude Code calls the proxy, runs the scripted Bash command in the sandbox, and finishes."""
    bundle = npm_bundle("@anthropic-ai/claude-code", CLAUDE_CODE_VERSION)
    binary_dir = bundle / "node_modules" / "@anthropic-ai" / "claude-code-linux-x64"
    async with InterceptionProxy(confdir=tmp_path / "mitm") as proxy:
        responder = ScriptedResponder(drive_claude)
        route = proxy.register("claude-ep", responder)
        env = {
            "ANTHROPIC_BASE_URL": route.base_url,
            "ANTHROPIC_API_KEY": route.token,
            "IS_SANDBOX": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "HOME": "/root",
        }
        box = spec(
            network=NetworkPolicy(mode="proxy", proxy_port=proxy.port),
            mounts=[Mount(source=str(binary_dir), target="/opt/claude")],
            env=env,
        )
        async with backend.sandbox(box) as sb:
            run = await sb.exec(
                ["/opt/claude/claude", "-p", "Write the proof file.", "--dangerously-skip-permissions",
                 "--output-format", "json"],
                timeout=180,
            )  # fmt: skip
            proof = await sb.exec(["cat", PROOF])
        calls = proxy.recorder.calls("claude-ep")
    assert run.exit_code == 0, run.output[-2000:]
    assert proof.stdout == "made-by-claude\n"
    assert calls and all(c.status == 200 for c in calls), [(c.path, c.status, c.error) for c in calls]
    bash_calls = [c for c in calls if c.completion and c.completion.tool_calls]
    assert len(bash_calls) == 1 and bash_calls[0].format == "anthropic"
    assert any(isinstance(p, ToolResult) for c in calls for m in c.request.messages for p in m.content)
    assert '"is_error":false' in run.stdout.replace(" ", "") or "Done" in run.stdout
