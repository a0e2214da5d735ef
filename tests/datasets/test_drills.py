"""`drills`: 16 fixed generated tasks in two domains; each solves with its inline command and fails
untouched, and the oracle's tool call shows that command."""

from __future__ import annotations

import json

import pytest

from kwaigym import policies
from kwaigym.datasets import load_dataset
from kwaigym.episode import OK, run_episode
from kwaigym.errors import ConfigError
from kwaigym.proxy import InterceptionProxy
from kwaigym.sandbox.images import ImageStore
from kwaigym.task import Solution, Task
from kwaigym.task_sandbox import solution_command
from kwaigym.validate import validate_tasks
from scaffolds import registry
from tests.conftest import episode


def test_sixteen_fixed_tasks_in_two_domains():
    dataset = load_dataset("drills")
    tasks = list(dataset)
    assert len(tasks) == 16 and len({t.id for t in tasks}) == 16 and dataset.name == "drills"
    assert [t.id for t in tasks] == [t.id for t in load_dataset("drills")]  # the same order every time
    for domain in ("files", "code"):
        chosen = [t for t in tasks if t.id.startswith(f"{domain}-")]
        assert len(chosen) == 8 and all(t.metadata["domain"] == domain for t in chosen)
    for task in tasks:  # base image, no files: nothing to build, nothing on disk
        env = task.environment
        assert (env.image, env.build_context, task.root, task.verifier.kind) == (None, None, None, "output")
        assert task.solution.command and solution_command(task) == task.solution.command


def test_the_files_and_code_drills_read_as_specified():
    dataset = load_dataset("drills")
    notes = dataset.get("files-notes")
    assert notes.instruction == "Write the word apple to the file notes.txt in the workspace."
    assert notes.solution.command == "echo apple > notes.txt"
    expected = {"answer": "apple", "answer_file": "/workspace/notes.txt", "mode": "exact"}
    assert notes.verifier.params == expected
    mul = dataset.get("code-mul-times")
    assert mul.instruction == "calc.py is wrong: mul(a, b) must return a * b. Fix it."
    assert "return a + b" in mul.environment.setup[0]
    total = dataset.get("code-total-plus")
    assert total.solution.command == r"sed -i 's/a \* b/a + b/' calc.py"
    assert total.verifier.params["cases"][0] == {"input": "7 3", "output": "10"}
    assert total.verifier.params["all_or_nothing"] is True


def test_tasks_round_trip_with_their_command():
    for task in load_dataset("drills"):
        assert Task.from_dict(task.to_dict()) == task
        assert Task.from_json(task.to_json()) == task
        assert Task.from_toml(task.to_toml()) == task
        assert task.to_dict()["solution"] == {"command": task.solution.command}


def test_a_solution_needs_something_to_apply():
    with pytest.raises(ConfigError, match="needs a script, command, patch or answer"):
        Solution()
    data = load_dataset("drills").get("files-notes").to_dict() | {"solution": {}}
    with pytest.raises(ConfigError, match="task.solution: a solution needs"):
        Task.from_dict(data)
    assert Solution(answer="").answer == ""  # an empty answer is still an answer


def test_a_script_wins_over_a_command_which_wins_over_a_patch():
    task = load_dataset("drills").get("files-notes")
    both = Task.from_dict(task.to_dict() | {"solution": {"command": "true", "patch": "diff"}})
    assert solution_command(both) == "true"
    scripted = Task.from_dict(task.to_dict() | {"solution": {"command": "true", "script": "solve.sh"}})
    assert solution_command(scripted) == "bash /solution/solve.sh"


@pytest.mark.podman
async def test_every_drill_validates(backend, service):
    """Each reference command scores 1 and the untouched task 0, in real sandboxes."""
    tasks = list(load_dataset("drills"))
    verdicts = await validate_tasks(tasks, concurrency=4, backend=backend, images=ImageStore(service))
    assert [v.task_id for v in verdicts] == [t.id for t in tasks]
    for verdict in verdicts:
        assert verdict.valid, (verdict.task_id, verdict.problems)
        assert [(r.reference, r.reward) for r in verdict.runs] == [(True, 1.0), (False, 0.0)], verdict


@pytest.mark.podman
async def test_the_oracle_runs_the_real_command(backend, service, tmp_path):
    """The oracle's tool call is the drill's own command, not a staged /solution script."""
    task = load_dataset("drills").get("files-notes")
    mini = registry.get("mini")
    oracle = policies.oracle(task, mini)
    async with InterceptionProxy(confdir=tmp_path / "mitm") as proxy:
        result = await run_episode(
            task, mini, oracle.responder, episode_id=episode("drill"), before_agent=oracle.before_agent,
            proxy=proxy, backend=backend, images=ImageStore(service),
        )  # fmt: skip
    assert (result.status, result.reward) == (OK, 1.0), result.error
    arguments = [json.loads(c.arguments) for call in result.calls for c in call.completion.tool_calls]
    assert arguments[0] == {"command": "cd /workspace && echo apple > notes.txt"}
    assert "/solution" not in json.dumps(arguments)
