"""Telling a limit-caused failure from an ordinary one.

A command that fails because the sandbox hit a cgroup limit should raise its typed
error (``SandboxOOM``, ``SandboxPidsExceeded``, ``SandboxDiskFull``) rather than look
like any non-zero exit. The kernel's counters decide: OOM kills from the memory
controller and refused forks from the pids controller, compared with the last values
seen; free space decides for a bounded workdir. Reading them costs a little, so it is
done only for failures that look like a limit (exit code >= 126 or a telltale message).
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import TYPE_CHECKING

from kwaigym.errors import SandboxDiskFull, SandboxOOM, SandboxPidsExceeded
from kwaigym.sandbox import wire
from kwaigym.sandbox.base import ExecResult

if TYPE_CHECKING:
    from kwaigym.sandbox.podman import PodmanSandbox

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


_LIMIT_HINTS = (
    "fork",
    "Resource temporarily unavailable",
    "No space left",
    "Cannot allocate memory",
    "Killed",
)


class LimitWatch:
    """Remembers a sandbox's limit counters and raises when a failed command moved one."""

    def __init__(self, sandbox: PodmanSandbox):
        self._sandbox = sandbox
        self._spec = sandbox.spec
        self._seen: dict[str, int] = {}
        self._cgroup: str | None = None

    async def check(self, result: ExecResult) -> None:
        """Turn a failure caused by a cgroup limit into its typed error (counters decide, hints gate)."""
        if result.exit_code == 0:
            return
        if result.exit_code < 126 and not any(h in result.output for h in _LIMIT_HINTS):
            return
        counters = await self._counters_now()
        where = {"result": result, "episode_id": self._sandbox.episode_id}
        grew = {k for k, v in counters.items() if isinstance(v, int) and v > self._seen.get(k, 0)}
        self._seen.update({k: v for k, v in counters.items() if isinstance(v, int)})
        if "oom_kill" in grew:
            limit = self._spec.resources.memory_mb
            raise SandboxOOM(f"a process was killed for exceeding the memory limit of {limit} MB", **where)
        if "pids_max" in grew:
            raise SandboxPidsExceeded(
                f"a fork failed at the limit of {self._spec.resources.pids} processes", **where
            )
        avail = counters.get("disk_avail_kb")
        if self._spec.resources.disk_mb and avail is not None and avail < 256:
            bound = self._spec.resources.disk_mb
            raise SandboxDiskFull(f"the workdir {self._spec.workdir} is full (bound: {bound} MB)", **where)

    async def _counters_now(self) -> dict[str, int]:
        """OOM kills and failed forks so far (and free workdir space when bounded).

        On a local service the cgroup files are read from the host: a sandbox at its pids limit may
        have no slot left for one more process. A remote host is asked from inside the sandbox.
        """
        counters: dict[str, int] = {}
        if self._sandbox.service.is_local:
            if self._cgroup is None:
                info = await wire.request(
                    self._sandbox.service, "GET", f"/containers/{self._sandbox.id}/json"
                )
                self._cgroup = info["State"].get("CgroupPath") or ""
            counters = await asyncio.to_thread(_host_counters, self._cgroup)
        disk = _DISK_PROBE.format(workdir=self._spec.workdir) if self._spec.resources.disk_mb else ""
        if not counters or disk:
            probe = await self._sandbox.exec_raw(
                "; ".join(p for p in ("" if counters else _LIMIT_PROBE, disk) if p)
            )
            counters = counters or _parse_counters(probe)
            df = probe.strip().splitlines()[-1].split() if disk and probe.strip() else []
            if len(df) >= 4 and df[3].isdigit():
                counters["disk_avail_kb"] = int(df[3])
        return counters
