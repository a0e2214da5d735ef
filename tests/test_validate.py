"""Instance validation: the bundled dataset validates; broken and flaky tasks are caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from kwaigym.datasets import load_dataset
from kwaigym.sandbox.images import ImageStore
from kwaigym.validate import Run, judge, validate_tasks

EXAMPLES = Path(__file__).parents[1] / "examples" / "tasks"
F2P = ["tests/test_a.py::test_fix"]
P2P = ["tests/test_a.py::test_old"]


def swe_task():
    return load_dataset(EXAMPLES).get("swe-semver")


def run(reference: bool, **statuses: str) -> Run:
    tests = {t: statuses.get(t.split("::")[1], "PASSED") for t in F2P + P2P}
    reward = float(all(s == "PASSED" for s in tests.values()))
    return Run(reference=reference, reward=reward, reward_valid=True, tests=tests)


def with_tests(task):
    params = {**task.verifier.params, "fail_to_pass": F2P, "pass_to_pass": P2P}
    return attrs.evolve(task, verifier=attrs.evolve(task.verifier, params=params))


def test_a_steady_task_is_valid():
    task = with_tests(swe_task())
    verdict = judge(task, [run(True), run(False, test_fix="FAILED")] * 3)
    assert verdict.valid and verdict.quarantined == []


def test_a_flaky_test_is_quarantined_not_trusted():
    """A P2P test that fails in one of three reference runs is dropped; the task stays valid on the rest."""
    task = with_tests(swe_task())
    runs = [run(True), run(False, test_fix="FAILED"), run(True, test_old="FAILED"),
            run(False, test_fix="FAILED"), run(True), run(False, test_fix="FAILED")]  # fmt: skip
    verdict = judge(task, runs)
    assert verdict.quarantined == P2P and verdict.valid


def test_a_flaky_fail_to_pass_test_leaves_nothing_to_score():
    task = with_tests(swe_task())
    runs = [run(True), run(False, test_fix="FAILED"), run(True, test_fix="FAILED"), run(False)]
    verdict = judge(task, runs)
    assert not verdict.valid and verdict.quarantined == F2P
    assert any("no FAIL_TO_PASS" in p for p in verdict.problems)


def test_broken_tasks_are_invalid_with_the_reason():
    task = with_tests(swe_task())
    unfixed = judge(task, [run(True, test_fix="FAILED"), run(False, test_fix="FAILED")])
    assert not unfixed.valid and "reference run: 1 test(s) do not pass" in unfixed.problems[0]
    trivial = judge(task, [run(True), run(False)])
    assert not trivial.valid and "every FAIL_TO_PASS test passes without a fix" in trivial.problems[0]
    crashed = judge(task, [Run(reference=True, reward=0.0, reward_valid=False, error="boom"), run(False)])
    assert not crashed.valid and "boom" in crashed.problems[0]


async def test_bad_arguments_are_refused(backend, service):
    with pytest.raises(ValueError, match="concurrency"):
        await validate_tasks([], concurrency=0, backend=backend, images=ImageStore(service))


@pytest.mark.podman
async def test_the_bundled_dataset_validates(backend, service):
    """Every bundled task: the reference scores 1 and the empty attempt below 1, in real sandboxes."""
    dataset = load_dataset("examples")
    assert len(dataset) >= 16
    verdicts = await validate_tasks(dataset, concurrency=4, backend=backend, images=ImageStore(service))
    invalid = {v.task_id: v.problems for v in verdicts if not v.valid}
    assert not invalid, invalid
    kinds = {v.kind for v in verdicts}
    assert kinds == {"swe", "script", "output"}


@pytest.mark.podman
def test_cli_fails_on_a_task_whose_reference_does_not_fix_it(tmp_path):
    """`kwaigym validate` prints the table and exits 1 for a task whose solution leaves the bug."""
    task_dir = tmp_path / "swe-semver"
    shutil.copytree(EXAMPLES / "swe-semver", task_dir)
    (task_dir / "solution" / "solve.sh").write_text("#!/bin/bash\ntrue\n")
    proc = subprocess.run(
        [sys.executable, "-m", "kwaigym.cli", "validate", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "INVALID" in proc.stdout and "reference run" in proc.stdout and "0/1 valid" in proc.stdout
