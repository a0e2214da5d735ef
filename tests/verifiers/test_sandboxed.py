"""Every verifier kind against real sandboxes: right and wrong attempts, and the attempts an agent
could make to fool it (pre-written rewards, edited tests, background writers), crashes and hangs."""

from __future__ import annotations

import json
import time

import pytest

from kwaigym.errors import ConfigError
from kwaigym.proxy.responders import ScriptedResponder
from kwaigym.verifiers import Attempt, verify
from tests.verifiers.conftest import task_of, write_tree

pytestmark = pytest.mark.podman

ADD_RIGHT = b"def add(a, b):\n    return a + b\n"
ADD_WRONG = b"def add(a, b):\n    return a - b\n"
TEST_ADD = "from add import add\n\ndef test_add():\n    assert add(2, 3) == 5\n"
TEST_SH = """#!/bin/bash
cd /workspace
if python3 -m pytest -q -p no:cacheprovider /tests/test_add.py; then r=1; else r=0; fi
echo $r > /logs/verifier/reward.txt
"""


@pytest.fixture
async def sandbox(backend, spec):
    async with backend.sandbox(spec(workdir="/workspace")) as sb:
        yield sb


async def agent_processes(sb) -> list[str]:
    """Processes outside the container's own session (PID 1's), other than this probe (its ps and
    the shells that run it, whose command lines all hold the probe's)."""
    probe = "ps -eo sid=,pid=,args="
    ps = await sb.exec(probe)
    rows = [line.split(None, 2) for line in ps.stdout.splitlines()]
    return [r[2] for r in rows if r[0] != "1" and probe not in r[2]]


def script_task(tmp_path, test_sh: str = TEST_SH, **kwargs):
    write_tree(tmp_path, {"tests/test.sh": test_sh, "tests/test_add.py": TEST_ADD})
    return task_of("script", root=tmp_path, **kwargs)


# -- script -------------------------------------------------------------------------------------


async def test_script_scores_right_and_wrong_attempts(sandbox, tmp_path):
    """The task's test script, run after the agent, gives 1.0 to a right attempt and 0.0 to a wrong one."""
    task = script_task(tmp_path)
    await sandbox.put_file("/workspace/add.py", ADD_RIGHT)
    right = await verify(sandbox, task, Attempt())
    await sandbox.put_file("/workspace/add.py", ADD_WRONG)
    wrong = await verify(sandbox, task, Attempt())
    assert (right.reward, right.reward_valid, right.details["source"]) == (1.0, True, "reward.txt")
    assert (wrong.reward, wrong.reward_valid) == (0.0, True), wrong
    assert "1 passed" in right.details["output_tail"] and "1 failed" in wrong.details["output_tail"]


async def test_prewritten_reward_and_agent_edited_tests_are_ignored(sandbox, tmp_path):
    """A reward.txt the agent wrote, and a /tests it planted, are gone before the real tests run."""
    task = script_task(tmp_path)
    await sandbox.put_file("/workspace/add.py", ADD_WRONG)
    await sandbox.put_file("/logs/verifier/reward.txt", b"1\n")
    await sandbox.put_file("/logs/verifier/reward.json", b'{"reward": 1}')
    await sandbox.put_file("/tests/test_add.py", b"def test_add():\n    pass\n")
    await sandbox.put_file("/tests/extra_agent_file", b"x")
    result = await verify(sandbox, task, Attempt())
    assert (result.reward, result.reward_valid, result.details["source"]) == (0.0, True, "reward.txt")
    listing = await sandbox.exec("ls /tests /logs/verifier")
    assert "extra_agent_file" not in listing.stdout and "reward.json" not in listing.stdout


async def test_a_planted_user_site_module_is_not_loaded(sandbox, tmp_path):
    """A usercustomize.py the agent put in its (writable) home would run inside the tests' Python
    and could make a failing run exit 0; verifiers run Python without the user site."""
    task = script_task(tmp_path)
    await sandbox.put_file("/workspace/add.py", ADD_WRONG)
    site = (await sandbox.exec("python3 -m site --user-site")).stdout.strip()
    await sandbox.put_file(f"{site}/usercustomize.py", b"import os\nos._exit(0)\n")
    hijacked = await sandbox.exec("python3 -c 'print(1)'")
    assert (hijacked.exit_code, hijacked.stdout) == (0, ""), "the planted module should load here"
    result = await verify(sandbox, task, Attempt())
    assert (result.reward, result.reward_valid) == (0.0, True), result


async def test_background_processes_are_killed_before_the_tests(sandbox, tmp_path):
    """Loops that keep writing reward.txt (detached, in their own session, in the agent's shell, as
    another user) are killed: the test script's exit code decides, and nothing of the agent is left."""
    loop = "while :; do mkdir -p /logs/verifier; echo 1 > /logs/verifier/reward.txt; sleep 0.05; done"
    await sandbox.exec("mkdir -p /logs/verifier && chmod 777 /logs /logs/verifier")
    await sandbox.exec(f"nohup sh -c '{loop}' >/dev/null 2>&1 &")
    await sandbox.exec(f"setsid sh -c '{loop}' >/dev/null 2>&1 < /dev/null &")
    await sandbox.exec(f"nohup sh -c '{loop}' >/dev/null 2>&1 &", user="65534")
    await sandbox.shell(f"( {loop} ) >/dev/null 2>&1 & sleep 1000 >/dev/null 2>&1 &")
    assert len(await agent_processes(sandbox)) >= 5
    task = script_task(tmp_path, test_sh="sleep 1\nexit 3\n")  # writes no reward: the exit code decides
    result = await verify(sandbox, task, Attempt())
    assert (result.reward, result.reward_valid, result.details["source"]) == (0.0, True, "exit code"), result
    assert await agent_processes(sandbox) == []
    assert (await sandbox.exec("ls /logs/verifier")).stdout == ""


async def test_a_fork_loop_is_stopped_too(backend, spec, tmp_path):
    """A process that forks without end, up to the pids limit, does not outrun sealing."""
    async with backend.sandbox(spec(workdir="/workspace")) as sb:
        await sb.exec("setsid sh -c 'while :; do sleep 30 & done' >/dev/null 2>&1 < /dev/null &")
        await sb.put_file("/workspace/add.py", ADD_RIGHT)
        result = await verify(sb, script_task(tmp_path), Attempt())
        assert (result.reward, result.reward_valid) == (1.0, True), result
        assert await agent_processes(sb) == []


async def test_a_crashing_script_falls_back_to_its_exit_code(sandbox, tmp_path):
    """A test.sh with a syntax error writes no reward: its non-zero exit code gives a valid 0.0."""
    result = await verify(sandbox, script_task(tmp_path, test_sh="if then fi (\n"), Attempt())
    assert (result.reward, result.reward_valid, result.details["source"]) == (0.0, True, "exit code")
    assert result.details["exit_code"] != 0 and "syntax error" in result.details["output_tail"]


async def test_a_garbage_reward_file_makes_the_reward_invalid(sandbox, tmp_path):
    """reward.txt holding no number: reward_valid False, the error names the file."""
    result = await verify(sandbox, script_task(tmp_path, test_sh="echo PASSED > /logs/verifier/reward.txt\n"))
    assert (result.reward, result.reward_valid) == (0.0, False)
    assert "reward.txt must be a number" in result.error and "PASSED" in result.error


async def test_a_script_past_its_timeout_is_killed_and_invalid(sandbox, tmp_path):
    """A test script past timeout_s returns promptly as invalid, and its processes are killed."""
    test_sh = "sleep 50 &\nsleep 60\necho 1 > /logs/verifier/reward.txt\n"
    started = time.monotonic()
    result = await verify(sandbox, script_task(tmp_path, test_sh=test_sh, timeout_s=2))
    assert time.monotonic() - started < 10
    assert (result.reward_valid, result.error) == (False, "the script verifier ran past its timeout of 2s")
    assert await agent_processes(sandbox) == []


async def test_missing_tests_dir_is_a_config_error(sandbox, tmp_path):
    """A task whose tests directory does not exist fails loudly, naming the task."""
    with pytest.raises(ConfigError, match=r"\[task t-verify\].*tests directory"):
        await verify(sandbox, task_of("script", root=tmp_path))


async def test_a_removed_sandbox_gives_an_invalid_reward(backend, spec, tmp_path):
    """A sandbox gone under the verifier is an infrastructure failure: invalid, with the error."""
    task = script_task(tmp_path)
    async with backend.sandbox(spec()) as sb:
        await sb.close()
        result = await verify(sb, task)
    assert not result.reward_valid and "SandboxGone" in result.error


# -- swe ----------------------------------------------------------------------------------------

CALC_BUGGY = "def mul(a, b):\n    return a * b\n\n\ndef div(a, b):\n    return a * b\n"
CALC_FIXED = "def mul(a, b):\n    return a * b\n\n\ndef div(a, b):\n    return a / b\n"
TEST_CALC = "from calc import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n"
TEST_PATCH = "\n".join(  # context lines of blank source lines are a lone space: kept explicit
    [
        "diff --git a/tests/test_calc.py b/tests/test_calc.py",
        "--- a/tests/test_calc.py",
        "+++ b/tests/test_calc.py",
        "@@ -1,5 +1,9 @@",
        "-from calc import mul",
        "+from calc import div, mul",
        " ",
        " ",
        " def test_mul():",
        "     assert mul(2, 3) == 6",
        "+",
        "+",
        "+def test_div():",
        "+    assert div(6, 3) == 2",
        "diff --git a/tests/test_extra.py b/tests/test_extra.py",
        "new file mode 100644",
        "--- /dev/null",
        "+++ b/tests/test_extra.py",
        "@@ -0,0 +1,5 @@",
        "+from calc import div",
        "+",
        "+",
        "+def test_div_float():",
        "+    assert div(1, 4) == 0.25",
        "",
    ]
)
SWE_PARAMS = {
    "test_command": "python3 -m pytest -rA -p no:cacheprovider tests",
    "parser": "pytest",
    "fail_to_pass": ["tests/test_calc.py::test_div", "tests/test_extra.py::test_div_float"],
    "pass_to_pass": ["tests/test_calc.py::test_mul"],
    "test_patch": TEST_PATCH,
}


async def git_project(sb) -> None:
    """The repository as the task ships it: buggy code, the old tests, one commit."""
    await sb.put_file("calc.py", CALC_BUGGY.encode())
    await sb.put_file("tests/test_calc.py", TEST_CALC.encode())
    commit = "git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm base"
    assert (await sb.exec(commit)).ok


async def test_swe_scores_right_and_wrong_attempts(sandbox):
    """With the test patch applied, the fix passes F2P and P2P (1.0); no fix fails F2P (0.0)."""
    await git_project(sandbox)
    task = task_of("swe", SWE_PARAMS)
    wrong = await verify(sandbox, task)
    await sandbox.put_file("calc.py", CALC_FIXED.encode())
    right = await verify(sandbox, task)
    assert (right.reward, right.reward_valid) == (1.0, True), right
    assert set(right.details["tests"].values()) == {"PASSED"}
    assert (wrong.reward, wrong.reward_valid) == (0.0, True)
    assert wrong.details["tests"] == {
        "tests/test_calc.py::test_div": "FAILED",
        "tests/test_extra.py::test_div_float": "FAILED",
        "tests/test_calc.py::test_mul": "PASSED",
    }
    assert wrong.scores == {"fail_to_pass": 0.0, "pass_to_pass": 1.0}


async def test_swe_overwrites_agent_edited_tests(sandbox):
    """An agent that rewrites the tests (and the new test file) instead of fixing the code scores 0.0;
    a git hook it planted does not run."""
    await git_project(sandbox)
    fake = "def test_mul():\n    pass\n\n\ndef test_div():\n    pass\n"
    await sandbox.put_file("tests/test_calc.py", fake.encode())
    await sandbox.put_file("tests/test_extra.py", b"def test_div_float():\n    pass\n")
    await sandbox.exec("git -c user.email=a@a -c user.name=a commit -qam 'tests pass now'")
    hook = b"#!/bin/sh\ncp /workspace/tests/test_extra.py /tmp/hook-ran\n"
    await sandbox.put_file(".git/hooks/post-checkout", hook, mode=0o755)
    base = (await sandbox.exec("git rev-parse HEAD~1")).stdout.strip()
    result = await verify(sandbox, task_of("swe", SWE_PARAMS | {"base_commit": base}))
    assert (result.reward, result.reward_valid) == (0.0, True), result
    assert result.details["tests"]["tests/test_calc.py::test_div"] == "FAILED"
    assert (await sandbox.exec("test -e /tmp/hook-ran")).exit_code == 1


async def test_swe_test_files_dir_with_unittest_outside_git(sandbox, tmp_path):
    """Test files copied from the task over the workdir replace the agent's; unittest ids work."""
    tests = "import unittest\nfrom calc import div, mul\n\n\nclass T(unittest.TestCase):\n"
    tests += "    def test_mul(self):\n        self.assertEqual(mul(2, 3), 6)\n\n"
    tests += "    def test_div(self):\n        self.assertEqual(div(6, 3), 2)\n"
    write_tree(tmp_path, {"swe_tests/test_calc.py": tests})
    params = {
        "test_command": "python3 -m unittest -v test_calc",
        "parser": "unittest",
        "fail_to_pass": ["test_div (test_calc.T)"],
        "pass_to_pass": ["test_calc.T.test_mul"],
        "test_files_dir": "swe_tests",
    }
    task = task_of("swe", params, root=tmp_path)
    await sandbox.put_file("calc.py", CALC_BUGGY.encode())
    await sandbox.put_file("test_calc.py", b"import unittest\n\n\nclass T(unittest.TestCase):\n    pass\n")
    wrong = await verify(sandbox, task)
    await sandbox.put_file("calc.py", CALC_FIXED.encode())
    right = await verify(sandbox, task)
    assert (wrong.reward, wrong.details["tests"]["test_div (test_calc.T)"]) == (0.0, "FAILED")
    assert (right.reward, right.reward_valid) == (1.0, True), right


async def test_swe_patch_that_cannot_apply_is_invalid(sandbox):
    """Outside git, a test patch the agent's edits conflict with cannot be applied: reward invalid."""
    await sandbox.put_file("calc.py", CALC_BUGGY.encode())
    await sandbox.put_file("tests/test_calc.py", b"# the agent rewrote this file entirely\n")
    result = await verify(sandbox, task_of("swe", SWE_PARAMS))
    assert not result.reward_valid and "test patch could not be applied" in result.error


# -- output -------------------------------------------------------------------------------------

CASES = [
    {"input": "1 2\n", "output": "3"},
    {"input": "10 20\n", "output": "30"},
    {"input": "-1 1\n", "output": "0"},
]
SOLUTION = "a, b = map(int, input().split())\nprint(a + b)\n"
HALF_RIGHT = "a, b = map(int, input().split())\nprint(a + b if a > 0 else a * b)\n"


async def test_output_program_cases(sandbox):
    """A program's stdout per case: all right is 1.0, two of three 2/3 (or 0 all-or-nothing)."""
    params = {"program": "python3 /workspace/solution.py", "cases": CASES}
    await sandbox.put_file("solution.py", SOLUTION.encode())
    right = await verify(sandbox, task_of("output", params))
    await sandbox.put_file("solution.py", HALF_RIGHT.encode())
    part = await verify(sandbox, task_of("output", params))
    strict = await verify(sandbox, task_of("output", params | {"all_or_nothing": True}))
    assert (right.reward, right.scores) == (1.0, {"case_0": 1.0, "case_1": 1.0, "case_2": 1.0})
    assert part.reward == pytest.approx(2 / 3) and part.details["cases"][2]["why"] == "got '-1', expected '0'"
    assert (strict.reward, strict.reward_valid) == (0.0, True)


async def test_output_program_crash_and_timeout_fail_their_case(sandbox):
    """A case that crashes or runs past case_timeout_s fails alone; the others still count."""
    program = "import sys, time\nx = sys.stdin.read().strip()\n"
    program += "if x == 'loop':\n    time.sleep(60)\nprint(int(x) * 2)\n"
    await sandbox.put_file("solution.py", program.encode())
    cases = [
        {"input": "2", "output": "4"},
        {"input": "loop", "output": "0"},
        {"input": "oops", "output": "0"},
    ]
    params = {"program": "python3 solution.py", "cases": cases, "case_timeout_s": 4}
    started = time.monotonic()
    result = await verify(sandbox, task_of("output", params))
    assert time.monotonic() - started < 20
    assert result.reward == pytest.approx(1 / 3) and result.reward_valid
    assert "SandboxTimeout" in result.details["cases"][1]["why"]
    assert result.details["cases"][2]["why"].startswith("exit code 1")


async def test_output_qa_answer_file(sandbox):
    """A QA answer read from a file the agent wrote; no file scores 0.0 (valid)."""
    task = task_of("output", {"answer": "Paris", "answer_file": "answer.txt", "mode": "whitespace"})
    missing = await verify(sandbox, task, Attempt(final_message="Paris"))
    await sandbox.put_file("answer.txt", b"  Paris \n")
    found = await verify(sandbox, task)
    assert (missing.reward, missing.reward_valid) == (0.0, True)
    assert (found.reward, found.reward_valid) == (1.0, True)


# -- judge --------------------------------------------------------------------------------------


async def test_judge_reads_files_from_the_sandbox(sandbox):
    """The judge gets the files the agent wrote (cut at max_file_chars) and scores them."""
    await sandbox.put_file("index.html", b"<h1>Acme</h1>" + b"x" * 5000)
    rubric = [{"name": "design", "weight": 1, "anchors": {"0": "none", "5": "great"}}]

    def grade(request, ctx):
        text = request.messages[1].text
        assert ctx.episode_id == sandbox.episode_id
        good = (
            "<h1>Acme</h1>" in text and "more characters cut" in text and "(this file does not exist)" in text
        )
        return json.dumps({"scores": {"design": 4 if good else 0}, "rationale": "has a heading"})

    params = {"rubric": rubric, "files": ["index.html", "style.css"], "max_file_chars": 1000}
    result = await verify(sandbox, task_of("judge", params), Attempt(final_message="Built it."),
                          judge=ScriptedResponder(grade))  # fmt: skip
    assert (result.reward, result.reward_valid) == (0.8, True), result
