"""Lifecycle: files in and out, cleanup on cancel, the reaper, the pool, service URLs and the CLI."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from kwaigym.errors import ConfigError, PodmanUnavailable, SandboxGone
from kwaigym.sandbox import PodmanBackend, PodmanService, SandboxPool, wire
from kwaigym.sandbox.backend import container_spec
from kwaigym.sandbox.reaper import classify, list_sandboxes, owner_alive, owner_id, prune
from tests.conftest import episode

pytestmark = pytest.mark.podman


async def _ids(service) -> set[str]:
    return {b.id for b in await list_sandboxes(service)}


async def _episode_ids(service) -> set[str]:
    return {b.episode_id for b in await list_sandboxes(service)}


async def test_binary_file_round_trip(backend, spec):
    """Every byte value survives put_file/get_file; parents are created; mode is kept."""
    data = os.urandom(1 << 20) + bytes(range(256))
    async with backend.sandbox(spec()) as sb:
        await sb.put_file("deep/er/blob.bin", data, mode=0o750)
        assert await sb.get_file("/workspace/deep/er/blob.bin") == data
        stat = await sb.exec("stat -c %a deep/er/blob.bin")
        with pytest.raises(FileNotFoundError, match=sb.episode_id):
            await sb.get_file("/no/such/file")
        with pytest.raises(IsADirectoryError):
            await sb.get_file("/workspace/deep")
    assert stat.stdout.strip() == "750"


async def test_directory_round_trip(backend, spec, tmp_path):
    """A directory tree with binary files and a symlink goes in and comes back equal."""
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "bin").write_bytes(bytes(range(256)))
    (src / "top.txt").write_text("top\n")
    (src / "link").symlink_to("top.txt")
    async with backend.sandbox(spec()) as sb:
        await sb.put_dir(str(src), "/data/in")
        listing = await sb.exec("cd /data/in && find . | sort && cat link")
        await sb.get_dir("/data/in", str(tmp_path / "back"))
        with pytest.raises(ConfigError):
            await sb.put_dir(str(tmp_path / "missing"), "/x")
    assert listing.stdout.split() == [".", "./a", "./a/b", "./a/b/bin", "./link", "./top.txt", "top"]
    back = tmp_path / "back"
    assert (back / "a" / "b" / "bin").read_bytes() == bytes(range(256))
    assert os.readlink(back / "link") == "top.txt"


async def test_cancel_mid_exec_leaves_no_container(backend, spec, service):
    """Cancelling a task inside `async with backend.sandbox()` removes the container."""
    the_spec = spec()

    async def work():
        async with backend.sandbox(the_spec) as sb:
            await sb.exec("sleep 100")

    task = asyncio.create_task(work())
    await asyncio.sleep(1.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert the_spec.episode_id not in await _episode_ids(service)
    assert backend.live == 0


async def test_cancel_during_create_leaves_no_container(backend, spec, service):
    """Cancelling while the container is being created and started leaves nothing behind."""
    specs = [spec() for _ in range(6)]
    for the_spec, delay in zip(specs, (0.0, 0.02, 0.05, 0.1, 0.2, 0.4), strict=True):
        task = asyncio.create_task(backend.create(the_spec))
        await asyncio.sleep(delay)
        task.cancel()
        try:
            sb = await task
        except asyncio.CancelledError:
            continue
        await backend.destroy(sb)  # creation won the race: the normal path cleans up
    await backend.close()  # waits for the removal of sandboxes finished after their caller left
    assert not await _episode_ids(service) & {x.episode_id for x in specs}
    assert backend.live == 0


async def test_container_is_labelled_with_episode(backend, spec, service):
    """Containers carry the kwaigym label and their episode id, so they can be found and reaped."""
    async with backend.sandbox(spec()) as sb:
        boxes = {b.id: b for b in await list_sandboxes(service)}
        assert boxes[sb.id].episode_id == sb.episode_id
        assert boxes[sb.id].reason is None  # its owner (this process) is alive
    assert sb.id not in await _ids(service)
    with pytest.raises(SandboxGone):
        await sb.exec("true")


async def test_reaper_removes_containers_of_dead_owners(service, base_image):
    """A container whose owner process is gone is a leftover that prune removes; live ones stay."""
    from kwaigym.sandbox import SandboxSpec

    orphan_spec = SandboxSpec(image=base_image, episode_id=episode("orphan"))
    body = container_spec(
        orphan_spec, name=f"kwaigym-orphan-{os.getpid()}", owner=f"{os.uname().nodename}/999999/1"
    )
    orphan = (await wire.request(service, "POST", "/containers/create", body))["Id"]
    async with (
        PodmanBackend(service, reap=False) as be,
        be.sandbox(SandboxSpec(image=base_image, episode_id=episode())) as live,
    ):
        removed = {b.id for b in await prune(service)}
        remaining = await _ids(service)
    assert orphan in removed and orphan not in remaining
    assert live.id not in removed


def test_leftover_rules():
    """Deadline passed or owner gone make a leftover; another host's live owner does not."""
    me = owner_id().split("/")[2]
    here = os.uname().nodename
    assert owner_alive(f"{here}/{os.getpid()}/{me}")
    assert not owner_alive(f"{here}/{os.getpid()}/{int(me) + 1}")  # pid reused by another process
    assert not owner_alive("garbage")
    assert owner_alive("other-host/1/1")
    future = str(int(time.time()) + 100)
    assert classify({"io.kwaigym.deadline": "1", "io.kwaigym.owner": "other-host/1/1"}) == "deadline passed"
    assert classify({"io.kwaigym.deadline": future, "io.kwaigym.owner": "other-host/1/1"}) is None


async def test_pool_bounds_live_sandboxes(service, spec):
    """A pool of size 2 never runs more than 2 sandboxes, even with 5 waiting."""
    peak = 0
    backend = PodmanBackend(service, reap=False)

    async def one():
        nonlocal peak
        async with pool.sandbox(spec()) as sb:
            peak = max(peak, backend.live)
            await sb.shell("sleep 0.3")

    async with SandboxPool([backend], size=2) as pool:
        await asyncio.gather(*(one() for _ in range(5)))
        assert backend.live == 0
    assert peak == 2
    with pytest.raises(ConfigError):
        SandboxPool([backend], size=0)


async def test_tcp_service_url(spec):
    """A backend on a `tcp://` podman service (as for a remote host) runs sandboxes the same way."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(  # noqa: ASYNC220 - a background server, started once
        ["podman", "system", "service", "--time=0", f"tcp://127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with PodmanBackend(url=f"tcp://127.0.0.1:{port}", reap=False) as be:
            async with be.sandbox(spec()) as sb:
                assert (await sb.shell("echo over-tcp")).stdout == "over-tcp\n"
            from kwaigym.sandbox import NetworkPolicy

            with pytest.raises(ConfigError, match="on this machine"):
                await be.create(spec(network=NetworkPolicy(mode="proxy", proxy_port=9)))
            assert be.live == 0
    finally:
        proc.terminate()
        proc.wait(10)


def test_bad_service_url_is_a_config_error():
    """An unknown URL scheme says which forms are understood."""
    with pytest.raises(ConfigError, match="tcp://host:port"):
        PodmanService("http://example.invalid").start_sync()


def test_private_service_stops_on_close():
    """The private service process and its socket directory are gone after close()."""
    svc = PodmanService().start_sync()
    proc, tmpdir = svc._procs[0], svc._tmpdir
    svc.close()
    assert proc.poll() is not None and not os.path.exists(tmpdir)


def test_cli_run_list_prune():
    """`kwaigym sandbox run` runs a command in a fresh sandbox and removes it; prune reports."""
    cli = [sys.executable, "-m", "kwaigym.cli"]
    run = subprocess.run([*cli, "sandbox", "run", "echo from-cli; exit 4"], capture_output=True, text=True)
    assert (run.returncode, run.stdout) == (4, "from-cli\n")
    pruned = subprocess.run([*cli, "sandbox", "prune"], capture_output=True, text=True, check=True)
    assert pruned.stdout.startswith("removed ")
    bad = subprocess.run([*cli, "--url", "ftp://nowhere", "sandbox", "list"], capture_output=True, text=True)
    assert bad.returncode == 1 and "not understood" in bad.stderr


@pytest.fixture
def sshd(tmp_path):
    """An sshd on 127.0.0.1 that accepts one generated key, for testing ssh:// service URLs."""
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd_bin):
        pytest.skip("openssh-server is not installed (the Makefile's test setup installs it)")
    for name in ("host", "client"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True
        )
    (tmp_path / "authorized_keys").write_text((tmp_path / "client.pub").read_text())
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = {
        "ListenAddress": f"127.0.0.1:{port}",
        "HostKey": tmp_path / "host",
        "AuthorizedKeysFile": tmp_path / "authorized_keys",
        "PermitRootLogin": "prohibit-password",
        "StrictModes": "no",
        "UsePAM": "no",
        "PidFile": "none",
    }
    args = [a for k, v in options.items() for a in ("-o", f"{k}={v}")]
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", "/dev/null", *args], stderr=subprocess.DEVNULL)
    yield port, str(tmp_path / "client")
    proc.terminate()
    proc.wait(10)


async def test_ssh_service_url(sshd, spec, tmp_path):
    """A backend on `ssh://user@host:port/socket` tunnels to a podman socket and runs sandboxes."""
    port, key = sshd
    remote_sock = tmp_path / "remote-podman.sock"
    service_proc = subprocess.Popen(  # noqa: ASYNC220 - the "remote" podman service, started once
        ["podman", "system", "service", "--time=0", f"unix://{remote_sock}"], stderr=subprocess.DEVNULL
    )
    quiet = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    try:
        service = PodmanService(f"ssh://root@127.0.0.1:{port}{remote_sock}", identity=key, ssh_options=quiet)
        async with PodmanBackend(service, reap=False) as be, be.sandbox(spec()) as sb:
            assert (await sb.exec("echo over-ssh")).stdout == "over-ssh\n"
            assert (await sb.shell("echo session-over-ssh")).stdout == "session-over-ssh\n"
        await service.aclose()
        denied = PodmanService(f"ssh://root@127.0.0.1:{port}{remote_sock}", ssh_options=quiet)
        with pytest.raises(PodmanUnavailable, match="exited early"):
            await denied.start()
    finally:
        service_proc.terminate()
        service_proc.wait(10)
