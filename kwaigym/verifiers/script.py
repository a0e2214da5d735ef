"""The ``script`` verifier: a task's own test script decides (the Harbor / Terminal-Bench convention).

After sealing, the task's ``tests/`` directory is copied to ``/tests`` and ``bash /tests/test.sh``
runs in the workdir. The script reports its reward by writing ``/logs/verifier/reward.txt`` (one
float) or ``/logs/verifier/reward.json`` (an object of named float scores; the reward is its
``"reward"`` entry, else their mean). With neither file the exit code decides: 0 gives 1.0,
anything else 0.0. A reward file that is not a finite number (or an object of them) makes the
result invalid: the script is broken, and its reward cannot be trusted either way.
"""

from __future__ import annotations

import json
import math

import attrs

from kwaigym.errors import ConfigError
from kwaigym.sandbox.base import Sandbox
from kwaigym.task import Task, VerifierSpec
from kwaigym.verifiers.base import (
    LOGS_DIR,
    TESTS_DIR,
    VERIFIER_ENV,
    Attempt,
    VerifierResult,
    need_sandbox,
    parse_params,
    read_text,
    tail,
)


@attrs.frozen(kw_only=True)
class ScriptParams:
    """Params of the ``script`` verifier."""

    tests_dir: str = attrs.field(default="tests", validator=attrs.validators.instance_of(str))
    """Directory of the task (relative to its root) copied to ``/tests``."""
    command: str = attrs.field(
        default=f"bash {TESTS_DIR}/test.sh", validator=attrs.validators.instance_of(str)
    )
    """Shell command that runs the tests, in the workdir."""


class RewardFileError(ValueError):
    """A reward file the tests wrote cannot be read as a reward."""


class ScriptVerifier:
    """Runs the task's test script and reads the reward it wrote (see the module docstring)."""

    kind = "script"

    def __init__(self, spec: VerifierSpec):
        self.params: ScriptParams = parse_params(ScriptParams, spec)

    async def verify(self, sandbox: Sandbox | None, task: Task, attempt: Attempt) -> VerifierResult:
        sandbox = need_sandbox(sandbox, self.kind)
        tests = task.path(self.params.tests_dir)
        if not tests.is_dir():
            raise ConfigError(f"the script verifier's tests directory {tests} does not exist")
        await sandbox.put_dir(str(tests), TESTS_DIR)
        run = await sandbox.exec(self.params.command, cwd=task.environment.workdir, env=VERIFIER_ENV)
        details = {"exit_code": run.exit_code, "output_tail": tail(run.output)}
        text = await read_text(sandbox, f"{LOGS_DIR}/reward.txt")
        data = await read_text(sandbox, f"{LOGS_DIR}/reward.json")
        try:
            reward, scores, source = reward_from(text, data, run.exit_code)
        except RewardFileError as exc:
            return VerifierResult.invalid(str(exc), **details)
        return VerifierResult(
            reward=reward, reward_valid=True, scores=scores, details=details | {"source": source}
        )


def reward_from(text: str | None, data: str | None, exit_code: int) -> tuple[float, dict[str, float], str]:
    """(reward, named scores, where the reward came from) from the reward files' contents (None:
    absent) and the script's exit code. ``reward.txt`` wins over ``reward.json``'s reward."""
    scores = _scores(data) if data is not None else {}
    if text is not None:
        return _number(text.strip(), "reward.txt"), scores, "reward.txt"
    if scores:
        reward = scores.get("reward", sum(scores.values()) / len(scores))
        return reward, scores, "reward.json"
    if data is not None:
        raise RewardFileError("reward.json holds no scores")
    return (1.0 if exit_code == 0 else 0.0), {}, "exit code"


def _scores(data: str) -> dict[str, float]:
    try:
        parsed = json.loads(data)
    except ValueError as exc:
        raise RewardFileError(f"reward.json is not JSON ({exc}): {data[:200]!r}") from None
    if not isinstance(parsed, dict):
        raise RewardFileError(f"reward.json must be an object of named scores, got: {data[:200]!r}")
    return {str(k): _number(v, f"reward.json[{k!r}]") for k, v in parsed.items()}


def _number(value, where: str) -> float:
    if isinstance(value, bool):
        raise RewardFileError(f"{where} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RewardFileError(f"{where} must be a number, got {str(value)[:200]!r}") from None
    if not math.isfinite(number):
        raise RewardFileError(f"{where} must be a finite number, got {value!r}")
    return number
