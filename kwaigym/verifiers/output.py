"""The ``output`` verifier: compare what the agent produced with what is expected.

Two uses. QA: ``answer`` is compared with the agent's final message, or with the file
``answer_file`` it wrote in the sandbox (a missing file scores 0). Code generation: ``program``
(e.g. ``python3 /workspace/solution.py``) runs once per case in the sandbox, with the case's
``input`` on stdin and ``case_timeout_s`` to finish; a case passes when it exits 0 and its stdout
matches the case's ``output``. The reward is the fraction of cases passed (or 0/1 with
``all_or_nothing``); ``scores`` has one 0/1 entry per case, ``details["cases"]`` says why.

Comparison modes: ``exact`` (equal once line endings are normalised and surrounding whitespace
stripped), ``whitespace`` (every run of whitespace counts as one space), ``numeric`` (the last
number in each text, equal within ``rtol``/``atol``; thousands separators such as ``1,234`` read
as one number).
"""

from __future__ import annotations

import json
import math
import re
import shlex
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from kwaigym.errors import ConfigError, LimitExceeded
from kwaigym.sandbox.base import Sandbox
from kwaigym.task import Task, VerifierSpec
from kwaigym.verifiers.base import Attempt, VerifierResult, need_sandbox, parse_params, read_text, tail

CASES_DIR = "/tmp/kwaigym-cases"


def _write_inputs(directory: str, cases) -> None:
    for i, case in enumerate(cases):
        Path(directory, f"{i}.in").write_text(case["input"])


MODES = ("exact", "whitespace", "numeric")
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+\.?\d*|\.\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")


def last_number(text: str) -> float | None:
    """The last number written in ``text`` (``1,234.5`` is one number), or None."""
    found = _NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def compare(
    actual: str, expected: str, *, mode: str = "exact", rtol: float = 1e-6, atol: float = 1e-9
) -> str | None:
    """None when ``actual`` matches ``expected`` under ``mode``, else why not."""
    if mode == "numeric":
        want, got = last_number(expected), last_number(actual)
        if want is None:
            raise ConfigError(f"numeric mode: the expected text {expected[:80]!r} holds no number")
        if got is None:
            return "no number in the output"
        return (
            None if math.isclose(got, want, rel_tol=rtol, abs_tol=atol) else f"got {got:g}, expected {want:g}"
        )
    norm = _exact if mode == "exact" else _spaces
    if norm(actual) == norm(expected):
        return None
    return f"got {tail(norm(actual), 200)!r}, expected {tail(norm(expected), 200)!r}"


def _exact(text: str) -> str:
    return text.replace("\r\n", "\n").strip()


def _spaces(text: str) -> str:
    return " ".join(text.split())


def _text(value):
    """TOML and JSON give numbers for numeric answers; compare their text."""
    return value if isinstance(value, str) or value is None else json.dumps(value)


def _cases(value) -> tuple[Mapping[str, str], ...]:
    cases = tuple(value)
    for i, case in enumerate(cases):
        if not isinstance(case, Mapping) or "output" not in case or set(case) - {"input", "output"}:
            raise ConfigError(f"cases[{i}] must be {{'input': str, 'output': str}}, got {case!r}")
    return tuple({"input": _text(c.get("input", "")), "output": _text(c["output"])} for c in cases)


@attrs.frozen(kw_only=True)
class OutputParams:
    """Params of the ``output`` verifier (QA: ``answer``; code generation: ``program`` + ``cases``)."""

    mode: str = attrs.field(default="exact", validator=attrs.validators.in_(MODES))
    """How to compare: ``exact``, ``whitespace`` or ``numeric``."""
    rtol: float = attrs.field(default=1e-6, converter=float)
    """Relative tolerance of ``numeric``."""
    atol: float = attrs.field(default=1e-9, converter=float)
    """Absolute tolerance of ``numeric``."""
    answer: str | None = attrs.field(default=None, converter=_text)
    """QA: the expected answer."""
    answer_file: str | None = None
    """QA: read the agent's answer from this sandbox file instead of its final message."""
    program: str | None = None
    """Code generation: the command run per case (in the workdir, input on stdin)."""
    cases: tuple[Mapping[str, str], ...] = attrs.field(default=(), converter=_cases)
    """Code generation: ``[{"input": str, "output": str}, ...]``."""
    case_timeout_s: float = attrs.field(default=10.0, converter=float)
    """Code generation: seconds one case may run."""
    all_or_nothing: bool = False
    """Code generation: reward 1.0 only if every case passes."""

    def __attrs_post_init__(self):
        if (self.answer is None) == (self.program is None):
            raise ConfigError("give either `answer` (QA) or `program` with `cases` (code generation)")
        if self.program is not None and not self.cases:
            raise ConfigError("`program` needs at least one case in `cases`")
        if self.answer_file is not None and self.answer is None:
            raise ConfigError("`answer_file` needs the expected `answer`")
        if self.case_timeout_s <= 0 or self.rtol < 0 or self.atol < 0:
            raise ConfigError("case_timeout_s must be positive and rtol/atol non-negative")
        if self.mode == "numeric":
            for expected in [self.answer] if self.answer is not None else [c["output"] for c in self.cases]:
                if last_number(expected) is None:
                    raise ConfigError(f"numeric mode: the expected {expected[:80]!r} holds no number")


class OutputVerifier:
    """Compares the agent's answer or its program's outputs with the expected ones."""

    kind = "output"

    def __init__(self, spec: VerifierSpec):
        self.params: OutputParams = parse_params(OutputParams, spec)

    def _compare(self, actual: str, expected: str) -> str | None:
        p = self.params
        return compare(actual, expected, mode=p.mode, rtol=p.rtol, atol=p.atol)

    async def verify(self, sandbox: Sandbox | None, task: Task, attempt: Attempt) -> VerifierResult:
        if self.params.program is not None:
            return await self._run_cases(need_sandbox(sandbox, self.kind), task)
        return await self._answer(sandbox, attempt)

    async def _answer(self, sandbox: Sandbox | None, attempt: Attempt) -> VerifierResult:
        p = self.params
        actual = attempt.final_message
        if p.answer_file is not None:
            actual = await read_text(need_sandbox(sandbox, self.kind), p.answer_file)
            if actual is None:
                return VerifierResult(reward=0.0, reward_valid=True, details={"why": f"no {p.answer_file}"})
        why = self._compare(actual, p.answer)
        details = {"answer": tail(actual, 1000)} | ({"why": why} if why else {})
        return VerifierResult(reward=0.0 if why else 1.0, reward_valid=True, details=details)

    async def _run_cases(self, sandbox: Sandbox, task: Task) -> VerifierResult:
        """Every case through the sandbox's shell session, its input from a file copied in first: a
        podman exec costs about 0.2 s of CPU, a command in the session a millisecond."""
        p = self.params
        cases: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="kwaigym-cases-") as inputs:
            _write_inputs(inputs, p.cases)  # small files: no thread needed
            await sandbox.shell(f"rm -rf {CASES_DIR} && mkdir -p {CASES_DIR}")
            await sandbox.put_dir(inputs, CASES_DIR)
        for i, case in enumerate(p.cases):
            command = f"cd {shlex.quote(task.environment.workdir)} && {p.program} < {CASES_DIR}/{i}.in"
            try:
                run = await sandbox.shell(command, timeout=p.case_timeout_s)
            except LimitExceeded as exc:  # timeout, memory, processes: the program's failure
                cases.append({"passed": False, "why": f"{type(exc).__name__}: {exc.message}"})
                continue
            why = f"exit code {run.exit_code}: {tail(run.stderr, 300)}" if not run.ok else None
            why = why or self._compare(run.stdout, case["output"])
            cases.append({"passed": why is None} | ({"why": why} if why else {}))
        passed = [c["passed"] for c in cases]
        reward = float(all(passed)) if p.all_or_nothing else sum(passed) / len(passed)
        scores = {f"case_{i}": float(ok) for i, ok in enumerate(passed)}
        return VerifierResult(
            reward=reward, reward_valid=True, scores=scores, details={"cases": cases, "passed": sum(passed)}
        )
