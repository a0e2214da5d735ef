"""Built-in policies for checking tasks and scaffolds end to end, without a model.

- ``oracle``: makes the agent apply the task's reference solution with its own shell tool,
  then finish (the answer of a QA task is its final message). On a valid task it scores 1
  with any scaffold: a failure points at the scaffold, the verifier or the infrastructure.
- ``null``: finishes at once without touching anything. On a valid task it scores 0.

Both answer auxiliary calls (titles, summaries) with a short text. A policy here is a
responder plus, for the oracle, a step that stages the solution in the sandbox before the
agent starts (``before_agent``).
"""

from __future__ import annotations

import attrs

from kwaigym.chat.types import ChatRequest, ToolResult
from kwaigym.proxy.responders import CallContext, ScriptedResponder
from kwaigym.proxy.tagging import AUXILIARY
from kwaigym.task import Task
from kwaigym.task_sandbox import stage_solution


@attrs.define
class Policy:
    """A responder for the episode's calls, and an optional step before the agent starts."""

    responder: object
    before_agent: object = None


def _answered(request: ChatRequest) -> bool:
    return any(isinstance(p, ToolResult) for m in request.messages for p in m.content)


def oracle(task: Task, scaffold) -> Policy:
    """The reference solution through the scaffold's own shell tool (see the module docstring)."""
    from scaffolds.base import finish_call

    staged: dict[str, str | None] = {}
    answer = (task.solution.answer if task.solution else None) or "Done: applied the fix."

    async def stage(sandbox) -> None:
        staged["command"] = await stage_solution(sandbox, task)

    def respond(request: ChatRequest, ctx: CallContext):
        if ctx.kind == AUXILIARY:
            return "ok"
        command = staged.get("command")
        if command is None or _answered(request):
            return finish_call(scaffold, answer, "call_kwaigym_oracle_done")
        return scaffold.shell_call(f"cd {task.environment.workdir} && {command}", "call_kwaigym_oracle")

    return Policy(ScriptedResponder(respond), stage)


def null(task: Task, scaffold) -> Policy:
    """Finish at once, changing nothing."""
    from scaffolds.base import finish_call

    def respond(request: ChatRequest, ctx: CallContext):
        if ctx.kind == AUXILIARY:
            return "ok"
        return finish_call(scaffold, "I did not change anything.", "call_kwaigym_null_done")

    return Policy(ScriptedResponder(respond))
