"""The podman sandbox backend.

What is isolated: each sandbox is a rootful podman container with its own
mount, pid, network, ipc and uts namespaces, podman's default capability set
(no CAP_NET_ADMIN, CAP_NET_RAW or CAP_SYS_ADMIN), no-new-privileges, and cgroup
limits on cpu, memory (swap included) and pids. Its lifetime is bounded twice:
by a timer in this process, and by its own PID 1 (``sleep <wall time>`` under
podman's init), so a sandbox ends and removes itself even if this process is
killed. What is not isolated: the kernel is shared (a container is not a VM),
and a sandbox with network mode ``open`` reaches the internet.

Containers are created from a SpecGenerator document sent directly to the REST
API, because podman-py's docker-style translation drops CPU quotas and tmpfs
copy-up; podman-py does the file transfers and listing.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import tarfile
import time
import uuid
from collections.abc import Mapping

import tenacity

from kwaigym.errors import (
    ConfigError,
    SandboxDiskFull,
    SandboxError,
    SandboxGone,
    SandboxOOM,
    SandboxPidsExceeded,
    SandboxTimeout,
)
from kwaigym.sandbox import network, wire
from kwaigym.sandbox.base import (
    LABEL,
    LABEL_DEADLINE,
    LABEL_EPISODE,
    LABEL_OWNER,
    Command,
    ExecResult,
    SandboxSpec,
)
from kwaigym.sandbox.output import DEFAULT_MAX_OUTPUT, CappedBuffer
from kwaigym.sandbox.service import PodmanService
from kwaigym.sandbox.session import ShellSession

log = logging.getLogger(__name__)

MARKER_ENV = "KWAIGYM_EXEC"
_GRACE_S = 30  # PID 1 outlives the in-process wall-time timer by this much
# Kill every process whose environment carries the marker: the whole tree of one exec,
# including children that left its process group. Needs only sh, tr and kill.
_KILL_MARKED = (
    'for d in /proc/[0-9]*; do case "$(tr "\\0" "\\n" < "$d/environ" 2>/dev/null)" in '
    '*"{env}={marker}"*) kill -9 "${{d#/proc/}}" 2>/dev/null;; esac; done; true'
)
# Shell builtins only: when the pids limit is hit, the probe must not need a second process.
_LIMIT_PROBE = (
    "for f in /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control "
    "/sys/fs/cgroup/pids.events /sys/fs/cgroup/pids/pids.events; do "
    '[ -r "$f" ] && while read -r line; do echo "${f##*/} $line"; done < "$f"; done; true'
)
_DISK_PROBE = "df -Pk {workdir} 2>/dev/null | tail -n 1"
_CGROUP_FILES = (  # on the host; v1 controllers are separate trees, v2 is one
    "/sys/fs/cgroup/memory{path}/memory.oom_control",
    "/sys/fs/cgroup{path}/memory.events",
    "/sys/fs/cgroup/pids{path}/pids.events",
    "/sys/fs/cgroup{path}/pids.events",
)


def _parse_counters(text: str) -> dict[str, int]:
    """``oom_kill`` from the memory files and ``max`` (failed forks) from the pids files."""
    found = {}
    for name, key, value in re.findall(r"^(\S+) (oom_kill|max) (\d+)$", text, re.M):
        if name.startswith("memory") and key == "oom_kill":
            found["oom_kill"] = int(value)
        elif name.startswith("pids") and key == "max":
            found["pids_max"] = int(value)
    return found


def _host_counters(cgroup_path: str) -> dict[str, int]:
    lines = []
    for template in _CGROUP_FILES:
        path = template.format(path=cgroup_path)
        if cgroup_path and os.path.exists(path):
            with open(path) as f:
                lines += [f"{os.path.basename(path)} {line.strip()}" for line in f]
    return _parse_counters("\n".join(lines))


class _StillRunning(Exception):
    pass


_EXIT_POLL = tenacity.AsyncRetrying(
    retry=tenacity.retry_if_exception_type(_StillRunning),
    wait=tenacity.wait_fixed(0.01),
    stop=tenacity.stop_after_delay(5),
    reraise=True,
)
_LIMIT_HINTS = (
    "fork",
    "Resource temporarily unavailable",
    "No space left",
    "Cannot allocate memory",
    "Killed",
)


def owner_id() -> str:
    """Identifies this process across pid reuse: host, pid and the process's start time."""
    with open("/proc/self/stat") as f:
        start_ticks = f.read().rsplit(")", 1)[1].split()[19]
    return f"{os.uname().nodename}/{os.getpid()}/{start_ticks}"


def container_spec(spec: SandboxSpec, *, name: str, owner: str) -> dict:
    """The SpecGenerator document for ``spec``."""
    res = spec.resources
    memory = res.memory_mb * 1024 * 1024
    mounts = [
        {
            "destination": m.target,
            "type": "bind",
            "source": m.source,
            "options": ["rbind", "ro" if m.read_only else "rw"],
        }
        for m in spec.mounts
    ]
    if res.disk_mb is not None:
        mounts.append(
            {
                "destination": spec.workdir,
                "type": "tmpfs",
                "source": "tmpfs",
                "options": [f"size={res.disk_mb}m", "tmpcopyup", "exec"],
            }
        )
    return {
        "name": name,
        "image": spec.image,
        "command": ["sleep", str(int(res.wall_time_s) + _GRACE_S)],
        "init": True,
        "remove": True,
        "labels": {
            LABEL: "1",
            LABEL_EPISODE: spec.episode_id,
            LABEL_OWNER: owner,
            LABEL_DEADLINE: str(int(time.time() + res.wall_time_s + _GRACE_S)),
        },
        "env": dict(spec.env),
        "work_dir": spec.workdir,
        "create_working_dir": True,
        "no_new_privileges": True,
        "stop_timeout": 0,
        "mounts": mounts,
        "resource_limits": {
            "memory": {"limit": memory, "swap": memory},
            "pids": {"limit": res.pids},
            "cpu": {"quota": int(res.cpus * 100_000), "period": 100_000},
        },
        **network.podman_netns(spec.network),
    }


class PodmanSandbox:
    """One running podman container (see the module docstring for what it isolates)."""

    def __init__(self, service: PodmanService, spec: SandboxSpec, container_id: str):
        self.service = service
        self.spec = spec
        self.id = container_id
        self.episode_id = spec.episode_id
        self._deadline = time.monotonic() + spec.resources.wall_time_s
        self._session = ShellSession(self)
        self._counters: dict[str, int] = {}
        self._cgroup: str | None = None
        self._closing: asyncio.Future | None = None
        self._timer = asyncio.get_running_loop().call_later(spec.resources.wall_time_s, self._expire)

    # -- exec --------------------------------------------------------------------------------------

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
    ) -> ExecResult:
        """Run ``cmd`` (a shell string, or an argv list) as a fresh process; see ``Sandbox``."""
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if not argv:
            raise ConfigError("exec needs a command; got an empty argv", episode_id=self.episode_id)
        marker = uuid.uuid4().hex
        timeout = self._bounded(timeout)
        out, err = (
            CappedBuffer(max_output or DEFAULT_MAX_OUTPUT),
            CappedBuffer(max_output or DEFAULT_MAX_OUTPUT),
        )
        started = time.monotonic()
        stream = await self.open_exec(
            argv, marker=marker, stdin=stdin is not None, env=env, cwd=cwd, user=user
        )
        try:
            if stdin is not None:
                await stream.write(stdin.encode() if isinstance(stdin, str) else stdin)
                stream.close_stdin()
            await asyncio.wait_for(_pump(stream, out, err), timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            stream.close()
            await asyncio.shield(self.kill_marked(marker))
            if isinstance(exc, asyncio.CancelledError):
                raise
            self._raise_if_expired()
            result = ExecResult(
                -9, out.text(), err.text(), time.monotonic() - started, out.truncated or err.truncated
            )
            raise SandboxTimeout(
                f"command ran past its timeout of {timeout:.1f}s and was killed with its children: {argv!r}",
                result=result,
                episode_id=self.episode_id,
            ) from None
        finally:
            stream.close()
        code = await self.exit_code(stream.exec_id)
        result = ExecResult(
            code, out.text(), err.text(), time.monotonic() - started, out.truncated or err.truncated
        )
        await self._raise_if_limit(result)
        return result

    async def shell(
        self, script: str, *, timeout: float | None = None, max_output: int | None = None
    ) -> ExecResult:
        """Run ``script`` in the sandbox's persistent shell (cwd and exported variables persist)."""
        try:
            result = await self._session.run(
                script, timeout=self._bounded(timeout), max_output=max_output or DEFAULT_MAX_OUTPUT
            )
        except SandboxTimeout:
            self._raise_if_expired()
            raise
        await self._raise_if_limit(result)
        return result

    async def open_exec(
        self,
        argv: list[str],
        *,
        marker: str,
        stdin: bool,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
    ) -> wire.ExecStream:
        """Create and start an exec session whose processes carry ``marker`` in their environment."""
        self._check_open()
        full_env = {**(env or {}), MARKER_ENV: marker}
        try:
            exec_id = await wire.exec_create(
                self.service,
                self.id,
                argv,
                env=full_env,
                workdir=cwd,
                user=user or self.spec.user,
                stdin=stdin,
            )
            return await wire.exec_start(self.service, exec_id)
        except SandboxGone:
            self._raise_if_expired()
            raise SandboxGone(
                "the sandbox's container is gone (stopped or removed)", episode_id=self.episode_id
            ) from None

    async def kill_marked(self, marker: str) -> None:
        """Kill every process started under ``marker`` (an exec's whole tree)."""
        script = _KILL_MARKED.format(env=MARKER_ENV, marker=marker)
        try:
            exec_id = await wire.exec_create(
                self.service, self.id, ["/bin/sh", "-c", script], env={}, workdir="/", user="0", stdin=False
            )
            stream = await wire.exec_start(self.service, exec_id)
            while await stream.read_frame() is not None:
                pass
            stream.close()
        except SandboxError:
            pass  # the container is gone: so are its processes

    async def exit_code(self, exec_id: str) -> int:
        """The exit code of a finished exec (podman may say "running" a moment after its stream ends)."""
        try:
            async for attempt in _EXIT_POLL.copy():
                with attempt:
                    code = await wire.exec_exit_code(self.service, exec_id)
                    if code is None:
                        raise _StillRunning
                    return code
        except _StillRunning:
            raise SandboxError(
                f"exec {exec_id[:12]} reported no exit code", episode_id=self.episode_id
            ) from None

    def _bounded(self, timeout: float | None) -> float:
        """A command never outlives the sandbox: its timeout is cut at the wall-time deadline."""
        left = self._deadline - time.monotonic()
        self._raise_if_expired()
        return left if timeout is None else min(timeout, left)

    async def _raise_if_limit(self, result: ExecResult) -> None:
        """Turn a failure caused by a cgroup limit into its typed error (counters decide, hints gate)."""
        if result.exit_code == 0:
            return
        if result.exit_code < 126 and not any(h in result.output for h in _LIMIT_HINTS):
            return
        counters = await self._limit_counters()
        where = {"result": result, "episode_id": self.episode_id}
        grew = {k for k, v in counters.items() if isinstance(v, int) and v > self._counters.get(k, 0)}
        self._counters.update({k: v for k, v in counters.items() if isinstance(v, int)})
        if "oom_kill" in grew:
            limit = self.spec.resources.memory_mb
            raise SandboxOOM(f"a process was killed for exceeding the memory limit of {limit} MB", **where)
        if "pids_max" in grew:
            raise SandboxPidsExceeded(
                f"a fork failed at the limit of {self.spec.resources.pids} processes", **where
            )
        avail = counters.get("disk_avail_kb")
        if self.spec.resources.disk_mb and avail is not None and avail < 256:
            bound = self.spec.resources.disk_mb
            raise SandboxDiskFull(f"the workdir {self.spec.workdir} is full (bound: {bound} MB)", **where)

    async def _limit_counters(self) -> dict[str, int]:
        """OOM kills and failed forks so far (and free workdir space when bounded).

        On a local service the cgroup files are read from the host: a sandbox at its pids limit may
        have no slot left for one more process. A remote host is asked from inside the sandbox.
        """
        counters: dict[str, int] = {}
        if self.service.is_local:
            if self._cgroup is None:
                info = await wire.request(self.service, "GET", f"/containers/{self.id}/json")
                self._cgroup = info["State"].get("CgroupPath") or ""
            counters = await asyncio.to_thread(_host_counters, self._cgroup)
        disk = _DISK_PROBE.format(workdir=self.spec.workdir) if self.spec.resources.disk_mb else ""
        if not counters or disk:
            probe = await self.exec_raw("; ".join(p for p in ("" if counters else _LIMIT_PROBE, disk) if p))
            counters = counters or _parse_counters(probe)
            df = probe.strip().splitlines()[-1].split() if disk and probe.strip() else []
            if len(df) >= 4 and df[3].isdigit():
                counters["disk_avail_kb"] = int(df[3])
        return counters

    async def exec_raw(self, script: str) -> str:
        """Run a short internal command as root and return its stdout (no limit checks)."""
        stream = await self.open_exec(
            ["/bin/sh", "-c", script], marker=uuid.uuid4().hex, stdin=False, user="0"
        )
        out, err = CappedBuffer(), CappedBuffer()
        try:
            await asyncio.wait_for(_pump(stream, out, err), 30)
        finally:
            stream.close()
        return out.text()

    # -- files -------------------------------------------------------------------------------------

    async def put_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        """Write ``data`` to ``path`` (absolute, or relative to the workdir); parents are created."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(self._abs(path).lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
        await self._put_archive(buf.getvalue())

    async def get_file(self, path: str) -> bytes:
        """Read one regular file from the sandbox."""
        with tarfile.open(fileobj=io.BytesIO(await self._get_archive(path))) as tar:
            member = tar.next()
            if member is None or not member.isfile():
                raise IsADirectoryError(
                    f"[episode {self.episode_id}] {path} is not a regular file; use get_dir"
                )
            return tar.extractfile(member).read()

    async def put_dir(self, local_dir: str, path: str) -> None:
        """Copy the host directory ``local_dir`` to ``path`` in the sandbox (contents, recursively)."""
        target = self._abs(path).lstrip("/")

        def pack() -> bytes:
            if not os.path.isdir(local_dir):
                raise ConfigError(
                    f"put_dir: {local_dir!r} is not a host directory", episode_id=self.episode_id
                )
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                tar.add(local_dir, arcname=target)
            return buf.getvalue()

        await self._put_archive(await asyncio.to_thread(pack))

    async def get_dir(self, path: str, local_dir: str) -> None:
        """Copy the sandbox directory ``path`` into ``local_dir`` on the host (its contents)."""
        data = await self._get_archive(path.rstrip("/") + "/.")

        def unpack() -> None:
            os.makedirs(local_dir, exist_ok=True)
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                tar.extractall(local_dir, filter="data")

        await asyncio.to_thread(unpack)

    def _abs(self, path: str) -> str:
        return path if path.startswith("/") else os.path.join(self.spec.workdir, path)

    async def _put_archive(self, data: bytes) -> None:
        self._check_open()
        container = self.service.client.containers.prepare_model({"Id": self.id})
        if not await self.service.call(container.put_archive, "/", data):
            raise SandboxError("could not copy files into the sandbox", episode_id=self.episode_id)

    async def _get_archive(self, path: str) -> bytes:
        import podman.errors

        self._check_open()
        container = self.service.client.containers.prepare_model({"Id": self.id})

        def read() -> bytes:
            chunks, _ = container.get_archive(self._abs(path))
            return b"".join(chunks)

        try:
            return await self.service.call(read)
        except podman.errors.NotFound:
            raise FileNotFoundError(
                f"[episode {self.episode_id}] no such file or directory in the sandbox: {path}"
            ) from None

    # -- lifetime ----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closing is not None:
            self._raise_if_expired()
            raise SandboxGone("the sandbox is closed", episode_id=self.episode_id)

    def _raise_if_expired(self) -> None:
        if time.monotonic() >= self._deadline:
            raise SandboxTimeout(
                f"the sandbox reached its wall time ({self.spec.resources.wall_time_s:.0f}s); it was removed",
                episode_id=self.episode_id,
            )

    def _expire(self) -> None:
        log.info("episode %s: sandbox wall time over, removing %s", self.episode_id, self.id[:12])
        self._begin_close()

    def _begin_close(self) -> asyncio.Future:
        if self._closing is None:
            self._timer.cancel()
            self._closing = asyncio.ensure_future(self._remove())
        return self._closing

    async def _remove(self) -> None:
        await self._session.close()
        await remove_container(self.service, self.id)

    async def close(self) -> None:
        """Kill and remove the container. Idempotent (a second call waits for the first);
        the removal finishes even if the caller is cancelled."""
        await asyncio.shield(self._begin_close())


async def _pump(stream: wire.ExecStream, out: CappedBuffer, err: CappedBuffer) -> None:
    while (frame := await stream.read_frame()) is not None:
        (out if frame[0] == wire.STDOUT else err).write(frame[1])


async def remove_container(service: PodmanService, container_id: str) -> None:
    """Force-remove a container at once; a container already gone is fine."""
    try:
        await wire.request(service, "DELETE", f"/containers/{container_id}?force=true&timeout=0")
    except SandboxGone:
        pass
