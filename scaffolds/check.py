"""Run a scaffold once on a tiny task with a scripted policy (``kwaigym scaffolds check NAME``).

The policy makes the agent run one shell command with its own tool (writing a file),
then tells it the task is done; side calls (titles, probes) get a short text. This is
the smallest real episode: proxy, sandbox under the proxy-only network policy, the
bundle mounted read-only, the agent's own binary.
"""

from __future__ import annotations

import attrs

from kwaigym.chat.types import ChatRequest, ToolResult
from kwaigym.proxy.recorder import CallRecord
from kwaigym.proxy.responders import CallContext, ScriptedResponder
from kwaigym.proxy.server import InterceptionProxy
from kwaigym.proxy.tagging import AUXILIARY
from kwaigym.sandbox.backend import PodmanBackend
from kwaigym.sandbox.base import SandboxSpec
from scaffolds.base import AgentOutcome, Scaffold, finish_call

CHECK_FILE = "/workspace/kwaigym-check.txt"
CHECK_TEXT = "written by the agent with its own tool"


@attrs.frozen(kw_only=True)
class CheckReport:
    outcome: AgentOutcome
    file_content: str | None
    calls: list[CallRecord]

    @property
    def passed(self) -> bool:
        return self.outcome.ok and self.file_content == CHECK_TEXT + "\n"


def scripted_policy(scaffold: Scaffold, command: str) -> ScriptedResponder:
    """Shell tool once, then "done"; auxiliary calls (titles, probes) get "ok"."""
    tool = scaffold.shell_call("true", "probe").tool_calls[0].name

    def answer(request: ChatRequest, ctx: CallContext):
        if ctx.kind == AUXILIARY:
            return "ok"
        answered = any(isinstance(p, ToolResult) for m in request.messages for p in m.content)
        if answered:
            return finish_call(scaffold, "Done: the file is written.", "call_kwaigym_done")
        if any(t.name == tool for t in request.tools):
            return scaffold.shell_call(command, "call_kwaigym_check")
        return "ok"

    return ScriptedResponder(answer)


async def check(
    scaffold: Scaffold,
    *,
    image: str,
    backend: PodmanBackend,
    timeout: float = 300,
    episode_id: str | None = None,
) -> CheckReport:
    """One scripted run of ``scaffold`` in a fresh sandbox; what it did and sent."""
    bundle = scaffold.install()
    policy = scripted_policy(scaffold, f"echo {CHECK_TEXT} > {CHECK_FILE}")
    async with InterceptionProxy() as proxy:
        route = proxy.register(episode_id or f"check-{scaffold.name}", policy)
        spec = SandboxSpec(
            image=image,
            episode_id=route.episode_id,
            network=proxy.network_policy(),
            mounts=scaffold.mounts(bundle),
            env=scaffold.env(route),
        )
        async with backend.sandbox(spec) as sb:
            result = await sb.exec(scaffold.command("Write the check file."), timeout=timeout)
            content = await sb.exec(["cat", CHECK_FILE])
        calls = proxy.recorder.calls(route.episode_id)
    return CheckReport(outcome=scaffold.outcome(result), file_content=content.stdout if content.ok else None,
                       calls=calls)  # fmt: skip
