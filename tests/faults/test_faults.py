"""Faults injected into real runs: each ends in its documented failure class, the store stays valid
JSONL, a resumed run does exactly what is missing, and no sandbox is left behind.

Real parts throughout: podman, the `mini` agent, the interception proxy, the verifiers, the
store. Only the model server is a fake (an OpenAI-compatible server on loopback that misbehaves
on cue), and the faults come from outside, as they would in production: a killed podman service,
a container removed under a running command, a hanging test script, a full disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from kwaigym import policies
from kwaigym.datasets import load_dataset, load_taskdir
from kwaigym.episode import INFRA_ERROR, OK, VERIFIER_ERROR
from kwaigym.policies import Policy
from kwaigym.proxy import ScriptedResponder, UpstreamResponder
from kwaigym.rollout import UpstreamPolicies, rollout
from kwaigym.sandbox import PodmanBackend
from kwaigym.sandbox.base import LABEL_EPISODE
from kwaigym.sandbox.podman import remove_container
from kwaigym.sandbox.reaper import list_sandboxes, owner_id
from kwaigym.sandbox.service import PodmanService
from kwaigym.trajectory import EpisodeStore
from tests.loopback import LoopbackServer, read_json_request

pytestmark = pytest.mark.podman

QUICK = ["organize-inbox", "swe-semver", "codegen-roman-numerals"]


def tasks(*ids: str):
    examples = load_dataset("examples")
    return [examples.get(t) for t in ids]


def stored(out) -> list[dict]:
    """The store's records, after checking every line is one whole JSON object (no torn line)."""
    data = EpisodeStore(out).path.read_bytes()
    assert not data or data.endswith(b"\n"), f"torn last line: {data[-200:]!r}"
    return [json.loads(line) for line in data.splitlines()]


def keys(records) -> list[tuple[str, str, int]]:
    return sorted((r["task_id"], r["scaffold"], r["metadata"]["sample"]) for r in records)


async def leaked(service: PodmanService) -> list[str]:
    """Sandboxes this process still owns (removed here, so a failure does not leak into other tests)."""
    mine = [b for b in await list_sandboxes(service) if b.owner == owner_id()]
    for box in mine:
        await remove_container(service, box.id)
    return [box.episode_id for box in mine]


def hooked(on_call, policy=policies.oracle):
    """``policy`` whose every call first awaits ``on_call(task, ctx)`` (where a test strikes)."""

    def make(task, scaffold):
        inner = policy(task, scaffold)

        async def respond(request, ctx):
            await on_call(task, ctx)
            return await inner.responder.respond(request, ctx)

        return Policy(ScriptedResponder(respond), inner.before_agent)

    return make


async def podman(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "podman", *args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    out, _ = await proc.communicate()
    return out.decode()


# -- 1. the podman API service dies mid-run ---------------------------------------------------------


async def test_podman_service_killed_mid_run(tmp_path, caplog):
    """SIGKILL the private podman service while agents run and start a new one on its socket: the
    episodes it cut end infra_error and are retried to ok; a resumed run finds nothing missing."""
    caplog.set_level(logging.WARNING, logger="kwaigym.episode")
    service = PodmanService()
    restarted: list[asyncio.subprocess.Process] = []
    struck = asyncio.Event()

    async def kill_service(task, ctx):
        if struck.is_set():
            return
        struck.set()
        service._procs[0].send_signal(signal.SIGKILL)  # the service, not the test's process
        sock = service.api_url.removeprefix("unix://")
        await asyncio.sleep(0.5)  # requests in flight now fail; then podman comes back (systemd would)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock)
        restarted.append(
            await asyncio.create_subprocess_exec(
                "podman", "system", "service", "--time=0", f"unix://{sock}",
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip

    todo = tasks(*QUICK)
    started = time.monotonic()
    try:
        async with PodmanBackend(service, reap=False) as backend:
            results = await rollout(todo, ["mini"], hooked(kill_service), concurrency=3, attempts=3,
                                    out=tmp_path, backend=backend, show_progress=False)  # fmt: skip
            left = await leaked(service)
    finally:
        for proc in restarted:
            proc.terminate()
            await proc.wait()
        service.close()
    assert struck.is_set() and time.monotonic() - started < 240  # generous: the machine is shared
    assert [(r.task_id, r.status, r.reward) for r in results if r.status != OK] == []
    cut = [r for r in caplog.records if "podman" in r.getMessage()]
    assert cut, "no episode was cut by the dead service"
    assert max(r.metadata["attempt"] for r in results) >= 2
    assert keys(stored(tmp_path)) == sorted((t.id, "mini", 0) for t in todo)
    assert left == [], f"sandboxes left behind by the dead service: {left}"

    async with PodmanBackend(reap=False) as fresh:  # resume on a new service: nothing is missing
        again = await rollout(todo, ["mini"], "oracle", out=tmp_path, backend=fresh, show_progress=False)
    assert again == [] and keys(stored(tmp_path)) == sorted((t.id, "mini", 0) for t in todo)


# -- 2. a sandbox removed from outside under a running command --------------------------------------


async def test_sandbox_killed_mid_exec(backend, service, tmp_path, caplog):
    """`podman rm -f` one episode's container while its agent runs a long command: that episode
    ends infra_error and is retried to ok; the other finishes undisturbed."""
    caplog.set_level(logging.WARNING, logger="kwaigym.episode")
    victim, other = tasks("organize-inbox", "swe-semver")
    first: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def policy(task, scaffold):
        if task.id != victim.id or first.done():
            return policies.oracle(task, scaffold)

        def respond(request, ctx):
            if not first.done():
                first.set_result(ctx.episode_id)
                return scaffold.shell_call("touch /tmp/fault-armed && sleep 120", "call_long")
            return "unreachable: the sandbox is gone"

        return Policy(ScriptedResponder(respond))

    async def strike():
        episode_id = await first
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ids = (await podman("ps", "-q", "--filter", f"label={LABEL_EPISODE}={episode_id}")).split()
            if ids and (await podman("exec", ids[0], "ls", "/tmp/fault-armed")).strip():
                await podman("rm", "-f", "-t", "0", ids[0])
                return episode_id
            await asyncio.sleep(0.2)
        raise AssertionError("the long command never started")

    striker = asyncio.ensure_future(strike())
    results = await rollout([victim, other], ["mini"], policy, concurrency=2, attempts=2, out=tmp_path,
                            backend=backend, show_progress=False)  # fmt: skip
    killed = await striker
    by_task = {r.task_id: r for r in results}
    assert (by_task[victim.id].status, by_task[victim.id].metadata["attempt"]) == (OK, 2)
    assert (by_task[other.id].status, by_task[other.id].metadata["attempt"]) == (OK, 1)
    assert all(r.reward == 1.0 for r in results)
    assert any(killed in r.getMessage() for r in caplog.records), "the cut attempt was not an infra error"
    assert keys(stored(tmp_path)) == sorted([(other.id, "mini", 0), (victim.id, "mini", 0)])
    assert await leaked(service) == []


# -- 3. the model server misbehaves ---------------------------------------------------------------


class FlakyUpstream(LoopbackServer):
    """An OpenAI-compatible chat server on loopback that answers the first ``failures`` requests
    with ``fault`` (an HTTP status, ``hang`` or ``truncate``), then finishes every episode."""

    def __init__(self, fault: str, failures: int):
        self.fault, self.failures, self.seen = fault, failures, 0
        self.server: asyncio.Server | None = None
        self.release = asyncio.Event()

    async def __aexit__(self, *exc):
        self.release.set()
        await super().__aexit__(*exc)

    async def _handle(self, reader, writer):
        try:
            _, body = await read_json_request(reader)
            self.seen += 1
            fault = self.fault if self.seen <= self.failures else None
            if fault == "hang":
                await self.release.wait()
                return
            payload = {
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "Nothing to change."}}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
            }  # fmt: skip
            status = int(fault) if fault and fault.isdigit() else 200
            data = json.dumps(payload if status == 200 else {"error": {"message": "busy"}}).encode()
            head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n"
            cut = len(data) // 2 if fault == "truncate" else len(data)
            writer.write(head.encode() + b"connection: close\r\n\r\n" + data[:cut])
            await writer.drain()
        finally:
            writer.close()


@pytest.mark.parametrize("fault", ["429", "500", "hang", "truncate"])
async def test_upstream_faults_are_infra_errors_and_retried(fault, backend, service, tmp_path, caplog):
    """An upstream that fails every try of a call (429, 500, no answer in time, a cut body) makes
    the agent fail: that attempt is infra_error (not the policy's agent_error); once the upstream
    recovers, the retried attempt finishes."""
    caplog.set_level(logging.WARNING, logger="kwaigym.episode")
    (task,) = tasks("organize-inbox")
    async with FlakyUpstream(fault, failures=2) as upstream:
        policy = UpstreamPolicies(UpstreamResponder(upstream.url, timeout=1.0, attempts=2))
        results = await rollout([task], ["mini"], policy, attempts=2, out=tmp_path, backend=backend,
                                show_progress=False)  # fmt: skip
    (result,) = results
    assert (result.status, result.reward_valid, result.metadata["attempt"]) == (OK, True, 2), result.error
    cut = [r.getMessage() for r in caplog.records if r.name == "kwaigym.episode"]
    assert cut and "failed 2 times" in cut[0], cut
    assert upstream.seen == 3  # two failed tries of the first attempt's call, then the retried attempt's
    assert keys(stored(tmp_path)) == [(task.id, "mini", 0)]
    assert await leaked(service) == []


async def test_upstream_down_for_good_ends_infra_error(backend, service, tmp_path):
    """When the upstream never recovers the episode ends infra_error (reward not valid), is
    stored as such, and nothing hangs."""
    (task,) = tasks("organize-inbox")
    async with FlakyUpstream("500", failures=10**6) as upstream:
        policy = UpstreamPolicies(UpstreamResponder(upstream.url, timeout=1.0, attempts=2))
        (result,) = await rollout([task], ["mini"], policy, attempts=1, out=tmp_path, backend=backend,
                                  show_progress=False)  # fmt: skip
    assert (result.status, result.reward_valid, result.reward) == (INFRA_ERROR, False, 0.0)
    assert "HTTP 500" in result.error and result.calls[0].status == 502
    assert [r["status"] for r in stored(tmp_path)] == [INFRA_ERROR]
    assert await leaked(service) == []


# -- 4. a verifier that never returns -----------------------------------------------------------------


async def test_hanging_verifier_is_a_verifier_error(backend, service, base_image, tmp_path):
    """A test script that sleeps forever is cut at the verifier's timeout: verifier_error, not
    retried, no hang, and its sandbox removed."""
    root = tmp_path / "tasks" / "hangs"
    (root / "tests").mkdir(parents=True)
    (root / "solution").mkdir()
    (root / "task.toml").write_text(
        f'[agent]\ntimeout_sec = 60\n[environment]\ndocker_image = "{base_image}"\n'
        'workdir = "/workspace"\n[verifier]\ntimeout_sec = 2\nkind = "script"\n'
    )
    (root / "instruction.md").write_text("Do nothing.\n")
    (root / "tests" / "test.sh").write_text("#!/bin/bash\nsleep 100000\n")
    (root / "solution" / "solve.sh").write_text("#!/bin/bash\ntrue\n")
    (task,) = list(load_taskdir(tmp_path / "tasks"))
    out = tmp_path / "out"
    started = time.monotonic()
    (result,) = await rollout([task], ["mini"], "null", attempts=3, out=out, backend=backend,
                              show_progress=False)  # fmt: skip
    assert time.monotonic() - started < 45
    assert (result.status, result.reward_valid, result.metadata["attempt"]) == (VERIFIER_ERROR, False, 1)
    assert "past its timeout of 2s" in result.error
    assert [r["status"] for r in stored(out)] == [VERIFIER_ERROR]
    assert await leaked(service) == []
    assert await rollout([task], ["mini"], "null", out=out, backend=backend, show_progress=False) == []


# -- 5. the results store's disk fills up -----------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs (needs root); unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


async def test_full_results_disk_fails_cleanly_and_resumes(small_disk, backend, service):
    """The store's disk fills mid-run: the run fails with a clear error (no hang, the episodes in
    flight stopped and removed), no half record stays in the file, and after space is freed a
    resumed run does exactly the missing episodes."""
    todo = tasks(*QUICK)
    out = small_disk / "run"
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (64 - 12) * 1024)  # room for about one episode record
    started = time.monotonic()
    with pytest.raises(OSError, match="No space left on device") as info:
        await rollout(todo, ["mini"], "oracle", concurrency=2, out=out, backend=backend, show_progress=False)
    assert time.monotonic() - started < 120
    assert "free space and rerun" in str(info.value)
    first = stored(out) if EpisodeStore(out).path.exists() else []
    assert len(first) < len(todo) and backend.live == 0
    await backend.close()  # waits for the removal of a sandbox whose start the failure cancelled
    assert await leaked(service) == []

    filler.unlink()
    again = await rollout(
        todo, ["mini"], "oracle", concurrency=2, out=out, backend=backend, show_progress=False
    )
    records = stored(out)
    assert len(again) == len(todo) - len(first)
    assert keys(records) == sorted((t.id, "mini", 0) for t in todo)  # each once: none lost, none repeated
    assert all(r["status"] == OK and r["reward"] == 1.0 for r in records)
    assert await leaked(service) == []


async def sandboxes_of(service: PodmanService, pid: int) -> list[str]:
    """Ids of the kwaigym containers whose owner label (host/pid/start) names process ``pid``."""
    return [b.id for b in await list_sandboxes(service) if f"/{pid}/" in b.owner]


async def test_sigterm_mid_eval_removes_its_sandboxes(service, tmp_path):
    """A scheduler's SIGTERM (or ``timeout``) ends ``kwaigym eval`` the way Ctrl-C does: the
    episodes in flight are cancelled and their containers removed before the process exits."""
    cmd = [sys.executable, "-m", "kwaigym.cli", "eval", "--dataset", "drills", "--task", "code-add-plus",
           "--policy", "oracle", "--samples", "32", "--concurrency", "4",
           "--out", str(tmp_path / "run")]  # fmt: skip
    log = tmp_path / "stderr.txt"
    with log.open("w") as err:
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=err)
        seen: list[str] = []
        try:
            deadline = time.monotonic() + 120
            while not seen and time.monotonic() < deadline and proc.returncode is None:
                seen = await sandboxes_of(service, proc.pid)
                await asyncio.sleep(0.2)
            assert seen, f"no sandbox of the eval appeared: {proc.returncode=}"
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 120) == 130, log.read_text()
            assert await sandboxes_of(service, proc.pid) == []
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            for box in await sandboxes_of(service, proc.pid):
                await remove_container(service, box)
