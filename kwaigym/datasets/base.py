"""The dataset interface, an in-memory dataset, and the checks every loader shares.

A dataset is a named, ordered collection of :class:`~kwaigym.task.Task` with the scaffold ``S``
unbound: the run configuration binds it. The loaders of this package read their whole source
when called and check every task then (its files, its verifier's parameters), so a malformed
task fails before any sandbox starts rather than an hour into a run. Limit: the tasks are held
in memory; their files (tests, build contexts) stay on disk.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import attrs

from kwaigym.errors import ConfigError
from kwaigym.task import Task, VerifierSpec
from kwaigym.verifiers import available as available_verifiers
from kwaigym.verifiers import get_verifier

#: Log formats the ``swe`` verifier can parse.
#: How the ``output`` verifier compares.


@runtime_checkable
class Dataset(Protocol):
    """Tasks by id, in a fixed order. Every task has ``scaffold`` None."""

    name: str

    def __iter__(self) -> Iterator[Task]: ...

    def __len__(self) -> int: ...

    def tasks(self) -> Iterator[Task]:
        """The tasks in order (the same as iterating)."""
        ...

    def get(self, task_id: str) -> Task:
        """The task of that id; an unknown id raises ConfigError naming the closest ids."""
        ...


def closest(word: str, options: Iterable[str], n: int = 3) -> list[str]:
    """The options most like ``word``, best first (for 'did you mean' hints)."""
    return difflib.get_close_matches(word, list(options), n=n, cutoff=0.5)


def _index(tasks: Sequence[Task], name: str) -> dict[str, Task]:
    by_id: dict[str, Task] = {}
    for task in tasks:
        if task.scaffold is not None:
            raise ConfigError(
                f"dataset {name!r}: the task binds the scaffold {task.scaffold.name!r}; a dataset's tasks "
                "leave it unbound (the run configuration binds it)",
                task_id=task.id,
            )
        if task.id in by_id:
            raise ConfigError(f"dataset {name!r} has two tasks with id {task.id!r}", task_id=task.id)
        by_id[task.id] = task
    return by_id


@attrs.frozen
class TaskList:
    """A dataset held in memory: what every loader here returns, and a handy way to build one in code."""

    name: str
    _tasks: tuple[Task, ...] = attrs.field(converter=tuple)
    _by_id: dict[str, Task] = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(lambda self: _index(self._tasks, self.name), True),
    )

    def __iter__(self) -> Iterator[Task]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def tasks(self) -> Iterator[Task]:
        return iter(self._tasks)

    def get(self, task_id: str) -> Task:
        try:
            return self._by_id[task_id]
        except KeyError:
            pass
        near = closest(task_id, self._by_id)
        hint = f"closest: {', '.join(near)}" if near else f"it has {len(self)} task(s)"
        raise ConfigError(f"dataset {self.name!r} has no task {task_id!r}; {hint}", task_id=task_id)


# --- JSON lines --------------------------------------------------------------------------------


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of each non-blank line; a bad line raises ConfigError naming it."""
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise ConfigError(f"{path}:{number}: not JSON: {exc}") from None
                if not isinstance(record, dict):
                    raise ConfigError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
                yield number, record
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def first_record(path: Path) -> dict[str, Any]:
    """The first record of a JSON-lines file (to tell its format); an empty file raises ConfigError."""
    for _, record in read_jsonl(path):
        return record
    raise ConfigError(f"{path}: no records (the file is empty)")


# --- verifier parameters -------------------------------------------------------------------------

_UNUSED_JUDGE = object()  # building a judge verifier checks its rubric; its model is needed only to score


def check_verifier(spec: VerifierSpec, where: str, task_id: str | None = None) -> None:
    """Fail at load time on params the verifier could not use: building the verifier checks them
    (one set of checks, the verifier's own). A kind no installed package provides passes unchecked:
    loading a dataset needs no plugin, scoring it does (and says so)."""
    if spec.kind not in available_verifiers():
        return
    try:
        get_verifier(spec, judge=_UNUSED_JUDGE)
    except ConfigError as exc:
        raise ConfigError(f"{where}: verifier: {exc.message}", task_id=task_id) from None
