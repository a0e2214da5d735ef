"""Task directories in the Harbor / Terminal-Bench 2 layout, and datasets made of them.

    <task-id>/task.toml          Harbor's fields, plus kwaigym's [verifier] kind/params
    <task-id>/instruction.md     the instruction
    <task-id>/environment/       Dockerfile or Containerfile + context (or [environment] docker_image)
    <task-id>/tests/test.sh      the ``script`` verifier's entry point (+ its files)
    <task-id>/solution/solve.sh  the reference solution (optional; solution.patch too)

Harbor's fields map onto :class:`~kwaigym.task.Task`: ``[agent] timeout_sec`` -> the agent's wall
time, ``[verifier] timeout_sec`` -> the verifier's, ``cpus``, ``memory_mb`` (or the older
``memory = "2G"``), ``storage_mb`` (or ``storage``) -> disk, ``allow_internet = true`` (or
``network_mode = "public"``) -> network ``open``, else ``proxy`` (only the model proxy: kwaigym's
default is closed where Harbor's is open), ``docker_image`` -> a prebuilt image used instead of
building ``environment/`` (as Harbor does), ``workdir`` -> the workdir (else the Dockerfile's
last plain ``WORKDIR``, else ``/workspace``). ``[metadata]`` is kept as ``Task.metadata``.
kwaigym's own ``[environment]`` fields: ``setup``, ``read_only_root`` (default true: the image is
mounted read-only, the workdir and scratch directories are writable) and ``writable`` (more
directories the agent may write, such as ``["/etc/cron.d"]``).

A field this module does not know is an error naming the file and the field: a typo such as
``cpu = 2`` must not silently run the task with one CPU. Harbor fields that kwaigym has no use
for are accepted and ignored; they are listed in ``IGNORED``. Multi-step tasks (``[[steps]]``),
GPUs and non-Linux sandboxes are refused.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import attrs

from kwaigym.datasets.base import TaskList, check_verifier
from kwaigym.errors import ConfigError
from kwaigym.task import Environment, Solution, Task, VerifierSpec

log = logging.getLogger(__name__)

TASK_FILE = "task.toml"
INSTRUCTION_FILE = "instruction.md"
CONTAINERFILES = ("Containerfile", "Dockerfile")

#: Harbor fields accepted and ignored, by section ("" is the top level).
IGNORED: Mapping[str, frozenset[str]] = {
    "": frozenset({"version", "schema_version", "source", "task", "solution"}),
    "verifier": frozenset({"env", "user"}),
    "agent": frozenset({"user"}),
    "environment": frozenset(
        {"build_timeout_sec", "gpus", "gpu_types", "mcp_servers", "env", "skills_dir", "os", "healthcheck"}
    ),
}
#: Fields this module reads, by section.
USED: Mapping[str, frozenset[str]] = {
    "": frozenset({"metadata", "verifier", "agent", "environment"}),
    "verifier": frozenset({"timeout_sec", "kind", "params"}),
    "agent": frozenset({"timeout_sec"}),
    "environment": frozenset(
        {
            "cpus",
            "memory_mb",
            "memory",
            "storage_mb",
            "storage",
            "allow_internet",
            "network_mode",
            "docker_image",
            "workdir",
            "setup",
            "read_only_root",
            "writable",
        }
    ),
}
_NETWORK_MODES = {"public": "open", "allowlist": "proxy", "no-network": "none"}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT])i?B?\s*$", re.IGNORECASE)
_SIZE_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
_WORKDIR = re.compile(r"^\s*WORKDIR\s+(\S+)\s*$", re.IGNORECASE | re.MULTILINE)


def is_task_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is one task (it holds a task.toml)."""
    return (Path(path) / TASK_FILE).is_file()


def load_taskdir(path: str | os.PathLike, *, name: str | None = None) -> TaskList:
    """A dataset from a directory of task directories, or from one task directory.

    Subdirectories without a task.toml (and hidden ones) are skipped; finding no task at all is
    an error. Every task is read and checked now.
    """
    root = Path(path).resolve()
    if not root.is_dir():
        raise ConfigError(f"{root}: not a directory of tasks")
    if is_task_dir(root):
        return TaskList(name or root.name, [load_task(root)])
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and is_task_dir(d))
    if not dirs:
        raise ConfigError(
            f"{root}: no task directories in it (a task directory holds {TASK_FILE}, {INSTRUCTION_FILE}, "
            "environment/ and tests/)"
        )
    return TaskList(name or root.name, [load_task(d) for d in dirs])


def load_task(path: str | os.PathLike) -> Task:
    """One task from its directory; any problem raises ConfigError naming the file and the field."""
    task_dir = Path(path).resolve()
    toml = _TomlFile(task_dir / TASK_FILE, task_dir.name)
    data = toml.read()
    if "steps" in data:
        toml.fail("steps", "multi-step Harbor tasks are not supported; split them into one task per step")
    toml.check_fields(data, "")
    metadata = toml.table(data, "metadata", open_fields=True)
    verifier = _verifier(toml, toml.table(data, "verifier"))
    environment = _environment(toml, toml.table(data, "environment"), toml.table(data, "agent"))
    instruction, solution = _instruction(task_dir), _solution(task_dir, verifier)
    try:
        task = Task(
            id=task_dir.name,
            instruction=instruction,
            environment=environment,
            verifier=verifier,
            solution=solution,
            root=str(task_dir),
            metadata=metadata,
        )
    except (TypeError, ValueError) as exc:  # attrs validators; ConfigError is a ValueError too
        raise ConfigError(f"{toml.path}: {getattr(exc, 'message', exc)}", task_id=task_dir.name) from None
    _check_files(toml, task)
    return task


@attrs.frozen
class _TomlFile:
    """A task.toml read field by field; every error names the file and the field."""

    path: Path
    task_id: str

    def fail(self, field: str, problem: str) -> NoReturn:
        raise ConfigError(f"{self.path}: {field}: {problem}", task_id=self.task_id)

    def read(self) -> dict[str, Any]:
        try:
            return tomllib.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{self.path}: missing", task_id=self.task_id) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.path}: not valid TOML: {exc}", task_id=self.task_id) from None

    def check_fields(self, table: Mapping[str, Any], section: str) -> None:
        known = USED[section] | IGNORED[section]
        for key in table:
            if key not in known:
                where = f"[{section}] {key}" if section else key
                self.fail(where, f"unknown field; known here: {', '.join(sorted(known))}")
        ignored = sorted(set(table) & IGNORED[section])
        if ignored:
            log.debug("%s: ignoring Harbor field(s) [%s] %s", self.path, section, ", ".join(ignored))

    def table(self, data: Mapping[str, Any], section: str, *, open_fields: bool = False) -> dict[str, Any]:
        value = data.get(section, {})
        if not isinstance(value, Mapping):
            self.fail(section, f"expected a table [{section}], got {value!r}")
        if not open_fields:
            self.check_fields(value, section)
        return dict(value)

    def get(self, table: Mapping[str, Any], section: str, key: str, kind: str, default: Any = None) -> Any:
        """``table[key]`` checked against ``kind``: number, int, bool, str or str-list."""
        if key not in table:
            return default
        value = table[key]
        ok = {
            "number": isinstance(value, int | float) and not isinstance(value, bool) and value > 0,
            "int": isinstance(value, int) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "str": isinstance(value, str) and value != "",
            "str-list": isinstance(value, list) and all(isinstance(v, str) for v in value),
        }[kind]
        if not ok:
            expected = {
                "number": "a positive number",
                "int": "an integer",
                "bool": "true or false",
                "str": "a non-empty string",
                "str-list": "a list of strings",
            }[kind]
            self.fail(f"[{section}] {key}", f"expected {expected}, got {value!r}")
        return value


def _verifier(toml: _TomlFile, section: Mapping[str, Any]) -> VerifierSpec:
    kind = toml.get(section, "verifier", "kind", "str", "script")
    params = section.get("params", {})
    if not isinstance(params, Mapping):
        toml.fail("[verifier] params", f"expected a table [verifier.params], got {params!r}")
    spec = VerifierSpec(
        kind=kind,
        params=dict(params),
        timeout_s=toml.get(section, "verifier", "timeout_sec", "number", 300.0),
    )
    check_verifier(spec, str(toml.path), toml.task_id)
    return spec


def _size_mb(toml: _TomlFile, table: Mapping[str, Any], mb_key: str, size_key: str) -> int | None:
    """``<x>_mb`` (an int) or the older ``<x> = "2G"`` form, in MB."""
    if mb_key in table:
        value = toml.get(table, "environment", mb_key, "int")
        if value <= 0:
            toml.fail(f"[environment] {mb_key}", f"expected a positive number of MB, got {value}")
        return value
    size = table.get(size_key)
    if size is None:
        return None
    match = _SIZE.match(size) if isinstance(size, str) else None
    if match is None:
        toml.fail(f"[environment] {size_key}", f'expected a size such as "2G" or "512M", got {size!r}')
    return max(1, int(float(match[1]) * _SIZE_MB[match[2].upper()]))


def _network(toml: _TomlFile, table: Mapping[str, Any]) -> str:
    if "network_mode" in table:
        mode = table["network_mode"]
        if mode not in _NETWORK_MODES:
            toml.fail(
                "[environment] network_mode", f"expected one of {', '.join(_NETWORK_MODES)}, got {mode!r}"
            )
        return _NETWORK_MODES[mode]
    return "open" if toml.get(table, "environment", "allow_internet", "bool", False) else "proxy"


def _unsupported(toml: _TomlFile, table: Mapping[str, Any]) -> None:
    gpus = table.get("gpus", 0)
    if gpus != 0:
        toml.fail("[environment] gpus", f"kwaigym sandboxes have no GPUs; the task asks for {gpus!r}")
    if table.get("os", "linux") != "linux":
        toml.fail("[environment] os", f"kwaigym sandboxes run Linux; the task asks for {table['os']!r}")


def _environment(toml: _TomlFile, table: Mapping[str, Any], agent: Mapping[str, Any]) -> Environment:
    _unsupported(toml, table)
    task_dir = toml.path.parent
    image = toml.get(table, "environment", "docker_image", "str")
    containerfile = _containerfile(task_dir)
    if image is None and containerfile is None:
        raise ConfigError(
            f"{task_dir / 'environment' / 'Dockerfile'}: missing (give environment/Dockerfile or "
            "environment/Containerfile, or [environment] docker_image in task.toml)",
            task_id=toml.task_id,
        )
    kwargs: dict[str, Any] = {
        "cpus": toml.get(table, "environment", "cpus", "number"),
        "memory_mb": _size_mb(toml, table, "memory_mb", "memory"),
        "disk_mb": _size_mb(toml, table, "storage_mb", "storage"),
        "agent_timeout_s": toml.get(agent, "agent", "timeout_sec", "number"),
        "setup": toml.get(table, "environment", "setup", "str-list"),
        "read_only_root": toml.get(table, "environment", "read_only_root", "bool"),
        "writable": toml.get(table, "environment", "writable", "str-list"),
        "workdir": toml.get(table, "environment", "workdir", "str")
        or (_dockerfile_workdir(containerfile) if image is None else None),
    }
    if image is None:
        kwargs["build_context"] = "environment"
    return Environment(
        image=image, network=_network(toml, table), **{k: v for k, v in kwargs.items() if v is not None}
    )


def _containerfile(task_dir: Path) -> Path | None:
    for name in CONTAINERFILES:
        path = task_dir / "environment" / name
        if path.is_file():
            return path
    return None


def _dockerfile_workdir(containerfile: Path | None) -> str | None:
    """The last ``WORKDIR`` of the Containerfile when it is a plain absolute path (no variables):
    where Harbor's agent starts, since Docker starts there."""
    if containerfile is None:
        return None
    found = _WORKDIR.findall(containerfile.read_text(encoding="utf-8", errors="replace"))
    if found and found[-1].startswith("/") and "$" not in found[-1]:
        return found[-1]
    return None


def _instruction(task_dir: Path) -> str:
    path = task_dir / INSTRUCTION_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: missing; it holds the task's instruction", task_id=task_dir.name
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}", task_id=task_dir.name) from None
    if not text.strip():
        raise ConfigError(f"{path}: empty; it holds the task's instruction", task_id=task_dir.name)
    return text


def _solution(task_dir: Path, verifier: VerifierSpec) -> Solution | None:
    script = task_dir / "solution" / "solve.sh"
    patch = task_dir / "solution" / "solution.patch"
    answer = verifier.params.get("answer") if verifier.kind == "output" else None
    if not (script.is_file() or patch.is_file() or answer is not None):
        return None
    return Solution(
        script="solution/solve.sh" if script.is_file() else None,
        patch=patch.read_text(encoding="utf-8") if patch.is_file() else None,
        answer=answer,
    )


def _check_files(toml: _TomlFile, task: Task) -> None:
    """The files the verifier will copy in must exist now, not when the agent has finished."""
    params = task.verifier.params
    if task.verifier.kind == "script":
        tests = task.path(params.get("tests_dir", "tests"))
        if not tests.is_dir():
            raise ConfigError(f"{tests}: missing; the script verifier copies it to /tests", task_id=task.id)
        if "command" not in params and not (tests / "test.sh").is_file():
            raise ConfigError(
                f"{tests / 'test.sh'}: missing; the script verifier runs it "
                "(or give the command in [verifier.params] command)",
                task_id=task.id,
            )
    if task.verifier.kind == "swe" and "test_files_dir" in params:
        if not task.path(params["test_files_dir"]).is_dir():
            toml.fail(
                "verifier.params.test_files_dir", f"{task.path(params['test_files_dir'])} is not a directory"
            )
