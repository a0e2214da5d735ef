"""What a sandbox is, independent of the backend: its spec, its exec result, its protocol.

A sandbox is one isolated container for one episode. The spec comes from the
task's environment (``E`` of the 5-tuple) plus the episode id; the backend turns
it into a running container. Limits are enforced by the runtime (cgroups,
network namespace rules), never trusted to the agent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol, runtime_checkable

import attrs

from kwaigym.errors import ConfigError

NetworkMode = Literal["none", "proxy", "open"]

#: Label put on every container kwaigym starts; the reaper finds leftovers by it.
LABEL = "io.kwaigym"
LABEL_EPISODE = "io.kwaigym.episode"
LABEL_OWNER = "io.kwaigym.owner"
LABEL_DEADLINE = "io.kwaigym.deadline"

#: Directories a read-only root keeps writable (size-bounded tmpfs copies of the image's content):
#: temporary files, runtime state and home directories, where agents keep their own config.
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/run", "/root", "/home")


def _positive(instance, attribute, value):
    if value is not None and value <= 0:
        raise ConfigError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen(kw_only=True)
class Resources:
    """Limits of one sandbox, enforced by the container runtime."""

    cpus: float = attrs.field(default=1.0, validator=_positive)
    """CPU cores the sandbox may use (CFS quota)."""
    memory_mb: int = attrs.field(default=2048, validator=_positive)
    """Memory limit, swap included; a process over it is OOM-killed."""
    pids: int = attrs.field(default=512, validator=_positive)
    """Maximum number of processes and threads; a fork past it fails."""
    wall_time_s: float = attrs.field(default=3600.0, validator=_positive)
    """Lifetime of the sandbox; past it the container is killed, also if the host process died."""
    disk_mb: int | None = attrs.field(default=None, validator=_positive)
    """Size bound of the writable workdir (a memory-backed tmpfs seeded from the image); None: unbounded
    (on a read-only root: ``memory_mb``)."""
    scratch_mb: int = attrs.field(default=256, validator=_positive)
    """Size bound of each writable directory of a read-only root (``SCRATCH_DIRS``, ``writable``)."""


@attrs.frozen(kw_only=True)
class NetworkPolicy:
    """What the sandbox may reach.

    ``none``: loopback only. ``proxy`` (default): only ``proxy_port`` on the host's
    loopback, seen inside the sandbox as ``PROXY_HOST``; every other connection is
    refused. ``open``: outbound internet through user-mode networking, host loopback
    unreachable.
    """

    mode: NetworkMode = attrs.field(
        default="proxy", validator=attrs.validators.in_(("none", "proxy", "open"))
    )
    """One of ``none``, ``proxy``, ``open``."""
    proxy_port: int | None = None
    """Host loopback port the sandbox may reach in ``proxy`` mode (the interception proxy)."""
    extra_ports: tuple[int, ...] = attrs.field(default=(), converter=tuple)
    """More host loopback ports reachable in ``proxy`` mode (the proxy's HTTPS_PROXY port)."""

    @property
    def ports(self) -> tuple[int, ...]:
        """Every host loopback port the sandbox may reach."""
        return ((self.proxy_port,) if self.proxy_port else ()) + self.extra_ports

    def __attrs_post_init__(self):
        if self.mode == "proxy" and self.proxy_port is None:
            raise ConfigError(
                "network mode 'proxy' needs proxy_port: the host loopback port of the endpoint the "
                "sandbox may reach; use NetworkPolicy(mode='none') for no network at all"
            )
        for port in self.ports:
            if not 0 < port < 65536:
                raise ConfigError(f"proxy ports must be TCP ports (1-65535), got {port}")


#: Address of the host's loopback as seen from inside a sandbox (user-mode networking).
PROXY_HOST = "10.0.2.2"


@attrs.frozen(kw_only=True)
class Mount:
    """A host directory bind-mounted into the sandbox (read-only by default: scaffold bundles)."""

    source: str
    """Absolute path on the podman host."""
    target: str
    """Absolute path inside the sandbox."""
    read_only: bool = True
    """Mount read-only."""


@attrs.frozen(kw_only=True)
class SandboxSpec:
    """Everything needed to start one sandbox."""

    image: str
    """Image reference present on the podman host (see ``kwaigym.sandbox.images``)."""
    episode_id: str
    """Episode this sandbox belongs to; labels the container and names it in errors."""
    workdir: str = "/workspace"
    """Working directory of exec calls and of the agent."""
    env: Mapping[str, str] = attrs.field(factory=dict)
    """Environment of every exec in the sandbox."""
    resources: Resources = attrs.field(factory=Resources)
    """Runtime-enforced limits."""
    network: NetworkPolicy = attrs.field(factory=lambda: NetworkPolicy(mode="none"))
    """What the sandbox may reach. Episodes pass ``proxy`` with the interception port."""
    mounts: Sequence[Mount] = ()
    """Extra bind mounts (scaffold bundles, read-only)."""
    user: str | None = None
    """User for exec calls; None: the image's default."""
    read_only_root: bool = False
    """Mount the image read-only: binaries, libraries and configuration stay as built, whatever runs
    inside (a verifier then runs the image's own tools), and disk use is bounded everywhere. The
    workdir, ``SCRATCH_DIRS`` and ``writable`` become size-bounded tmpfs copies of the image's
    content (counted in the memory limit as they fill)."""
    writable: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """More absolute directories to keep writable on a read-only root (``/etc/cron.d``, say)."""

    def __attrs_post_init__(self):
        for path in self.writable:
            if not path.startswith("/") or path.rstrip("/") == "":
                raise ConfigError(
                    f"episode {self.episode_id}: writable directories must be absolute and not '/', "
                    f"got {path!r}"
                )


@attrs.frozen
class ExecResult:
    """Outcome of one command: exit code and separate, possibly truncated, output."""

    exit_code: int
    stdout: str
    stderr: str
    duration_s: float
    truncated: bool = False
    """True when output exceeded the cap and its middle was dropped (a marker says where)."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def output(self) -> str:
        """stdout and stderr together, as an agent would see them in a terminal."""
        if not self.stderr:
            return self.stdout
        if not self.stdout:
            return self.stderr
        sep = "" if self.stdout.endswith("\n") else "\n"
        return f"{self.stdout}{sep}{self.stderr}"


Command = str | Sequence[str]


@runtime_checkable
class Sandbox(Protocol):
    """One running, isolated container of one episode.

    ``exec`` runs a fresh process; ``shell`` runs in a persistent shell whose
    state (cwd, exported variables) survives between calls. Both raise
    ``SandboxTimeout``/``SandboxOOM``/``SandboxPidsExceeded``/``SandboxDiskFull``
    when a limit is hit, never hang, and return non-zero exit codes as results.
    """

    id: str
    spec: SandboxSpec

    async def exec(
        self,
        cmd: Command,
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
        max_output: int | None = None,
        user: str | None = None,
    ) -> ExecResult: ...

    async def shell(self, script: str, *, timeout: float | None = None) -> ExecResult: ...

    async def put_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None: ...

    async def get_file(self, path: str) -> bytes: ...

    async def put_dir(self, local_dir: str, path: str) -> None: ...

    async def get_dir(self, path: str, local_dir: str) -> None: ...

    async def close(self) -> None: ...
