"""A tiny task for the security tests: write 42 to /workspace/answer.txt, scored by a hidden
script (copied to /tests only after the agent ends); it runs on the base image, so nothing builds."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwaigym.task import Environment, Solution, Task, VerifierSpec

TEST_SH = """#!/bin/bash
mkdir -p /logs/verifier
if [ "$(cat /workspace/answer.txt 2>/dev/null)" = 42 ]; then r=1; else r=0; fi
echo "$r" > /logs/verifier/reward.txt
"""


def answer_task(root: Path, task_id: str, **environment) -> Task:
    """The answer task with its files under ``root``; ``environment`` overrides its limits."""
    (root / "tests").mkdir(parents=True, exist_ok=True)
    (root / "solution").mkdir(exist_ok=True)
    (root / "tests" / "test.sh").write_text(TEST_SH)
    (root / "solution" / "solve.sh").write_text("echo 42 > /workspace/answer.txt\n")
    return Task(
        id=task_id,
        instruction="Write the number 42 to /workspace/answer.txt.",
        environment=Environment(**environment),
        verifier=VerifierSpec(kind="script", timeout_s=60),
        solution=Solution(script="solution/solve.sh"),
        root=str(root),
    )


@pytest.fixture(scope="module")
def task_factory(tmp_path_factory):
    """``make(task_id, **environment)``: a fresh answer task in its own directory."""

    def make(task_id: str, **environment) -> Task:
        return answer_task(tmp_path_factory.mktemp("task"), task_id, **environment)

    return make
