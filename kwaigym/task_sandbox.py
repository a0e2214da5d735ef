"""A task's sandbox: its image (given, built from its context, or the base image), its spec,
its setup commands, and its reference solution.

The episode, ``kwaigym validate`` and the oracle policy all start a task's sandbox the same
way, so they share these steps. Task images build offline: the build gets the base image as
the build argument ``KWAIGYM_BASE_IMAGE`` and runs with no network.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path

from kwaigym.errors import ConfigError, InfraError
from kwaigym.sandbox.base import Mount, NetworkPolicy, Resources, Sandbox, SandboxSpec
from kwaigym.sandbox.images import ImageStore
from kwaigym.task import Task

BASE_IMAGE_ARG = "KWAIGYM_BASE_IMAGE"
SOLUTION_DIR = "/solution"
#: Where kwaigym stages files (the tests, the rewards, the oracle's solution): writable on a
#: read-only root too.
STAGING_DIRS = ("/tests", "/logs", SOLUTION_DIR)
# The verifier's own time comes on top of the agent's, with a margin for setup and teardown.
_SANDBOX_MARGIN_S = 120.0


class TaskSetupError(InfraError):
    """A task's sandbox could not be prepared (its image, its setup commands, its solution)."""


async def task_image(task: Task, images: ImageStore) -> str:
    """The image of ``task``: its ``image``, its build context built offline, or the base image."""
    env = task.environment
    if env.image:
        return await images.ensure(env.image)
    base = await images.base_image()
    if env.build_context is None:
        return base
    context = task.path(env.build_context)
    if not context.is_dir():
        raise ConfigError(f"build context {context} is not a directory", task_id=task.id)
    return await images.build(
        context, containerfile=env.containerfile, build_args={BASE_IMAGE_ARG: base}, network="none"
    )


def task_spec(
    task: Task,
    *,
    image: str,
    episode_id: str,
    network: NetworkPolicy | None = None,
    mounts: Sequence[Mount] = (),
    env: Mapping[str, str] | None = None,
) -> SandboxSpec:
    """The sandbox spec of ``task`` (no network unless ``network`` says otherwise)."""
    e = task.environment
    lifetime = e.agent_timeout_s + task.verifier.timeout_s + _SANDBOX_MARGIN_S
    return SandboxSpec(
        image=image,
        episode_id=episode_id,
        workdir=e.workdir,
        env=dict(env or {}),
        resources=Resources(
            cpus=e.cpus,
            memory_mb=e.memory_mb,
            pids=e.pids,
            disk_mb=e.disk_mb,
            wall_time_s=lifetime,
            **({"scratch_mb": e.disk_mb} if e.disk_mb else {}),  # the task's disk bound, per directory
        ),
        network=network or NetworkPolicy(mode="none"),
        mounts=tuple(mounts),
        read_only_root=e.read_only_root,
        writable=(*e.writable, *STAGING_DIRS),
    )


async def run_setup(sandbox: Sandbox, task: Task, *, timeout: float = 600) -> None:
    """Run the task's setup commands in order; the first failure raises with its output."""
    for command in task.environment.setup:
        result = await sandbox.exec(command, timeout=timeout)
        if not result.ok:
            raise TaskSetupError(
                f"setup command {command!r} failed (exit {result.exit_code}): {result.output[-2000:]}",
                task_id=task.id,
            )


def solution_command(task: Task) -> str | None:
    """The shell command that applies the task's reference solution in its workdir (see
    :func:`stage_solution`), or None when the solution is only an answer. A script wins (it
    usually applies the patch itself); an inline ``command`` is returned as it is, so the
    oracle's tool call shows the real command rather than a staged file's name."""
    solution = task.solution
    if solution is None:
        raise ConfigError("the task has no reference solution", task_id=task.id)
    if solution.script:
        return f"bash {shlex.quote(f'{SOLUTION_DIR}/{Path(solution.script).name}')}"
    if solution.command:
        return solution.command
    if solution.patch:
        return f"git apply {SOLUTION_DIR}.patch 2>/dev/null || patch -p1 --forward < {SOLUTION_DIR}.patch"
    return None


async def stage_solution(sandbox: Sandbox, task: Task) -> str | None:
    """Put the task's reference solution into the sandbox; return the shell command that applies it
    (run in the workdir), or None when the solution is only an answer. A script comes with its
    ``solution/`` folder at ``/solution``; an inline command needs nothing staged; a patch is used
    only when there is neither (a script usually applies the patch itself)."""
    command = solution_command(task)
    solution = task.solution
    if solution.script:
        script = task.path(solution.script)
        if not script.is_file():
            raise ConfigError(f"solution script {script} does not exist", task_id=task.id)
        # /solution may be a tmpfs mount point (read-only root): empty it, never remove it
        await sandbox.exec(f"mkdir -p {SOLUTION_DIR} && find {SOLUTION_DIR} -mindepth 1 -delete")
        await sandbox.put_dir(str(script.parent), SOLUTION_DIR)
    elif solution.patch and not solution.command:
        await sandbox.put_file(f"{SOLUTION_DIR}.patch", solution.patch.encode())
    return command


async def apply_solution(sandbox: Sandbox, task: Task, *, timeout: float = 600) -> str:
    """Apply the task's reference solution in the sandbox (see :func:`stage_solution`); return its
    final message: the answer of a QA task, else a note."""
    command = await stage_solution(sandbox, task)
    if command is not None:
        await _must(sandbox, task, command, task.environment.workdir, timeout)
    answer = task.solution.answer
    return answer if answer is not None else "Applied the reference solution."


async def _must(sandbox: Sandbox, task: Task, command: str, workdir: str, timeout: float) -> None:
    result = await sandbox.exec(command, cwd=workdir, timeout=timeout)
    if not result.ok:
        raise TaskSetupError(
            f"reference solution failed: {command!r} exited {result.exit_code}: {result.output[-2000:]}",
            task_id=task.id,
        )
