"""What a verifier is: the attempt it scores, the result it returns, its protocol, and sealing.

A verifier turns the sandbox an agent left behind (plus the agent's final message) into a
reward. Verifiers run only after the agent has ended, and they must not trust anything the
agent could have touched: :func:`seal` first kills every process the agent left running and
clears the directories the verifier writes to (``/tests``, ``/logs/verifier``), so a reward
file written in advance, or a background loop that keeps rewriting one, counts for nothing.

Limits: sealing is about processes and the verifier's own directories. It does not restore
the image's files: an agent with root in its sandbox can still replace ``python3`` or plant a
``conftest.py``, and tests that trust the environment can be fooled (as in Harbor). Verifiers
should check behaviour, and copy their own test files over the agent's (``/tests``, the
``swe`` verifier's test patch and files).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs
import tenacity

from kwaigym.errors import ConfigError, InfraError, SandboxPidsExceeded
from kwaigym.sandbox.base import Sandbox
from kwaigym.task import Task, VerifierSpec

log = logging.getLogger(__name__)

TESTS_DIR = "/tests"
"""Where a task's tests are copied, after the agent has ended."""
LOGS_DIR = "/logs/verifier"
"""Where tests write ``reward.txt`` / ``reward.json``; emptied before the tests run."""
SEAL_TIMEOUT_S = 60.0
VERIFIER_ENV = {"PYTHONNOUSERSITE": "1"}
"""Environment of the commands a verifier runs: no Python user site, which lives in the agent's
writable home (a planted ``usercustomize.py`` would run inside the tests)."""
"""Bound of the sealing step; it does not count against the task's verifier timeout."""


@attrs.frozen(kw_only=True)
class Attempt:
    """What the agent left besides its sandbox."""

    final_message: str = ""
    """The agent's last answer (QA tasks are scored on it; the judge reads it)."""
    exit_code: int | None = None
    """The scaffold's exit status, when it had one."""


def _finite(instance, attribute, value):
    if not math.isfinite(value):
        raise ValueError(f"{attribute.name} must be a finite number, got {value!r}")


@attrs.frozen(kw_only=True)
class VerifierResult:
    """The score of one attempt.

    When ``reward_valid`` is False the verifier could not score the attempt (it crashed, timed
    out, produced garbage, or the sandbox failed): ``reward`` is then 0.0 and must not be
    trusted or trained on, and ``error`` says why.
    """

    reward: float = attrs.field(converter=float, validator=_finite)
    """The reward; 0.0 when not valid."""
    reward_valid: bool
    """False when the verifier could not score the attempt; ``error`` says why."""
    scores: Mapping[str, float] = attrs.field(factory=dict)
    """Named scores: a ``reward.json``'s entries, judge dimensions (0-5), per-case results (0/1)."""
    details: Mapping[str, Any] = attrs.field(factory=dict)
    """What the verifier saw: test statuses (``details["tests"]``), output tails, exit codes."""
    error: str | None = None
    """Why ``reward_valid`` is False."""
    duration_s: float = 0.0
    """Wall time of the whole verification, sealing included."""

    def __attrs_post_init__(self):
        if not self.reward_valid and (self.reward != 0.0 or not self.error):
            raise ValueError("an invalid result has reward 0.0 and says why in `error`")

    @classmethod
    def invalid(cls, error: str, **details: Any) -> VerifierResult:
        """A result that could not be scored (reward 0.0, not to be trusted)."""
        return cls(reward=0.0, reward_valid=False, error=error, details=details)


@runtime_checkable
class Verifier(Protocol):
    """Scores an attempt. Built by ``get_verifier(spec, **deps)`` as ``cls(spec, **deps)``, where
    ``deps`` are what the kind needs besides its params (the ``judge`` responder, say); the class
    receives only the dependencies its ``__init__`` names. ``verify`` runs after :func:`seal`,
    inside the task's verifier timeout; it may raise: ``kwaigym.verifiers.verify`` turns any error
    but a ``ConfigError`` into an invalid result."""

    kind: str

    async def verify(self, sandbox: Sandbox | None, task: Task, attempt: Attempt) -> VerifierResult: ...


class VerifierError(InfraError):
    """A verifier could not score an attempt (sealing failed, its output was unreadable)."""


# -- params -------------------------------------------------------------------------------------


def parse_params(cls: type, spec: VerifierSpec):
    """Build the kind's typed params (a frozen attrs class) from ``spec.params``; an unknown or
    ill-typed param raises ConfigError naming it and the kind."""
    where = f"verifier {spec.kind!r}"
    known = [f.name for f in attrs.fields(cls)]
    unknown = sorted(set(spec.params) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown param(s) {', '.join(unknown)}; known: {', '.join(known)}")
    try:
        return cls(**spec.params)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None
    except (TypeError, ValueError) as exc:  # attrs validators put the readable message first
        raise ConfigError(f"{where}: {exc.args[0] if exc.args else exc}") from None


def need_sandbox(sandbox: Sandbox | None, kind: str) -> Sandbox:
    """``sandbox``, or a ConfigError: the kind, as configured, has to look into one."""
    if sandbox is None:
        raise ConfigError(f"verifier {kind!r} as configured runs in the sandbox; got sandbox=None")
    return sandbox


# -- sealing ------------------------------------------------------------------------------------

# Kills every process outside the session of PID 1. PID 1 is the sandbox's keeper shell and its
# session holds only the keeper's own sleeps; every exec'd process, and
# so everything the agent started, is in another session, and no process can join a session it
# was not born in. Shell builtins only (no fork: the sealer is the one process it spares, and it
# works at the pids limit); each round stops the processes first so a fork loop cannot outrun it.
# It also spares its parent: the sh that runs every kwaigym exec and reports its exit status.
_KILL_SCRIPT = r"""
me=$$; parent=$PPID; round=0
while [ $round -lt 100 ]; do
  round=$((round + 1)); found=
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [ "$p" = "$me" ] || [ "$p" = "$parent" ] && continue
    { read -r s < "$d/stat"; } 2>/dev/null || continue
    s=${s##*") "}
    set -- $s
    [ "$1" = Z ] && continue
    [ "$4" = 1 ] && continue
    kill -STOP "$p" 2>/dev/null && found="$found $p"
  done
  [ -z "$found" ] && break
  kill -KILL $found 2>/dev/null
done
if [ -n "$found" ]; then echo "processes survived: $found" >&2; exit 3; fi
"""
_RESET_SCRIPT = f"""
if [ -L {TESTS_DIR} ]; then rm -f {TESTS_DIR}; fi
mkdir -p {TESTS_DIR} && find {TESTS_DIR} -mindepth 1 -delete && rm -rf {LOGS_DIR} || exit 4
if [ -L /logs ]; then rm -f /logs; fi
mkdir -p {LOGS_DIR} && chmod 777 {LOGS_DIR} || exit 5
echo "sealed after $round round(s)"
"""


class _NotSealed(VerifierError):
    """The sealer could not run or did not finish its job (worth another try)."""


# At the pids limit (a fork loop) the runtime may find no slot to start the sealer (exit 125), or
# the sealer's shell no slot to fork (a failed fork: SandboxPidsExceeded); the loop takes every slot
# that frees up, so the sealer must win a race. Tries are bounded by time, not count: on an idle
# machine it gets in within a few, but on 2 busy cores a test of it needed about 50 (some 30 s),
# and 10 tries gave up after 6 s.
_SEAL_RETRY = tenacity.AsyncRetrying(
    retry=tenacity.retry_if_exception_type((_NotSealed, SandboxPidsExceeded)),
    wait=tenacity.wait_random(0.05, 0.5),
    stop=tenacity.stop_after_delay(60),
    before_sleep=lambda s: log.info("sealing failed (%s), retry %d", s.outcome.exception(), s.attempt_number),
    reraise=True,
)


async def seal(sandbox: Sandbox) -> str:
    """Kill every process the agent left in ``sandbox`` and empty the verifier's directories.

    Returns the sealer's note; raises ``VerifierError`` when processes survive or the directories
    cannot be reset after a few tries. Runs as root, so it also reaches processes of other users.
    """
    return await _sealer(sandbox, _KILL_SCRIPT + _RESET_SCRIPT)


async def kill_leftovers(sandbox: Sandbox) -> None:
    """Kill every process but the container's own (what a verifier past its timeout left running);
    failures are logged, not raised: the reward is already invalid."""
    try:
        await _sealer(sandbox, _KILL_SCRIPT)
    except Exception as exc:  # noqa: BLE001 - best effort after a failure
        log.warning("could not kill a timed-out verifier's processes: %s", exc)


async def _sealer(sandbox: Sandbox, script: str) -> str:
    async for attempt in _SEAL_RETRY.copy():
        with attempt:
            result = await sandbox.exec(script, user="0", cwd="/", timeout=SEAL_TIMEOUT_S)
            if not result.ok:
                raise _NotSealed(
                    f"could not seal the sandbox (exit {result.exit_code}): {result.output[-500:]}"
                )
            return result.stdout.strip()
    raise AssertionError("unreachable: the retry policy re-raises")


# -- small helpers ------------------------------------------------------------------------------


async def read_text(sandbox: Sandbox, path: str) -> str | None:
    """A sandbox file's text (undecodable bytes replaced), or None when it does not exist."""
    try:
        data = await sandbox.get_file(path)
    except FileNotFoundError:
        return None
    return data.decode(errors="replace")


def tail(text: str, limit: int = 4000) -> str:
    """The end of a long text (what a reader of a failed run wants first)."""
    return text if len(text) <= limit else f"[... {len(text) - limit} chars cut ...]\n{text[-limit:]}"
