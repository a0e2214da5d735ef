"""Resource limits are enforced by the runtime and reported as typed errors, never as hangs."""

from __future__ import annotations

import asyncio
import time

import pytest

from kwaigym.errors import (
    ConfigError,
    ImageError,
    SandboxDiskFull,
    SandboxGone,
    SandboxOOM,
    SandboxPidsExceeded,
    SandboxTimeout,
)
from kwaigym.sandbox import NetworkPolicy, Resources

pytestmark = pytest.mark.podman


async def test_memory_bomb_is_oom_killed(backend, spec):
    """Allocating past the memory limit kills the process (SandboxOOM); the sandbox lives on."""
    async with backend.sandbox(spec(resources=Resources(memory_mb=64))) as sb:
        with pytest.raises(SandboxOOM) as info:
            await sb.exec("python3 -c 'a = bytearray(512 * 1024 * 1024); print(len(a))'")
        assert info.value.result.exit_code == 137
        assert (await sb.exec("echo alive")).stdout == "alive\n"


async def test_fork_bomb_hits_the_pids_limit(backend, spec):
    """Forking past the pids limit fails (SandboxPidsExceeded) instead of taking the host down."""
    async with backend.sandbox(spec(resources=Resources(pids=32))) as sb:
        with pytest.raises(SandboxPidsExceeded) as info:
            await sb.exec("for i in $(seq 100); do sleep 2 & done; wait", timeout=20)
        assert info.value.episode_id == sb.episode_id
        await asyncio.sleep(2.5)  # the bomb's sleeps end and free their slots
        assert (await sb.exec("echo alive")).stdout == "alive\n"


async def test_disk_fill_hits_the_workdir_bound(backend, spec):
    """Writing past the workdir's size bound fails with SandboxDiskFull."""
    async with backend.sandbox(spec(resources=Resources(disk_mb=16))) as sb:
        with pytest.raises(SandboxDiskFull):
            await sb.exec("dd if=/dev/zero of=big bs=1M count=64")
        assert (await sb.exec("rm big && echo freed")).stdout == "freed\n"


async def test_workdir_bound_keeps_image_content(backend, spec, base_image):
    """The bounded workdir is seeded from the image (copy-up), not empty."""
    async with backend.sandbox(spec(workdir="/etc", resources=Resources(disk_mb=64))) as sb:
        result = await sb.exec("test -s /etc/debian_version && df -P /etc | tail -n 1")
    assert result.ok and "tmpfs" in result.stdout


async def test_cpu_quota_is_applied(backend, spec):
    """The cgroup carries the requested CPU quota."""
    async with backend.sandbox(spec(resources=Resources(cpus=0.5))) as sb:
        quota = await sb.exec(
            "cat /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us"
        )
    assert quota.stdout.split()[0] == "50000"


async def test_wall_time_ends_the_sandbox(backend, spec, service):
    """Past its wall time the sandbox is removed and a running command ends with SandboxTimeout."""
    from kwaigym.sandbox.reaper import list_sandboxes

    sb = await backend.create(spec(resources=Resources(wall_time_s=2)))
    started = time.monotonic()
    with pytest.raises(SandboxTimeout, match="wall time"):
        await sb.exec("sleep 30")
    assert time.monotonic() - started < 6
    with pytest.raises((SandboxTimeout, SandboxGone)):
        await sb.exec("true")
    await backend.destroy(sb)
    assert sb.id not in {b.id for b in await list_sandboxes(service)}


def test_bad_limits_are_config_errors():
    """Nonsense limits and a proxy policy without a port are refused up front."""
    with pytest.raises(ConfigError, match="memory_mb"):
        Resources(memory_mb=0)
    with pytest.raises(ConfigError, match="proxy_port"):
        NetworkPolicy(mode="proxy")
    with pytest.raises(ConfigError, match="TCP port"):
        NetworkPolicy(mode="proxy", proxy_port=70000)
    with pytest.raises(ValueError):
        NetworkPolicy(mode="internet")


async def test_missing_image_names_the_episode(backend, spec):
    """An image that is not on the host gives an ImageError naming the episode and what to do."""
    with pytest.raises(ImageError) as info:
        await backend.create(spec(image="localhost/kwaigym/no-such-image:1"))
    assert info.value.episode_id and "kwaigym images" in str(info.value)
    assert backend.live == 0
