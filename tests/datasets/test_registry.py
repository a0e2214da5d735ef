"""load_dataset: names (built-in and entry points), directories, JSON-lines files by their fields."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

import kwaigym
from kwaigym.datasets import TaskList, available, load_dataset, registry
from kwaigym.errors import ConfigError
from kwaigym.task import Task, VerifierSpec

FIXTURES = Path(__file__).parent / "fixtures"


def toy_dataset(*, size: int = 2) -> TaskList:
    """The factory the fake entry point names."""
    tasks = [Task(id=f"toy-{i}", instruction="x", verifier=VerifierSpec(kind="script")) for i in range(size)]
    return TaskList("toy", tasks)


def not_a_dataset():
    return [1, 2, 3]


@pytest.fixture
def entry_points(monkeypatch):
    """Pretend an installed package registered datasets (the neighbour, not the registry, is faked)."""
    values = {"toy": f"{__name__}:toy_dataset", "broken": f"{__name__}:not_a_dataset"}
    found = [importlib.metadata.EntryPoint(name=n, value=v, group=registry.GROUP) for n, v in values.items()]
    monkeypatch.setattr(registry, "entry_points", lambda group: [e for e in found if e.group == group])


def test_registered_dataset_loads_with_options(entry_points):
    """A name registered under kwaigym.datasets loads through its factory, with the options."""
    assert "toy" in available() and "examples" in available()
    dataset = load_dataset("toy", size=3)
    assert [t.id for t in dataset] == ["toy-0", "toy-1", "toy-2"]


def test_registered_factory_must_return_a_dataset(entry_points):
    """A factory returning something else is named in the error."""
    with pytest.raises(ConfigError, match="'broken': its loader returned list"):
        load_dataset("broken")


def test_unknown_option_lists_those_taken(entry_points):
    """An option the loader does not take is an error listing the ones it does."""
    with pytest.raises(ConfigError, match="unknown option.s. colour; it takes: size"):
        load_dataset("toy", colour="red")


def test_unknown_name_suggests_the_closest(entry_points):
    """A name that is neither registered nor a path lists the names and the closest one."""
    with pytest.raises(ConfigError, match=r"no dataset named 'tyo'.*examples.*Did you mean 'toy'"):
        load_dataset("tyo")


def test_examples_name_the_bundled_tasks():
    """`examples` is <repo>/examples/tasks, found from the package."""
    assert registry.EXAMPLES == Path(kwaigym.__file__).resolve().parents[1] / "examples" / "tasks"


def test_examples_load_as_a_task_directory(monkeypatch):
    """`examples` loads its directory as a dataset called examples."""
    monkeypatch.setattr(registry, "EXAMPLES", FIXTURES / "tasks")
    dataset = load_dataset("examples")
    assert dataset.name == "examples" and len(dataset) == 3


def test_missing_examples_say_where_they_were_looked_for(monkeypatch, tmp_path):
    """Without a source checkout, `examples` says where it looked and what to do instead."""
    monkeypatch.setattr(registry, "EXAMPLES", tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="bundled examples are not at"):
        load_dataset("examples")


def test_directory_of_tasks_and_single_task():
    """A path to a directory of tasks, or to one task, loads as a task-directory dataset."""
    assert len(load_dataset(FIXTURES / "tasks")) == 3
    assert [t.id for t in load_dataset(str(FIXTURES / "tasks" / "hello-file"))] == ["hello-file"]
    assert load_dataset(FIXTURES / "tasks", name="mine").name == "mine"


@pytest.mark.parametrize(
    ("file", "kind", "first"),
    [
        ("swebench.jsonl", "swe", "django__django-11099"),
        ("codegen.jsonl", "output", "abc301_a"),
        ("qa.jsonl", "output", "capital"),
    ],
)
def test_jsonl_format_is_told_by_its_fields(tmp_path, file, kind, first):
    """A .jsonl file's first record picks the loader (SWE-bench, code generation, QA)."""
    options = {"cache": tmp_path} if file == "swebench.jsonl" else {}
    dataset = load_dataset(FIXTURES / file, **options)
    assert next(iter(dataset)).id == first and next(iter(dataset)).verifier.kind == kind


def test_unknown_jsonl_format(tmp_path):
    """A .jsonl file of no known format says which fields each format needs."""
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"text": "hi"}) + "\n")
    with pytest.raises(ConfigError, match=r"x\.jsonl:1: cannot tell the format.*instance_id"):
        load_dataset(path)


def test_other_files_are_refused(tmp_path):
    """A file that is not .jsonl is not guessed at."""
    path = tmp_path / "tasks.csv"
    path.write_text("a,b\n")
    with pytest.raises(ConfigError, match="expected a directory of tasks or a .jsonl file"):
        load_dataset(path)


def test_empty_jsonl_is_an_error(tmp_path):
    """An empty JSON-lines file is named as empty."""
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(ConfigError, match="no records"):
        load_dataset(path)
