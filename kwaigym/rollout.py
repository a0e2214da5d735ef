"""The rollout runner: many episodes at once against one policy, resumable, for trainers and evals.

    results = await rollout(tasks, ["mini"], "oracle", concurrency=8, out="runs/exp1")

Episodes share one interception proxy and one podman backend. An episode that ends in
``infra_error`` (sandbox, proxy, image) is retried with backoff (tenacity); an agent's own
failure is a result, not retried. Each finished episode is appended to
``OUT/episodes.jsonl`` at once, so a killed run, started again with the same ``out``, does only
the episodes not yet stored. A rich progress bar shows the pass rate, throughput and errors.

Policies by name: ``oracle`` (the task's reference solution through the scaffold's own tool),
``null`` (finish at once), ``openai:URL`` (an OpenAI-compatible server such as SGLang or vLLM;
key from ``OPENAI_API_KEY`` if set), ``anthropic`` (the Anthropic API, key from
``ANTHROPIC_API_KEY``), ``replay:DIR`` (answers with the episodes recorded in DIR; divergences
go to each result's ``metadata["replay_divergences"]``), or any callable
``(task, scaffold) -> kwaigym.policies.Policy``. Packages add more by entry point (group
``kwaigym.policies``; the reference trainer's local model would be ``local:PATH``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import entry_points

import attrs
import tenacity
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kwaigym import policies
from kwaigym.episode import INFRA_ERROR, NO_LIMITS, OK, EpisodeResult, Limits, run_episode
from kwaigym.errors import ConfigError
from kwaigym.proxy.responders import UpstreamResponder
from kwaigym.proxy.server import InterceptionProxy
from kwaigym.sandbox.backend import PodmanBackend
from kwaigym.sandbox.images import ImageStore
from kwaigym.task import Task
from kwaigym.trajectory.store import EpisodeStore, episode_to_dict

PolicyFactory = Callable[[Task, object], policies.Policy]
#: Packages add policies here: ``name = "module:make"``; ``name:argument`` is ``make(argument)``, a
#: PolicyFactory.
#: PolicyFactory.
POLICY_GROUP = "kwaigym.policies"
ANTHROPIC_URL = "https://api.anthropic.com"


@attrs.define
class UpstreamPolicies:
    """A policy factory whose episodes all call one upstream model server.

    :func:`rollout` calls ``aclose`` at the end of a run: the pooled connections belong to that
    run's event loop (a later run opens new ones).
    """

    upstream: UpstreamResponder

    def __call__(self, task: Task, scaffold) -> policies.Policy:
        return policies.Policy(self.upstream)

    async def aclose(self) -> None:
        await self.upstream.aclose()


def policy_factory(spec: str | PolicyFactory) -> PolicyFactory:
    """A policy factory from its name (see the module docstring)."""
    if callable(spec):
        return spec
    if spec in ("oracle", "null"):
        return getattr(policies, spec)
    if spec.startswith("openai:"):
        url = spec.removeprefix("openai:")
        return UpstreamPolicies(
            UpstreamResponder(url, format="openai-chat", api_key=os.environ.get("OPENAI_API_KEY"))
        )
    if spec.startswith("replay:"):
        from kwaigym.replay import ReplayResponder, find_episode

        records = list(EpisodeStore(spec.removeprefix("replay:")).records())
        if not records:
            raise ConfigError(f"policy {spec!r}: no recorded episodes in {spec.removeprefix('replay:')}")
        return lambda task, scaffold: policies.Policy(
            ReplayResponder(find_episode(records, task.id, scaffold.name)["calls"])
        )
    if spec == "anthropic":
        key = os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise ConfigError("policy 'anthropic' needs ANTHROPIC_API_KEY in the environment")
        return UpstreamPolicies(UpstreamResponder(ANTHROPIC_URL, format="anthropic", api_key=key))
    name, _, argument = spec.partition(":")
    for entry in entry_points(group=POLICY_GROUP):
        if entry.name == name:  # e.g. the reference trainer's `local:PATH` (a model on this machine)
            return entry.load()(argument)
    raise ConfigError(
        f"unknown policy {spec!r}; use oracle, null, openai:URL, anthropic, replay:DIR or a policy "
        f"registered under the entry point group {POLICY_GROUP!r}"
    )


class _Tally:
    """Live counts for the progress bar."""

    def __init__(self):
        self.statuses: Counter[str] = Counter()
        self.rewards: list[float] = []
        self.started = time.monotonic()

    def add(self, result: EpisodeResult) -> None:
        self.statuses[result.status] += 1
        if result.reward_valid:
            self.rewards.append(result.reward)

    def line(self) -> str:
        passed = sum(r >= 1.0 for r in self.rewards)
        rate = f"{passed / len(self.rewards):.0%}" if self.rewards else "-"
        errors = ", ".join(f"{s} {n}" for s, n in sorted(self.statuses.items()) if s != OK) or "none"
        per_min = sum(self.statuses.values()) / max((time.monotonic() - self.started) / 60, 1e-9)
        return f"pass {rate} ({passed}/{len(self.rewards)})  {per_min:.1f} episodes/min  not ok: {errors}"


async def rollout(
    tasks: Iterable[Task],
    scaffolds: Sequence[str],
    policy: str | PolicyFactory,
    *,
    concurrency: int = 4,
    samples: int = 1,
    out: str | os.PathLike | None = None,
    limits: Limits = NO_LIMITS,
    attempts: int = 3,
    backend: PodmanBackend | None = None,
    show_progress: bool = True,
    on_result: Callable[[EpisodeResult], None] | None = None,
    **verifier_deps,
) -> list[EpisodeResult]:
    """Run every (task, scaffold, sample) not already in ``out``; return this run's results."""
    from scaffolds import registry

    if concurrency < 1 or samples < 1 or attempts < 1:
        raise ConfigError(
            f"concurrency, samples and attempts must be >= 1 ({concurrency}, {samples}, {attempts})"
        )
    make_policy = policy_factory(policy)
    adapters = {name: registry.get(name) for name in scaffolds}
    store = EpisodeStore(out) if out is not None else None
    if store:
        store.recover()
    done = store.done() if store else set()
    todo = [
        (t, name, k)
        for t in tasks
        for name in adapters
        for k in range(samples)
        if (t.id, name, k) not in done
    ]
    gate, tally, results = asyncio.Semaphore(concurrency), _Tally(), []

    async def one(task: Task, name: str, sample: int, proxy, backend, images, advance) -> None:
        async with gate:
            result = await _with_retries(task, adapters[name], make_policy, sample, proxy, backend, images,
                                         limits, attempts, verifier_deps)  # fmt: skip
        if store:
            await asyncio.to_thread(store.append, episode_to_dict(result))
        results.append(result)
        tally.add(result)
        advance()
        if on_result:
            on_result(result)

    try:
        async with _backend(backend) as be, InterceptionProxy() as proxy:
            images = ImageStore(be.service)
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[tally]}"), TimeElapsedColumn(),
                          disable=not show_progress, transient=False) as progress:  # fmt: skip
                bar = progress.add_task("episodes", total=len(todo), tally="")

                def advance():
                    progress.update(bar, advance=1, tally=tally.line())

                runs = [asyncio.ensure_future(one(t, n, k, proxy, be, images, advance)) for t, n, k in todo]
                try:
                    await asyncio.gather(*runs)
                finally:  # a failed run (the store's disk full) stops the others, sandboxes removed
                    for run in runs:
                        run.cancel()
                    await asyncio.gather(*runs, return_exceptions=True)
    finally:
        if (close := getattr(make_policy, "aclose", None)) is not None:
            await close()
    return results


async def _with_retries(task, scaffold, make_policy, sample, proxy, backend, images, limits, attempts, deps):
    """One episode; infrastructure failures are retried with backoff, everything else is a result."""
    retrying = tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=1, max=30),
        retry=tenacity.retry_if_result(lambda r: r.status == INFRA_ERROR),
        retry_error_callback=lambda state: state.outcome.result(),  # the last attempt's record
    )
    async for attempt in retrying:
        with attempt:
            policy = make_policy(task, scaffold)
            result = await run_episode(task, scaffold, policy.responder, proxy=proxy, backend=backend,
                                       images=images, limits=limits, before_agent=policy.before_agent,
                                       **deps)  # fmt: skip
            result.metadata.update(sample=sample, attempt=attempt.retry_state.attempt_number)
            if (divergences := getattr(policy.responder, "divergences", None)) is not None:
                result.metadata["replay_divergences"] = [attrs.asdict(d) for d in divergences]
        if not attempt.retry_state.outcome.failed:
            attempt.retry_state.set_result(result)
    return result


class _backend:
    """The caller's backend, or a private one closed after the run."""

    def __init__(self, backend: PodmanBackend | None):
        self.given, self.own = backend, None

    async def __aenter__(self) -> PodmanBackend:
        if self.given is not None:
            return self.given
        self.own = PodmanBackend(reap=False)
        return await self.own.__aenter__()

    async def __aexit__(self, *exc):
        if self.own is not None:
            await self.own.__aexit__(*exc)
