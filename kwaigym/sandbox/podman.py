"""The podman sandbox backend.

What is isolated: each sandbox is a rootful podman container with its own
mount, pid, network, ipc and uts namespaces, podman's default capability set
(no CAP_NET_ADMIN, CAP_NET_RAW or CAP_SYS_ADMIN), no-new-privileges, and cgroup
limits on cpu, memory (swap included) and pids. Its lifetime is bounded twice:
by a timer in this process, and by its own PID 1 (a shell that ignores signals
from inside, reaps orphans and exits at the deadline), so a sandbox ends and
removes itself even if this process is killed, and no agent can end it early.
With ``read_only_root`` the image is mounted read-only and only size-bounded
tmpfs copies (workdir, scratch directories) are writable. What is not isolated:
the kernel is shared (a container is not a VM), and a sandbox with network mode
``open`` reaches the internet.

Containers are created from a SpecGenerator document sent directly to the REST
API, because podman-py's docker-style translation drops CPU quotas and tmpfs
copy-up; podman-py does the file transfers and listing.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import tarfile
import time
import uuid
from collections.abc import Awaitable, Mapping

import tenacity

from kwaigym.errors import ConfigError, SandboxError, SandboxGone, SandboxTimeout
from kwaigym.sandbox import wire
from kwaigym.sandbox.base import Command, ExecResult, SandboxSpec
from kwaigym.sandbox.limits import LimitWatch
from kwaigym.sandbox.output import DEFAULT_MAX_OUTPUT, CappedBuffer
from kwaigym.sandbox.service import PodmanService
from kwaigym.sandbox.session import ShellSession

log = logging.getLogger(__name__)

MARKER_ENV = "KWAIGYM_EXEC"
# Every exec reports its exit status as the last line of its stderr, tagged with its marker, and
# kwaigym removes that line. Asking podman instead (GET /exec/ID/json) races with podman's cleanup
# of finished exec sessions (exit_command_delay, see kwaigym/host.py): under heavy load the answer
# was a 404 for most episodes at 256 concurrent ones. Inspect stays the fallback (no sh, a kill).
_STATUS_TAG = "KWAIGYM_EXIT_STATUS_"


def _reporting_status(argv: list[str], trailer: str) -> list[str]:
    """``argv`` run by sh, which then prints ``\n<trailer><status>`` on stderr."""
    return ["/bin/sh", "-c", f'"$@"; printf "\\n{trailer}%d\\n" "$?" >&2', "sh", *argv]


# Kill every process whose environment carries the marker: the whole tree of one exec,
# including children that left its process group. Needs only sh, tr and kill.
_KILL_MARKED = (
    'for d in /proc/[0-9]*; do case "$(tr "\\0" "\\n" < "$d/environ" 2>/dev/null)" in '
    '*"{env}={marker}"*) kill -9 "${{d#/proc/}}" 2>/dev/null;; esac; done; true'
)


class _StillRunning(Exception):
    pass


_EXIT_POLL = tenacity.AsyncRetrying(
    retry=tenacity.retry_if_exception_type(_StillRunning),
    wait=tenacity.wait_fixed(0.01),
    stop=tenacity.stop_after_delay(5),
    reraise=True,
)


class PodmanSandbox:
    """One running podman container (see the module docstring for what it isolates)."""

    def __init__(self, service: PodmanService, spec: SandboxSpec, container_id: str):
        self.service = service
        self.spec = spec
        self.id = container_id
        self.episode_id = spec.episode_id
        self._deadline = time.monotonic() + spec.resources.wall_time_s
        self._session = ShellSession(self)
        self._limits = LimitWatch(self)
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
        cap = max_output or DEFAULT_MAX_OUTPUT
        run = self._exec(
            argv, cwd=cwd, env=env, stdin=stdin, timeout=self._bounded(timeout), cap=cap, user=user
        )
        return await self._past_deadline_is_timeout(run)

    async def _exec(self, argv, *, cwd, env, stdin, timeout: float, cap: int, user) -> ExecResult:
        marker = uuid.uuid4().hex
        out, err = CappedBuffer(cap), CappedBuffer(cap)
        started = time.monotonic()
        trailer = f"{_STATUS_TAG}{marker}:"
        stream = await self.open_exec(
            _reporting_status(argv, trailer), marker=marker, stdin=stdin is not None, env=env,
            cwd=cwd, user=user,
        )  # fmt: skip
        try:
            if stdin is not None:
                await stream.write(stdin.encode() if isinstance(stdin, str) else stdin)
                stream.close_stdin()
            await asyncio.wait_for(_pump(stream, out, err), timeout)
        except ConnectionError as exc:  # the API's connection broke under the exec (service gone)
            raise SandboxError(
                f"podman API connection lost during an exec: {exc or type(exc).__name__}",
                episode_id=self.episode_id,
            ) from exc
        except (TimeoutError, asyncio.CancelledError) as exc:
            stream.close()
            await asyncio.shield(self.kill_marked(marker))
            if isinstance(exc, asyncio.CancelledError):
                raise
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
        reported = err.pop_trailer(trailer.encode())
        code = int(reported) if reported and reported.isdigit() else await self.exit_code(stream.exec_id)
        result = ExecResult(
            code, out.text(), err.text(), time.monotonic() - started, out.truncated or err.truncated
        )
        await self._limits.check(result)
        return result

    async def shell(
        self, script: str, *, timeout: float | None = None, max_output: int | None = None
    ) -> ExecResult:
        """Run ``script`` in the sandbox's persistent shell (cwd and exported variables persist)."""
        run = self._session.run(
            script, timeout=self._bounded(timeout), max_output=max_output or DEFAULT_MAX_OUTPUT
        )
        result = await self._past_deadline_is_timeout(run)
        await self._limits.check(result)
        return result

    async def _past_deadline_is_timeout(self, run: Awaitable[ExecResult]) -> ExecResult:
        """At the wall time the container is removed under a running command; whatever error that
        causes (a timeout, a vanished exec), the caller learns the sandbox's wall time ran out."""
        try:
            return await run
        except (SandboxTimeout, SandboxError):
            self._raise_if_expired()
            raise

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
            try:
                while await stream.read_frame() is not None:
                    pass
            finally:
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
        await self._put_archive(buf.getvalue(), path)

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

        await self._put_archive(await asyncio.to_thread(pack), path)

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

    async def _put_archive(self, data: bytes, path: str) -> None:
        self._check_open()
        container = self.service.client.containers.prepare_model({"Id": self.id})
        if not await self.service.call(container.put_archive, "/", data):
            where = " (the root is read-only: use the workdir, a scratch dir or spec.writable)"
            raise SandboxError(
                f"could not copy files to {path} in the sandbox"
                + (where if self.spec.read_only_root else ""),
                episode_id=self.episode_id,
            )

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
