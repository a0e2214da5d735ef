"""A read-only root: the image stays as built, writes go to bounded tmpfs copies, PID 1 survives the agent."""

from __future__ import annotations

import pytest

from kwaigym.errors import ConfigError
from kwaigym.sandbox import Resources, SandboxSpec

pytestmark = pytest.mark.podman


async def test_image_is_read_only_and_scratch_is_bounded(backend, spec):
    """System files cannot be replaced; workdir, /tmp, HOME and declared dirs are writable, seeded
    from the image, and each bounded (the workdir by disk_mb, the rest by scratch_mb)."""
    sandbox_spec = spec(read_only_root=True, writable=("/etc/cron.d",),
                        resources=Resources(disk_mb=24, scratch_mb=8))  # fmt: skip
    async with backend.sandbox(sandbox_spec) as sb:
        swap = await sb.exec("cp /bin/true /usr/bin/bash 2>&1; echo > /etc/passwd 2>&1; mkdir /opt/x 2>&1")
        assert swap.output.count("Read-only file system") == 3, swap.output
        seeded = await sb.exec("test -s /root/.bashrc && test -d /etc/cron.d && echo seeded")
        assert seeded.stdout == "seeded\n"
        wrote = await sb.exec("touch /tmp/a /var/tmp/a /root/a /etc/cron.d/a /run/a a && echo wrote")
        assert wrote.stdout == "wrote\n", wrote.output
        tmp_full = await sb.exec("dd if=/dev/zero of=/tmp/fill bs=1M count=16 2>&1; rm -f /tmp/fill")
        assert "No space left on device" in tmp_full.output
        sizes = await sb.exec("df -Pk /tmp . | tail -n 2")
        kb = [int(line.split()[1]) for line in sizes.stdout.splitlines()]
        assert kb == [8 * 1024, 24 * 1024], sizes.stdout


async def test_workdir_of_a_read_only_root_is_bounded_by_memory(backend, spec):
    """Without disk_mb the workdir is still writable, bounded by the memory limit."""
    async with backend.sandbox(spec(read_only_root=True, resources=Resources(memory_mb=96))) as sb:
        result = await sb.exec("touch made && df -Pk . | tail -n 1")
    assert result.ok and int(result.stdout.split()[1]) == 96 * 1024


async def test_agent_cannot_end_its_own_sandbox(backend, spec):
    """Every signal an agent (root) sends PID 1 is dropped; a killed keeper sleep is restarted."""
    async with backend.sandbox(spec()) as sb:
        result = await sb.exec("for s in TERM INT HUP QUIT USR1 KILL STOP; do kill -$s 1; done; "
                               "pkill -9 -x sleep; sleep 1; echo survived")  # fmt: skip
        assert result.stdout == "survived\n"
        assert (await sb.exec("echo still here")).stdout == "still here\n"


def test_writable_dirs_must_be_absolute():
    for bad in ("etc/cron.d", "/", ""):
        with pytest.raises(ConfigError, match="writable directories must be absolute"):
            SandboxSpec(image="x", episode_id="ep-1", writable=(bad,))


async def test_copy_to_a_read_only_place_names_the_path(backend, spec):
    """put_file outside the writable directories fails with an error naming the path and the fix."""
    from kwaigym.errors import SandboxError

    async with backend.sandbox(spec(read_only_root=True)) as sb:
        with pytest.raises(SandboxError, match=r"/opt/x\.txt .*read-only.*spec\.writable"):
            await sb.put_file("/opt/x.txt", b"x")
        await sb.put_file("/tmp/deep/x.txt", b"x")  # parents are created in a scratch dir
        assert await sb.get_file("/tmp/deep/x.txt") == b"x"
