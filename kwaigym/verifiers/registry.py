"""Verifiers by kind, and :func:`verify`, the one safe way to run one.

Built-in kinds: ``script``, ``swe``, ``output``, ``judge``. A package adds a kind under the entry
point group ``kwaigym.verifiers`` (``kind = "package.module:VerifierClass"``); the class is built
as ``cls(spec, **deps)`` with the dependencies its ``__init__`` names.

:func:`verify` never raises for a verifier that crashes, hangs, produces garbage or loses its
sandbox: the episode gets ``reward_valid = False`` and the error, and can be retried or dropped.
Only bad configuration (an unknown kind, bad params, a missing tests directory) raises
``ConfigError``, because retrying cannot fix it.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import logging
import time
from importlib.metadata import entry_points

import attrs

from kwaigym.errors import ConfigError, KwaigymError
from kwaigym.sandbox.base import Sandbox
from kwaigym.task import Task, VerifierSpec
from kwaigym.verifiers.base import Attempt, Verifier, VerifierResult, kill_leftovers, seal

log = logging.getLogger(__name__)

GROUP = "kwaigym.verifiers"
_CANCEL_GRACE_S = 30.0
"""How long a verifier past its timeout may take to clean up before it is abandoned."""


def _builtin() -> dict[str, type]:
    from kwaigym.verifiers.judge import JudgeVerifier
    from kwaigym.verifiers.output import OutputVerifier
    from kwaigym.verifiers.script import ScriptVerifier
    from kwaigym.verifiers.swe import SweVerifier

    return {"script": ScriptVerifier, "swe": SweVerifier, "output": OutputVerifier, "judge": JudgeVerifier}


def available() -> dict[str, type]:
    """Every known verifier class by kind (registered entry points override built-ins of a kind)."""
    found = _builtin()
    for entry in entry_points(group=GROUP):
        found[entry.name] = entry.load()
    return found


def get_verifier(spec: VerifierSpec, **deps) -> Verifier:
    """The verifier of ``spec``; an unknown kind says what exists and the closest match.

    ``deps`` are handed to the kinds that name them (``judge=`` for ``judge``); others ignore them,
    so one set of dependencies serves a whole dataset of mixed kinds.
    """
    classes = available()
    if spec.kind not in classes:
        close = difflib.get_close_matches(spec.kind, classes, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"no verifier kind {spec.kind!r}; available: {', '.join(sorted(classes))}.{hint}")
    cls = classes[spec.kind]
    try:
        return cls(spec, **_accepted(cls, deps))
    except ConfigError:
        raise
    except Exception as exc:  # a plugin that checks its params its own way
        raise ConfigError(f"verifier {spec.kind!r} could not be built: {type(exc).__name__}: {exc}") from exc


def _accepted(cls: type, deps: dict) -> dict:
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return deps
    names = {p.name for p in params}
    return {k: v for k, v in deps.items() if k in names}


async def verify(
    sandbox: Sandbox | None, task: Task, attempt: Attempt | None = None, **deps
) -> VerifierResult:
    """Seal ``sandbox`` and score ``attempt`` with the task's verifier, within its timeout.

    Args:
        sandbox: the sandbox the agent left (None only for kinds that need none: a QA answer in
            the final message, a judge that reads no files).
        task: the task; ``task.verifier`` says the kind, params and timeout.
        attempt: what the agent left besides the sandbox (its final message).
        deps: dependencies of the kinds that need them (``judge=`` a Responder).

    Returns:
        The result; ``reward_valid`` is False (and ``error`` says why) when the verifier crashed,
        ran past ``task.verifier.timeout_s``, produced something unreadable, or the sandbox failed.

    Raises:
        ConfigError: the task's verifier is misconfigured (named with the task's id).
    """
    attempt = attempt or Attempt()
    started = time.monotonic()
    try:
        verifier = get_verifier(task.verifier, **deps)
        result = await _run(verifier, sandbox, task, attempt)
    except ConfigError as exc:
        if exc.task_id:
            raise
        raise ConfigError(exc.message, task_id=task.id, episode_id=exc.episode_id) from None
    return attrs.evolve(result, duration_s=time.monotonic() - started)


async def _run(verifier: Verifier, sandbox: Sandbox | None, task: Task, attempt: Attempt) -> VerifierResult:
    timeout = task.verifier.timeout_s
    try:
        if sandbox is not None:
            await seal(sandbox)
        result = await _bounded(verifier.verify(sandbox, task, attempt), timeout)
    except ConfigError:
        raise
    except _Expired:
        if sandbox is not None:
            await kill_leftovers(sandbox)
        return VerifierResult.invalid(f"the {verifier.kind} verifier ran past its timeout of {timeout:g}s")
    except KwaigymError as exc:
        return VerifierResult.invalid(f"{type(exc).__name__}: {exc.message}")
    except Exception as exc:  # noqa: BLE001 - any crash of a verifier is an invalid reward, not a crash
        log.warning("task %s: the %s verifier failed", task.id, verifier.kind, exc_info=True)
        return VerifierResult.invalid(f"the {verifier.kind} verifier failed: {type(exc).__name__}: {exc}")
    if not isinstance(result, VerifierResult):
        return VerifierResult.invalid(
            f"the {verifier.kind} verifier returned {type(result).__name__}, not a result"
        )
    return result


class _Expired(Exception):
    """The verifier ran past its timeout (a TimeoutError of its own is a crash, reported as such)."""


async def _bounded(coro, timeout: float) -> VerifierResult:
    """Run ``coro`` for at most ``timeout`` seconds; raise ``_Expired`` past it.

    Cancelling a sandbox command kills its process tree before the cancellation completes. A
    verifier that does not finish cancelling within a grace period is abandoned: a verify never
    hangs. Cancelling the caller cancels the verifier the same way.
    """
    task = asyncio.ensure_future(coro)
    expired = False
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
        expired = not done
    finally:
        if not task.done():
            task.cancel()
            stopped, _ = await asyncio.wait({task}, timeout=_CANCEL_GRACE_S)
            if not stopped:
                log.warning("a verifier did not stop within %.0fs of its cancellation", _CANCEL_GRACE_S)
                task.add_done_callback(lambda t: t.cancelled() or t.exception())  # nobody else reads it
    if expired:
        if task.done() and not task.cancelled():
            task.exception()  # read, so asyncio does not log it as never retrieved
        raise _Expired
    return task.result()
