"""The task: a 5-tuple ``<E, T, S, I, V>``, the unit every dataset yields.

``E`` (:class:`Environment`) says what sandbox to start, ``T`` (:class:`Tools`) what the
agent may use, ``S`` (:class:`ScaffoldRef`) which agent runs (a dataset leaves it unbound; the
run configuration binds it), ``I`` the instruction, ``V`` (:class:`VerifierSpec`) how the
result is scored. A task is plain data: frozen, and round-trips through JSON and TOML
(``to_dict``/``from_dict``), so datasets can be generated, stored and shipped to workers.

Files a task brings (its tests, its reference solution, its build context) stay on the host
in ``Task.root``, and relative paths in a task are relative to it; verifiers copy what they
need into the sandbox only after the agent has ended.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import tomli_w

from kwaigym.errors import ConfigError

NETWORK_MODES = ("none", "proxy", "open")


def _positive(instance, attribute, value):
    if value is not None and value <= 0:
        raise ConfigError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen(kw_only=True)
class Environment:
    """``E``: the sandbox of a task: an image (given, or built from a context), limits, setup."""

    image: str | None = None
    """A ready image reference; None: build ``build_context``."""
    build_context: str | None = None
    """Directory with a Containerfile or Dockerfile (relative to the task root). kwaigym passes the
    build argument ``KWAIGYM_BASE_IMAGE`` (its Debian base image) so ``FROM ${KWAIGYM_BASE_IMAGE}``
    builds offline."""
    containerfile: str | None = None
    """The file's name inside ``build_context`` when it is not Containerfile/Dockerfile."""
    workdir: str = "/workspace"
    """Where the agent starts and the project lives."""
    setup: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Shell commands run in the sandbox before the agent starts."""
    cpus: float = attrs.field(default=1.0, validator=_positive)
    memory_mb: int = attrs.field(default=2048, validator=_positive)
    pids: int = attrs.field(default=512, validator=_positive)
    disk_mb: int | None = attrs.field(default=None, validator=_positive)
    agent_timeout_s: float = attrs.field(default=900.0, validator=_positive)
    """Wall time the agent may run."""
    network: str = attrs.field(default="proxy", validator=attrs.validators.in_(NETWORK_MODES))
    """What the agent's sandbox may reach: ``proxy`` (only the model proxy), ``none``, ``open``."""
    allow_hosts: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Hosts reachable through the proxy besides model APIs (package indexes, say)."""
    read_only_root: bool = True
    """The image is mounted read-only, so no agent can replace what the verifier runs (bash, python,
    test runners) or fill the host's disk; the workdir (bounded by ``disk_mb``, else by
    ``memory_mb``), /tmp, /var/tmp, /run, /root and /home (each bounded by ``disk_mb``, else by
    256 MB) stay writable as tmpfs copies of the image's content.
    Set it false for a task whose agent must write elsewhere (or list those dirs in ``writable``)."""
    writable: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """More directories the agent may write on a read-only root (``/etc/cron.d``, say)."""


@attrs.frozen(kw_only=True)
class Tools:
    """``T``: what the agent may use. Black-box scaffolds: names of their own tools allowed
    (None: all of them). White-box scaffolds: tool definitions (JSON schema objects)."""

    allowed: tuple[str, ...] | None = attrs.field(default=None, converter=attrs.converters.optional(tuple))
    definitions: tuple[Mapping[str, Any], ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen(kw_only=True)
class ScaffoldRef:
    """``S``: the agent: an adapter name and its config (system prompt, max turns, model name)."""

    name: str
    config: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class VerifierSpec:
    """``V``: how the attempt is scored: a verifier kind (``script``, ``swe``, ``output``,
    ``judge`` or a registered one) and its parameters."""

    kind: str
    params: Mapping[str, Any] = attrs.field(factory=dict)
    timeout_s: float = attrs.field(default=300.0, validator=_positive)
    """Wall time the verifier may run; past it the record says ``reward_valid = false``."""


@attrs.frozen(kw_only=True)
class Solution:
    """A reference solution, used by ``kwaigym validate`` and the oracle policy: a ``script``
    (shell, run in the workdir), a ``command`` (one shell command, inline), a ``patch`` (unified
    diff applied in the workdir) or an ``answer`` (the text a code-generation or QA task expects).
    Paths are relative to the root. One that gives none of them is refused: it would "solve"
    nothing, and validation would blame the task."""

    script: str | None = None
    """Path of a shell script (e.g. ``solution/solve.sh``)."""
    command: str | None = None
    """One shell command, run in the workdir, that solves the task: generated tasks carry their
    solution inline, so the oracle's tool call shows the real command and its trajectories teach it."""
    patch: str | None = None
    """A unified diff (its text)."""
    answer: str | None = None
    """The final answer (text)."""

    def __attrs_post_init__(self):
        if not (self.script or self.command or self.patch or self.answer is not None):
            raise ConfigError("a solution needs a script, command, patch or answer")


@attrs.frozen(kw_only=True)
class Task:
    """One task of a dataset (see the module docstring)."""

    id: str = attrs.field(validator=attrs.validators.min_len(1))
    instruction: str
    environment: Environment = attrs.field(factory=Environment)
    verifier: VerifierSpec
    tools: Tools = attrs.field(factory=Tools)
    scaffold: ScaffoldRef | None = None
    phrasings: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Other phrasings of the same intent (the instruction is the first)."""
    solution: Solution | None = None
    root: str | None = None
    """Host directory holding the task's files (tests, solution, build context)."""
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    """Free-form: difficulty, category, source, upstream ids."""

    def path(self, relative: str) -> Path:
        """A task file on the host; relative paths are relative to ``root``."""
        path = Path(relative)
        if path.is_absolute():
            return path
        if self.root is None:
            raise ConfigError(f"path {relative!r} is relative but the task has no root", task_id=self.id)
        return Path(self.root) / path

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain data (None values left out), for JSON and TOML."""
        return _drop_none(attrs.asdict(self, recurse=True))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "task") -> Task:
        """Build a task from plain data; an unknown or ill-typed field raises ConfigError naming it."""
        return _build(cls, data, where)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, where: str = "task") -> Task:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{where}: not JSON: {exc}") from None
        return cls.from_dict(data, where=where)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_toml(cls, text: str, *, where: str = "task") -> Task:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: not TOML: {exc}") from None
        return cls.from_dict(data, where=where)


_NESTED = {
    "environment": Environment,
    "verifier": VerifierSpec,
    "tools": Tools,
    "scaffold": ScaffoldRef,
    "solution": Solution,
}


def _drop_none(value):
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_drop_none(v) for v in value]
    return value


def _build(cls, data, where: str):
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table/object, got {type(data).__name__}")
    fields = {f.name: f for f in attrs.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        nested = _NESTED.get(name) if cls is Task else None
        kwargs[name] = _build(nested, value, f"{where}.{name}") if nested and value is not None else value
    missing = [n for n, f in fields.items() if f.default is attrs.NOTHING and n not in kwargs]
    if missing:
        raise ConfigError(f"{where}: missing required field(s) {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None
    except (TypeError, ValueError) as exc:  # attrs validators put the readable message first
        raise ConfigError(f"{where}: {exc.args[0] if exc.args else exc}") from None
