"""The in-memory dataset: lookup by id with close-match hints, and its invariants."""

from __future__ import annotations

import pytest

from kwaigym.datasets import Dataset, TaskList
from kwaigym.errors import ConfigError
from kwaigym.task import ScaffoldRef, Task, VerifierSpec


def _task(task_id: str, **changes) -> Task:
    return Task(id=task_id, instruction="x", verifier=VerifierSpec(kind="script"), **changes)


def test_task_list_is_a_dataset():
    """TaskList iterates in order, has a length and satisfies the Dataset protocol."""
    dataset = TaskList("toy", [_task("b"), _task("a")])
    assert isinstance(dataset, Dataset)
    assert [t.id for t in dataset] == ["b", "a"] == [t.id for t in dataset.tasks()]
    assert len(dataset) == 2 and dataset.get("a").id == "a"


def test_unknown_id_names_the_dataset_and_the_closest_ids():
    """get() of an unknown id says which dataset and which ids are near."""
    dataset = TaskList("toy", [_task("fix-parser"), _task("fix-printer"), _task("hello")])
    with pytest.raises(
        ConfigError, match=r"dataset 'toy' has no task 'fix-parsr'; closest: fix-parser"
    ) as info:
        dataset.get("fix-parsr")
    assert info.value.task_id == "fix-parsr"
    with pytest.raises(ConfigError, match="it has 3 task"):
        dataset.get("zzzzzz")


def test_duplicate_ids_are_refused():
    """Two tasks with one id cannot be told apart: an error names the id."""
    with pytest.raises(ConfigError, match="two tasks with id 'a'"):
        TaskList("toy", [_task("a"), _task("a")])


def test_bound_scaffold_is_refused():
    """A dataset leaves the scaffold unbound; the run configuration binds it."""
    with pytest.raises(ConfigError, match="binds the scaffold 'mini'"):
        TaskList("toy", [_task("a", scaffold=ScaffoldRef(name="mini"))])
