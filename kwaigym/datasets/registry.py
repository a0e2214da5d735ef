"""Datasets by name or by path: ``load_dataset("examples")``, ``load_dataset("tasks/")``,
``load_dataset("instances.jsonl")``.

A name is a built-in dataset (``examples``, the repository's bundled ``examples/tasks``;
``drills``, tiny generated tasks for training demos) or one a package registers under the entry
point group ``kwaigym.datasets``, as ``name = "package.module:factory"``; the factory takes the
options as keyword arguments and returns a Dataset. Anything else is a path: a directory of task
directories (or one task directory), or a JSON-lines file whose first record says its format. A
name wins over a relative path spelled the same: write ``./examples`` for the directory.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from kwaigym.datasets.base import Dataset, closest, first_record
from kwaigym.datasets.codegen import load_codegen, load_qa
from kwaigym.datasets.drills import load_drills
from kwaigym.datasets.swebench import load_swebench
from kwaigym.datasets.taskdir import load_taskdir
from kwaigym.errors import ConfigError

GROUP = "kwaigym.datasets"
#: The repository's bundled tasks (``<repo>/examples/tasks``); not shipped inside a wheel.
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tasks"


def _examples(*, name: str = "examples") -> Dataset:
    if not EXAMPLES.is_dir():
        raise ConfigError(
            f"the bundled examples are not at {EXAMPLES}: they ship with a source checkout of kwaigym, "
            "not with a wheel; pass the path of a task directory instead"
        )
    return load_taskdir(EXAMPLES, name=name)


BUILTIN: dict[str, Callable[..., Dataset]] = {"examples": _examples, "drills": load_drills}


def _registered() -> dict[str, Any]:
    """Entry points by name (not loaded: loading imports the package)."""
    return {entry.name: entry for entry in entry_points(group=GROUP)}


def available() -> list[str]:
    """Names ``load_dataset`` accepts besides paths, sorted."""
    return sorted({*BUILTIN, *_registered()})


def load_dataset(spec: str | os.PathLike, **options: Any) -> Dataset:
    """A dataset by registered name or by path (see the module docstring).

    ``options`` go to the loader (a registered factory, or e.g. ``cache`` and ``image_template``
    for SWE-bench files); one it does not take raises ConfigError listing those it does.
    """
    if isinstance(spec, str):
        registered = _registered()
        if spec in registered:  # a package's registration overrides a built-in of the same name
            return _call(spec, _load_entry(spec, registered[spec]), options)
        if spec in BUILTIN:
            return _call(spec, BUILTIN[spec], options)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _call(str(path), functools.partial(load_taskdir, path), options)
    if path.is_file():
        if path.suffix.lower() != ".jsonl":
            raise ConfigError(
                f"{path}: not a dataset kwaigym can read: expected a directory of tasks or a .jsonl file"
            )
        return _call(str(path), functools.partial(_jsonl_loader(path), path), options)
    near = closest(str(spec), available())
    hint = f" Did you mean {near[0]!r}?" if near else ""
    raise ConfigError(
        f"no dataset named {str(spec)!r} and no such file or directory; "
        f"names: {', '.join(available())}.{hint}"
    )


def _jsonl_loader(path: Path) -> Callable[..., Dataset]:
    """The loader for a JSON-lines file, told by the fields of its first record."""
    record = first_record(path)
    if "instance_id" in record and "base_commit" in record:
        return load_swebench
    if {"tests", "cases", "public_test_cases"} & set(record):
        return load_codegen
    if "question" in record and "answer" in record:
        return load_qa
    raise ConfigError(
        f"{path}:1: cannot tell the format from the fields ({', '.join(sorted(record)) or 'none'}); "
        "expected SWE-bench instances (instance_id, base_commit, ...), code-generation problems "
        "(tests, cases or public_test_cases) or questions (question, answer)"
    )


def _load_entry(name: str, entry) -> Callable[..., Dataset]:
    try:
        factory = entry.load()
    except Exception as exc:  # an entry point runs third-party imports: name it, keep the cause
        raise ConfigError(f"dataset {name!r}: cannot load its entry point {entry.value!r}: {exc}") from exc
    if not callable(factory):
        raise ConfigError(f"dataset {name!r}: entry point {entry.value!r} is not callable")
    return factory


def _call(name: str, loader: Callable[..., Dataset], options: dict[str, Any]) -> Dataset:
    """Call a loader, turning an option it does not take into a ConfigError, and check the result."""
    try:
        accepted = inspect.signature(loader).parameters
    except (TypeError, ValueError):
        accepted = None
    if accepted is not None and not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            takes = [n for n, p in accepted.items() if p.kind is not p.VAR_POSITIONAL]
            raise ConfigError(
                f"dataset {name!r}: unknown option(s) {', '.join(unknown)}; "
                f"it takes: {', '.join(takes) or 'none'}"
            )
    dataset = loader(**options)
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"dataset {name!r}: its loader returned {type(dataset).__name__}, not a Dataset")
    return dataset
