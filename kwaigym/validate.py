"""Instance validation: a task is valid only if its reference solution scores 1 and an empty
attempt scores below 1, every time.

Each task runs ``repeat`` times both ways, each run in a fresh sandbox. For tasks scored by
named tests (the ``swe`` verifier), a test whose status differs between runs of the same
attempt is flaky: it is quarantined (dropped from FAIL_TO_PASS / PASS_TO_PASS, with a
warning) instead of being trusted, and the task is judged on the tests that remain. A
FAIL_TO_PASS test that passes without the fix, a reference run that fails, or a verifier
that could not score (``reward_valid`` false) makes the task invalid.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable

import attrs

from kwaigym.errors import KwaigymError
from kwaigym.sandbox.backend import PodmanBackend
from kwaigym.sandbox.images import ImageStore
from kwaigym.task import Task
from kwaigym.task_sandbox import apply_solution, run_setup, task_image, task_spec
from kwaigym.verifiers import Attempt, VerifierResult, verify

PASSED = "PASSED"


@attrs.frozen(kw_only=True)
class Run:
    """One scored attempt of a task: the reference solution or the empty attempt."""

    reference: bool
    reward: float
    reward_valid: bool
    tests: dict[str, str] = attrs.field(factory=dict)
    """Per-test statuses (``swe`` verifier), else empty."""
    error: str | None = None
    duration_s: float = 0.0


@attrs.frozen(kw_only=True)
class TaskValidation:
    """The verdict on one task."""

    task_id: str
    kind: str
    runs: list[Run]
    quarantined: list[str] = attrs.field(factory=list)
    """Flaky tests, dropped from FAIL_TO_PASS / PASS_TO_PASS."""
    problems: list[str] = attrs.field(factory=list)
    """Why the task is invalid; empty when it is valid."""

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def duration_s(self) -> float:
        return sum(r.duration_s for r in self.runs)


async def score_once(
    task: Task, *, reference: bool, backend: PodmanBackend, images: ImageStore, **verifier_deps
) -> Run:
    """Start a fresh sandbox, apply the reference (or nothing), verify; the sandbox is removed after."""
    started = time.monotonic()
    episode_id = f"validate-{task.id}-{uuid.uuid4().hex[:8]}".replace("/", "-")
    try:
        image = await task_image(task, images)
        async with backend.sandbox(task_spec(task, image=image, episode_id=episode_id)) as sandbox:
            await run_setup(sandbox, task)
            message = await apply_solution(sandbox, task) if reference else ""
            result: VerifierResult = await verify(
                sandbox, task, Attempt(final_message=message, exit_code=0), **verifier_deps
            )
    except KwaigymError as exc:
        return Run(reference=reference, reward=0.0, reward_valid=False, error=str(exc),
                   duration_s=time.monotonic() - started)  # fmt: skip
    tests = result.details.get("tests") if isinstance(result.details, dict) else None
    return Run(
        reference=reference,
        reward=result.reward,
        reward_valid=result.reward_valid,
        tests=dict(tests or {}),
        error=result.error,
        duration_s=time.monotonic() - started,
    )


def _flaky(runs: list[Run]) -> set[str]:
    """Tests whose status is not the same in every run of the same attempt."""
    flaky: set[str] = set()
    for reference in (True, False):
        same = [r.tests for r in runs if r.reference is reference and r.reward_valid]
        for test in set().union(*same) if same else ():
            if len({s.get(test, "MISSING") for s in same}) > 1:
                flaky.add(test)
    return flaky


def judge(task: Task, runs: list[Run]) -> TaskValidation:
    """The verdict from the runs (see the module docstring)."""
    problems = [f"{'reference' if r.reference else 'empty'} run: {r.error or 'no valid reward'}"
                for r in runs if not r.reward_valid]  # fmt: skip
    quarantined: list[str] = []
    params = task.verifier.params
    if task.verifier.kind == "swe" and not problems:
        quarantined = sorted(_flaky(runs))
        f2p = [t for t in params.get("fail_to_pass", []) if t not in quarantined]
        p2p = [t for t in params.get("pass_to_pass", []) if t not in quarantined]
        if not f2p:
            problems.append("no FAIL_TO_PASS test is left after quarantine")
        for run in runs:
            bad = [t for t in f2p + p2p if run.tests.get(t) != PASSED]
            if run.reference and bad:
                problems.append(f"reference run: {len(bad)} test(s) do not pass: {', '.join(bad[:5])}")
            if not run.reference and all(run.tests.get(t) == PASSED for t in f2p):
                problems.append("empty attempt: every FAIL_TO_PASS test passes without a fix")
    elif not problems:
        for run in runs:
            if run.reference and run.reward < 1.0:
                problems.append(f"reference run scored {run.reward:g}, not 1")
            if not run.reference and run.reward >= 1.0:
                problems.append("empty attempt scored 1")
    return TaskValidation(task_id=task.id, kind=task.verifier.kind, runs=runs, quarantined=quarantined,
                          problems=sorted(set(problems)))  # fmt: skip


async def validate_task(
    task: Task, *, repeat: int, backend, images, gate: asyncio.Semaphore | None = None, **verifier_deps
) -> TaskValidation:
    """``repeat`` reference runs and ``repeat`` empty runs of ``task`` (each in its own sandbox, at most
    ``gate`` sandboxes at once), then the verdict."""
    gate = gate or asyncio.Semaphore(1)

    async def one(reference: bool) -> Run:
        async with gate:
            return await score_once(
                task, reference=reference, backend=backend, images=images, **verifier_deps
            )

    runs = await asyncio.gather(*(one(reference) for _ in range(repeat) for reference in (True, False)))
    return judge(task, list(runs))


async def validate_tasks(
    tasks: Iterable[Task],
    *,
    concurrency: int = 4,
    repeat: int = 1,
    backend: PodmanBackend,
    images: ImageStore,
    on_done: Callable[[TaskValidation], None] | None = None,
    **verifier_deps,
) -> list[TaskValidation]:
    """Validate ``tasks`` with at most ``concurrency`` sandboxes at once (the runs of one task are
    independent, so they spread too); the results keep the tasks' order."""
    if concurrency < 1 or repeat < 1:
        raise ValueError(f"concurrency and repeat must be >= 1, got {concurrency} and {repeat}")
    gate = asyncio.Semaphore(concurrency)

    async def one(task: Task) -> TaskValidation:
        verdict = await validate_task(
            task, repeat=repeat, backend=backend, images=images, gate=gate, **verifier_deps
        )
        if on_done:
            on_done(verdict)
        return verdict

    return list(await asyncio.gather(*(one(t) for t in tasks)))


def render(verdicts: list[TaskValidation], *, title: str = "validation"):
    """A rich table of the verdicts: one row a task, with its runs, quarantined tests and problems."""
    from rich.table import Table

    table = Table(title=title)
    for column in ("task", "kind", "reference", "empty", "quarantined", "verdict"):
        table.add_column(column)
    for v in verdicts:
        refs = [r for r in v.runs if r.reference]
        empties = [r for r in v.runs if not r.reference]
        ref_ok = sum(r.reward_valid and r.reward >= 1.0 for r in refs)
        empty_ok = sum(r.reward_valid and r.reward < 1.0 for r in empties)
        verdict = "[green]valid[/]" if v.valid else "[red]INVALID[/]: " + "; ".join(v.problems)[:300]
        reference, empty = f"{ref_ok}/{len(refs)} score 1", f"{empty_ok}/{len(empties)} below 1"
        table.add_row(v.task_id, v.kind, reference, empty, ", ".join(v.quarantined) or "-", verdict)
    valid = sum(v.valid for v in verdicts)
    table.caption = f"{valid}/{len(verdicts)} valid"
    return table
