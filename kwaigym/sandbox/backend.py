"""Starting sandboxes on one podman host.

``PodmanBackend`` turns a ``SandboxSpec`` into a running, firewalled
``PodmanSandbox`` and guarantees that every container it starts is removed: when
the sandbox is closed, when creation fails half-way, when the caller is
cancelled, when the backend closes, and (through the reaper, run once at start)
after a crash of an earlier run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator

from kwaigym.errors import ImageError, SandboxError
from kwaigym.sandbox import network, reaper, wire
from kwaigym.sandbox.base import LABEL, LABEL_DEADLINE, LABEL_EPISODE, LABEL_OWNER, SCRATCH_DIRS, SandboxSpec
from kwaigym.sandbox.podman import PodmanSandbox, remove_container
from kwaigym.sandbox.reaper import owner_id
from kwaigym.sandbox.service import PodmanService

log = logging.getLogger(__name__)


_GRACE_S = 30  # a sandbox's PID 1 outlives the in-process wall-time timer by this much

# PID 1 of every sandbox: a shell that ignores every signal it can (the kernel then drops them when
# they come from inside the sandbox, SIGKILL and SIGSTOP included, so no agent can end its own
# sandbox), reaps orphans in ``wait`` (dash's and bash's wait reap any child), and exits at the
# deadline, also when the host process that started it died. It forks only to start one sleep
# until the deadline, and again when that sleep is killed; a fork refused at the pids limit is
# retried, never taken for the deadline (the shell would otherwise end and take the sandbox along).
_KEEPER = (
    'trap "" HUP INT QUIT PIPE ALRM TERM USR1 USR2; end=$(( $(date +%s) + {seconds} )); '
    'while :; do now=$(date +%s) || continue; [ "$now" -lt "$end" ] || break; '
    "sleep $((end - now)) & wait; done"
)


def _tmpfs(destination: str, size_mb: int) -> dict:
    """A size-bounded tmpfs at ``destination``, seeded with the image's content there."""
    return {"destination": destination, "type": "tmpfs", "source": "tmpfs",
            "options": [f"size={size_mb}m", "tmpcopyup", "exec"]}  # fmt: skip


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
    if res.disk_mb is not None or spec.read_only_root:
        mounts.append(_tmpfs(spec.workdir, res.disk_mb or res.memory_mb))
    if spec.read_only_root:
        taken = {m["destination"].rstrip("/") for m in mounts}
        for path in dict.fromkeys(p.rstrip("/") for p in (*SCRATCH_DIRS, *spec.writable)):
            if path not in taken:
                mounts.append(_tmpfs(path, res.scratch_mb))
    return {
        "name": name,
        "image": spec.image,
        "entrypoint": ["/bin/sh", "-c"],
        "command": [_KEEPER.format(seconds=int(res.wall_time_s) + _GRACE_S)],
        "remove": True,
        "read_only_filesystem": spec.read_only_root,
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


class PodmanBackend:
    """Creates sandboxes on one podman service (a private local one by default).

    Args:
        service: the podman API to use; default: a private service started on demand.
        url: shorthand for ``PodmanService(url)`` (``tcp://``, ``ssh://`` or ``unix://``).
        reap: remove leftovers of crashed runs when the backend starts.
    """

    def __init__(self, service: PodmanService | None = None, *, url: str | None = None, reap: bool = True):
        self._owns_service = service is None
        self.service = service or PodmanService(url)
        self._reap = reap
        self._owner = owner_id()
        self._live: dict[str, PodmanSandbox] = {}
        self._cleanups: set[asyncio.Future] = set()
        self._started = False

    @property
    def live(self) -> int:
        """Number of sandboxes open on this backend."""
        return len(self._live)

    async def start(self) -> PodmanBackend:
        if not self._started:
            await self.service.start()
            self._started = True
            if self._reap:
                removed = await reaper.prune(self.service)
                if removed:
                    log.warning("removed %d sandboxes left behind by crashed runs", len(removed))
        return self

    async def create(self, spec: SandboxSpec) -> PodmanSandbox:
        """Create, start and firewall a sandbox; on any failure or cancellation nothing is left behind.

        The podman calls run in a shielded task: cancelling the caller cannot cut a create request
        short after the server acted on it. A sandbox finished after its caller was cancelled is
        removed at once.
        """
        await self.start()
        task = asyncio.ensure_future(self._start(spec))
        try:
            sandbox = await asyncio.shield(task)
        except asyncio.CancelledError:
            cleanup = asyncio.ensure_future(self._discard(task))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            raise
        self._live[sandbox.id] = sandbox
        return sandbox

    @staticmethod
    async def _discard(task: asyncio.Future) -> None:
        """Remove the sandbox of a start whose caller was cancelled, once the start is done."""
        try:
            sandbox = await task
        except BaseException:  # noqa: BLE001 - a failed start already removed its container
            return
        await sandbox.close()

    async def _start(self, spec: SandboxSpec) -> PodmanSandbox:
        name = f"kwaigym-{_slug(spec.episode_id)}-{uuid.uuid4().hex[:8]}"
        body = container_spec(spec, name=name, owner=self._owner)
        try:
            try:
                container_id = (await wire.request(self.service, "POST", "/containers/create", body))["Id"]
            except SandboxError as exc:
                if not any(p in exc.message for p in ("image not known", "no such image")):
                    raise
                raise ImageError(
                    f"image {spec.image!r} is not on the podman host; build or pull it first "
                    "(`kwaigym images build DIR`, `kwaigym images bootstrap`)",
                    episode_id=spec.episode_id,
                ) from None
            await wire.request(self.service, "POST", f"/containers/{container_id}/start")
            if spec.network.mode == "proxy":
                info = await wire.request(self.service, "GET", f"/containers/{container_id}/json")
                await network.apply_policy(spec.network, info["State"]["Pid"], local=self.service.is_local)
            return PodmanSandbox(self.service, spec, container_id)
        except BaseException as exc:
            await remove_container(self.service, name)  # by name: also when the create answer was lost
            if isinstance(exc, SandboxError) and not isinstance(exc, ImageError) and exc.episode_id is None:
                raise SandboxError(
                    f"could not start the sandbox: {exc.message}", episode_id=spec.episode_id
                ) from exc
            raise

    async def destroy(self, sandbox: PodmanSandbox) -> None:
        """Close ``sandbox`` and forget it."""
        try:
            await sandbox.close()
        finally:
            self._live.pop(sandbox.id, None)

    @contextlib.asynccontextmanager
    async def sandbox(self, spec: SandboxSpec) -> AsyncIterator[PodmanSandbox]:
        """``async with backend.sandbox(spec) as sb:`` - removed on exit, also on error or cancel."""
        sandbox = await self.create(spec)
        try:
            yield sandbox
        finally:
            await asyncio.shield(self.destroy(sandbox))

    async def close(self) -> None:
        """Remove every sandbox still open, then stop the service if this backend started it."""
        await asyncio.gather(*(self.destroy(sb) for sb in list(self._live.values())), return_exceptions=True)
        await asyncio.gather(*self._cleanups, return_exceptions=True)
        if self._owns_service:
            await self.service.aclose()
        self._started = False

    async def __aenter__(self) -> PodmanBackend:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:40] or "episode"
