"""One episode, start to end: the only place that knows the order of the steps.

    sandbox up (the task's image, limits, proxy-only network) -> setup commands
    -> scaffold deployed (its bundle mounted read-only) and launched with the instruction
    -> its model calls served by the responder through the proxy
    -> stop on the agent's exit, or a turn, token or wall-time limit
    -> sealed verifier -> teardown, always (also on error or cancellation)

Every episode ends in exactly one :class:`EpisodeResult` with a failure class, so a trainer
can mask the rewards of episodes that failed for reasons the policy did not cause:

- ``ok``: the agent finished and the verifier scored it (``reward_valid``).
- ``agent_error``: the agent crashed or gave up; still scored (the policy's doing).
- ``limit``: a turn, token or wall-time limit truncated the episode; scored as left.
- ``infra_error``: the sandbox, proxy, image or bundle failed, or the model server did and the
  agent failed with it; ``reward_valid`` is false.
- ``verifier_error``: the verifier could not score; ``reward_valid`` is false.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import attrs

from kwaigym.errors import ConfigError, InfraError, KwaigymError, LimitExceeded
from kwaigym.proxy.recorder import CallRecord
from kwaigym.proxy.responders import CallContext, Responder
from kwaigym.proxy.server import InterceptionProxy
from kwaigym.proxy.tagging import MAIN
from kwaigym.sandbox.backend import PodmanBackend
from kwaigym.sandbox.images import ImageStore
from kwaigym.task import Task
from kwaigym.task_sandbox import run_setup, task_image, task_spec
from kwaigym.verifiers import Attempt, VerifierResult, verify

log = logging.getLogger(__name__)

OK, AGENT_ERROR, LIMIT, INFRA_ERROR, VERIFIER_ERROR = (
    "ok",
    "agent_error",
    "limit",
    "infra_error",
    "verifier_error",
)
STATUSES = (OK, AGENT_ERROR, LIMIT, INFRA_ERROR, VERIFIER_ERROR)


@attrs.frozen(kw_only=True)
class Limits:
    """When an episode is cut short (``None``: no limit besides the task's agent timeout)."""

    max_turns: int | None = None
    """Main-loop model calls answered; the next one ends the episode."""
    max_tokens: int | None = None
    """Completion tokens the policy may produce over the episode (as its usage reports them)."""
    wall_time_s: float | None = None
    """The agent's wall time; default the task's ``agent_timeout_s``."""


@attrs.frozen(kw_only=True)
class EpisodeResult:
    """The one record of an episode."""

    episode_id: str
    task_id: str
    scaffold: str
    status: str
    """One of ``ok``, ``agent_error``, ``limit``, ``infra_error``, ``verifier_error``."""
    reward: float
    reward_valid: bool
    """False when the reward says nothing about the policy (infra or verifier failure)."""
    truncated: bool = False
    """A limit ended the episode before the agent did."""
    final_message: str = ""
    agent_exit_code: int | None = None
    turns: int = 0
    """Main-loop calls answered."""
    error: str | None = None
    verifier: VerifierResult | None = None
    calls: tuple[CallRecord, ...] = ()
    started_at: float = 0.0
    duration_s: float = 0.0
    metadata: dict[str, Any] = attrs.field(factory=dict)


NO_LIMITS = Limits()


class _Budget:
    """Counts the policy's work and says when a limit is reached; wraps the responder."""

    def __init__(self, responder: Responder, limits: Limits):
        self.responder, self.limits = responder, limits
        self.turns = self.tokens = 0
        self.exceeded: str | None = None
        self.hit = asyncio.Event()
        self.infra_failure: InfraError | None = None
        """The first call the responder could not answer for infrastructure reasons (upstream down)."""

    async def respond(self, request, ctx: CallContext):
        if ctx.kind == MAIN:
            if self.limits.max_turns is not None and self.turns >= self.limits.max_turns:
                self._stop(f"turn limit of {self.limits.max_turns} reached")
            self.turns += 1
        try:
            completion = await self.responder.respond(request, ctx)
        except InfraError as exc:
            self.infra_failure = self.infra_failure or exc
            raise
        if completion.usage is not None:
            self.tokens += completion.usage.output_tokens
        if self.limits.max_tokens is not None and self.tokens > self.limits.max_tokens:
            self._stop(f"token limit of {self.limits.max_tokens} reached ({self.tokens})")
        return completion

    def _stop(self, why: str):
        self.exceeded = self.exceeded or why
        self.hit.set()
        raise LimitExceeded(why)


async def run_episode(
    task: Task,
    scaffold,
    responder: Responder,
    *,
    proxy: InterceptionProxy,
    backend: PodmanBackend,
    images: ImageStore,
    limits: Limits = NO_LIMITS,
    episode_id: str | None = None,
    before_agent=None,
    **verifier_deps,
) -> EpisodeResult:
    """Run ``task`` with ``scaffold`` (an adapter instance) whose model calls ``responder`` answers.

    ``before_agent(sandbox)`` (async), if given, runs after setup and before the agent (the oracle
    policy puts the reference solution in place there). Never raises for a failed episode: the
    result's ``status`` says what happened. Bad configuration (no such task file) raises ConfigError.
    """
    episode_id = episode_id or f"{task.id}-{uuid.uuid4().hex[:8]}".replace("/", "-")
    started, wall_start = time.time(), time.monotonic()
    budget = _Budget(responder, limits)
    fields: dict[str, Any] = {"episode_id": episode_id, "task_id": task.id, "scaffold": scaffold.name,
                              "started_at": started}  # fmt: skip
    route = None
    try:
        image = await task_image(task, images)
        bundle = await asyncio.to_thread(scaffold.install)
        route = proxy.register(episode_id, budget)
        spec = task_spec(task, image=image, episode_id=episode_id, network=proxy.network_policy(),
                         mounts=scaffold.mounts(bundle), env=scaffold.env(route))  # fmt: skip
        async with backend.sandbox(spec) as sandbox:
            await run_setup(sandbox, task)
            if before_agent is not None:
                await before_agent(sandbox)
            fields |= await _run_agent(sandbox, task, scaffold, budget, limits)
            failed = fields.get("agent_failed") or fields.get("truncated")
            if budget.infra_failure is not None and failed:
                fields.pop("agent_failed", None)
                raise budget.infra_failure  # the agent failed because the model server did
            attempt = Attempt(
                final_message=fields.get("final_message", ""), exit_code=fields.get("agent_exit_code")
            )
            result = await verify(sandbox, task, attempt, **verifier_deps)
        fields |= _scored(fields, result)
    except ConfigError:
        raise
    except (InfraError, KwaigymError) as exc:
        log.warning("episode %s (task %s): %s", episode_id, task.id, exc)
        fields |= {"status": INFRA_ERROR, "reward": 0.0, "reward_valid": False, "error": str(exc)}
    finally:
        if route is not None:
            proxy.unregister(episode_id)
    calls = tuple(proxy.recorder.pop(episode_id))
    return EpisodeResult(**fields, turns=budget.turns, calls=calls, duration_s=time.monotonic() - wall_start)


async def _run_agent(sandbox, task: Task, scaffold, budget: _Budget, limits: Limits) -> dict[str, Any]:
    """Launch the agent and wait for its exit or a limit; what it left for the record."""
    timeout = limits.wall_time_s or task.environment.agent_timeout_s
    agent = asyncio.ensure_future(sandbox.exec(scaffold.command(task.instruction), timeout=timeout))
    limit_hit = asyncio.ensure_future(budget.hit.wait())
    try:
        await asyncio.wait({agent, limit_hit}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        limit_hit.cancel()
    if not agent.done():  # a turn or token limit: stop the agent where it is
        agent.cancel()
        await asyncio.gather(agent, return_exceptions=True)
        return {"truncated": True, "error": budget.exceeded}
    try:
        result = agent.result()
    except LimitExceeded as exc:  # wall time, memory, processes, disk
        return {
            "truncated": True,
            "error": str(exc),
            "agent_exit_code": getattr(exc.result, "exit_code", None),
        }
    outcome = scaffold.outcome(result)
    out = {"final_message": outcome.final_message, "agent_exit_code": outcome.exit_code}
    if budget.exceeded:
        return out | {"truncated": True, "error": budget.exceeded}
    if not outcome.ok:
        return out | {
            "agent_failed": True,
            "error": f"agent exited {outcome.exit_code}: {outcome.final_message[-500:]}",
        }
    return out


def _scored(fields: dict[str, Any], result: VerifierResult) -> dict[str, Any]:
    """The failure class and reward from what the agent did and what the verifier said."""
    agent_failed = fields.pop("agent_failed", False)
    if not result.reward_valid:
        status = VERIFIER_ERROR
        error = f"verifier: {result.error}"
    else:
        status = LIMIT if fields.get("truncated") else AGENT_ERROR if agent_failed else OK
        error = fields.get("error")
    return {"status": status, "reward": result.reward if result.reward_valid else 0.0,
            "reward_valid": result.reward_valid, "verifier": result, "error": error}  # fmt: skip
