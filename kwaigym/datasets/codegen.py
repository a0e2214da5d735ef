"""Code-generation problems and short-answer questions (JSON-lines files), scored by the
``output`` verifier.

Code generation, LiveCodeBench-style: ``{id | question_id, prompt | question_content,
tests | cases | public_test_cases: [{input, output}], ...}``; ``private_test_cases`` are added
when they are a JSON list (or its text). The agent writes ``/workspace/solution.py``; the verifier
runs it once per case with the input on stdin and compares its stdout (``mode``, default
``whitespace``). Short-answer questions: ``{id, question, answer, mode?, rtol?, atol?}``; the
agent's final message is compared with the answer (``mode`` default ``whitespace``, ``numeric``
when the answer is a JSON number).

Both run in the kwaigym base image (an Environment with neither image nor build context).
Limits: only stdin/stdout problems; LeetCode-style ``functional`` cases (a method called with
arguments) are refused, or skipped with ``skip_functional=True``. LiveCodeBench's compressed
private cases (base64 of a pickle) are refused: a pickle can run code when read; decode them into
a JSON list first. Record fields not named here are ignored; reference programs are not kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import attrs

from kwaigym.datasets.base import TaskList, check_verifier, read_jsonl
from kwaigym.errors import ConfigError
from kwaigym.task import Environment, Solution, Task, VerifierSpec
from kwaigym.verifiers.output import MODES as OUTPUT_MODES

SOLUTION_PATH = "/workspace/solution.py"
PROGRAM = f"python3 {SOLUTION_PATH}"

CODEGEN_INSTRUCTION = """\
{prompt}

---
Write a Python 3 program that reads the input from standard input and prints the answer to \
standard output. Save it as {solution}: it is run as `{program}` once per test case.
"""
QA_INSTRUCTION = "{question}\n\nGive only the final answer, alone, as your last message.\n"

_ID_FIELDS = ("id", "question_id", "task_id")
_PROMPT_FIELDS = ("prompt", "question_content")
_CASE_FIELDS = ("tests", "cases", "public_test_cases")
_METADATA_FIELDS = (
    "title",
    "question_title",
    "difficulty",
    "platform",
    "contest_id",
    "contest_date",
    "source",
)


@attrs.frozen
class _Record:
    """One record; every error names the file, the line and the field."""

    path: Path
    line: int
    data: Mapping[str, Any]

    @property
    def id(self) -> str | None:
        value = self.first(_ID_FIELDS)
        return None if value is None else str(value[1])

    def fail(self, field: str, problem: str) -> NoReturn:
        raise ConfigError(f"{self.path}:{self.line}: {field}: {problem}"[:500], task_id=self.id)

    def first(self, fields: tuple[str, ...]) -> tuple[str, Any] | None:
        for field in fields:
            if self.data.get(field) not in (None, ""):
                return field, self.data[field]
        return None

    def require(self, fields: tuple[str, ...], expected: str) -> tuple[str, Any]:
        found = self.first(fields)
        if found is None:
            self.fail(" | ".join(fields), f"missing; expected {expected}")
        return found

    def task_id(self) -> str:
        field, value = self.require(_ID_FIELDS, "the problem's id")
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.fail(field, f"expected a string or an integer, got {value!r}")
        return str(value)

    def text(self, fields: tuple[str, ...], expected: str) -> str:
        field, value = self.require(fields, expected)
        if not isinstance(value, str) or not value.strip():
            self.fail(field, f"expected {expected} (a non-empty string), got {value!r}")
        return value

    def cases(self, field: str, value: Any, skip_functional: bool) -> list[dict[str, str]] | None:
        """The stdin/stdout cases of one field; None if they are functional and skipped."""
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                self.fail(field, "text that is not JSON (compressed cases? decode them into a JSON list)")
        if not isinstance(value, list):
            self.fail(field, f"expected a list of {{input, output}} objects, got {type(value).__name__}")
        cases = []
        for i, case in enumerate(value):
            if not isinstance(case, Mapping):
                self.fail(f"{field}[{i}]", f"expected an {{input, output}} object, got {case!r}")
            if case.get("testtype", "stdin") != "stdin":
                if skip_functional:
                    return None
                self.fail(
                    f"{field}[{i}].testtype", f"only stdin cases are supported, got {case['testtype']!r}"
                )
            for key in ("input", "output"):
                if not isinstance(case.get(key), str):
                    self.fail(f"{field}[{i}].{key}", f"expected a string, got {case.get(key)!r}")
            cases.append({"input": case["input"], "output": case["output"]})
        return cases

    def mode(self, default: str) -> str:
        mode = self.data.get("mode", default)
        if mode not in OUTPUT_MODES:
            self.fail("mode", f"expected one of {', '.join(OUTPUT_MODES)}, got {mode!r}")
        return mode

    def metadata(self, source: str) -> dict[str, Any]:
        found = {k: self.data[k] for k in _METADATA_FIELDS if self.data.get(k) is not None}
        return {"source": source, **found}


def load_codegen(
    path: str | os.PathLike,
    *,
    name: str | None = None,
    mode: str = "whitespace",
    all_or_nothing: bool = False,
    skip_functional: bool = False,
) -> TaskList:
    """Code-generation problems from a JSON-lines file (see the module docstring).

    Args:
        mode: how outputs compare unless a record says: exact, whitespace or numeric.
        all_or_nothing: reward 1 only when every case passes (else the fraction that passed).
        skip_functional: leave out problems with functional cases instead of failing.
    """
    path = Path(path)
    tasks = []
    for number, data in read_jsonl(path):
        task = _codegen_task(_Record(path, number, data), mode, all_or_nothing, skip_functional)
        if task is not None:
            tasks.append(task)
    return TaskList(name or path.stem, tasks)


def _codegen_task(record: _Record, mode: str, all_or_nothing: bool, skip_functional: bool) -> Task | None:
    task_id = record.task_id()
    prompt = record.text(_PROMPT_FIELDS, "the problem statement")
    field, value = record.require(_CASE_FIELDS, "a list of {input, output} test cases")
    cases = record.cases(field, value, skip_functional)
    private = record.data.get("private_test_cases")
    if cases is not None and private not in (None, "", []):
        more = record.cases("private_test_cases", private, skip_functional)
        cases = None if more is None else cases + more
    if cases is None:
        return None
    if not cases:
        record.fail(field, "empty; a problem needs at least one test case")
    params = {"program": PROGRAM, "cases": cases, "mode": record.mode(mode), "all_or_nothing": all_or_nothing}
    verifier = VerifierSpec(kind="output", params=params)
    check_verifier(verifier, f"{record.path}:{record.line}", task_id)
    return Task(
        id=task_id,
        instruction=CODEGEN_INSTRUCTION.format(
            prompt=prompt.strip(), solution=SOLUTION_PATH, program=PROGRAM
        ),
        environment=Environment(),
        verifier=verifier,
        metadata=record.metadata("codegen"),
    )


def load_qa(path: str | os.PathLike, *, name: str | None = None) -> TaskList:
    """Short-answer questions from a JSON-lines file: ``{id, question, answer, mode?, rtol?, atol?}``."""
    path = Path(path)
    return TaskList(name or path.stem, [_qa_task(_Record(path, n, data)) for n, data in read_jsonl(path)])


def _qa_task(record: _Record) -> Task:
    task_id = record.task_id()
    question = record.text(("question",), "the question")
    _, answer = record.require(("answer",), "the expected answer")
    numeric = isinstance(answer, int | float) and not isinstance(answer, bool)
    if not (numeric or isinstance(answer, str)):
        record.fail("answer", f"expected a string or a number, got {answer!r}")
    params: dict[str, Any] = {
        "answer": str(answer),
        "mode": record.mode("numeric" if numeric else "whitespace"),
    }
    params.update({k: record.data[k] for k in ("rtol", "atol") if k in record.data})
    verifier = VerifierSpec(kind="output", params=params)
    check_verifier(verifier, f"{record.path}:{record.line}", task_id)
    return Task(
        id=task_id,
        instruction=QA_INSTRUCTION.format(question=question.strip()),
        environment=Environment(),
        verifier=verifier,
        solution=Solution(answer=str(answer)),
        metadata=record.metadata("qa"),
    )
