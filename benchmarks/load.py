"""Load: 256 episodes of the `mini` agent at once on one host; none misrouted, none leaked, memory bounded.

Every episode gets its own tiny task, written on the fly in the Harbor layout: "write your token
into /workspace/token.txt", where the token names the task. Its scripted policy answers the first
main call with a bash tool call writing that token and the second with a final message naming it;
the task's verifier rewards exactly that file content. So an answer routed to the wrong episode
shows twice: in the call records (a request or answer carrying another episode's token, or a call
filed under another episode) and in the file the verifier reads. The tasks share one image (the
same build context) and all run at once: the rollout runner at concurrency = episodes, one
attempt each (a retry would hide a failure under load).

Measured: episodes, completed (status ok, reward 1), misrouted (episodes with any sign of another
episode's traffic), leaked (this run's containers still listed once the runner has returned; they
are removed afterwards), the peak RSS of this process (ru_maxrss: the proxy and the runner live
here), the memory of the podman side (the service with its slirp4netns children, plus this run's
conmon processes and their cleanup commands; summed RSS counts shared pages once per process,
summed PSS splits them) sampled every second, both at 25/50/75/100% of finished episodes, the
peak open files and process counts, wall time and episodes per minute. The last line of stdout
is one JSON object.
Usage: python benchmarks/load.py [--quick] [--episodes N] [--attempts N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

from kwaigym.chat.types import ChatRequest, ToolResult
from kwaigym.datasets.taskdir import load_taskdir
from kwaigym.episode import OK, EpisodeResult
from kwaigym.policies import Policy
from kwaigym.proxy.responders import CallContext, ScriptedResponder
from kwaigym.proxy.tagging import AUXILIARY
from kwaigym.rollout import rollout
from kwaigym.sandbox import PodmanBackend
from kwaigym.sandbox.images import ImageStore
from kwaigym.sandbox.podman import remove_container
from kwaigym.sandbox.reaper import list_sandboxes
from kwaigym.task import Task
from kwaigym.task_sandbox import task_image

EPISODES, QUICK_EPISODES = 256, 32
TOKEN = re.compile(r"KWLOAD_[A-Za-z0-9_-]+")
TARGET_FILE = "/workspace/token.txt"
_HEX_ID = re.compile(r"[0-9a-f]{7,64}")  # container and exec ids: failures group by their kind
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20

TASK_TOML = """version = "1.0"

[agent]
timeout_sec = 900

[environment]
cpus = 1
memory_mb = 256
workdir = "/workspace"

[verifier]
timeout_sec = 120
kind = "script"
"""
DOCKERFILE = "ARG KWAIGYM_BASE_IMAGE\nFROM ${KWAIGYM_BASE_IMAGE}\nWORKDIR /workspace\n"
TEST_SH = """#!/bin/bash
# Reward 1 iff {target} holds exactly this task's token.
mkdir -p /logs/verifier
found="$(cat {target} 2>/dev/null)"
echo "found: $found"
[ "$found" = "{token}" ] && echo 1 > /logs/verifier/reward.txt || echo 0 > /logs/verifier/reward.txt
"""


# --- the workload: tasks, policy, check ------------------------------------------------------------


def token_of(task_id: str) -> str:
    """The token an episode of ``task_id`` must write (unique to the task)."""
    return f"KWLOAD_{task_id}"


def make_tasks(root: Path, count: int, prefix: str) -> list[Task]:
    """``count`` one-step tasks ``{prefix}-NNNN`` under ``root``, sharing one build context."""
    for i in range(count):
        task_dir = root / f"{prefix}-{i:04d}"
        token = token_of(task_dir.name)
        (task_dir / "environment").mkdir(parents=True)
        (task_dir / "tests").mkdir()
        (task_dir / "task.toml").write_text(TASK_TOML)
        (task_dir / "environment" / "Dockerfile").write_text(DOCKERFILE)
        (task_dir / "instruction.md").write_text(
            f"Write exactly `{token}` (no newline) into {TARGET_FILE}, then say that you are done.\n"
        )
        (task_dir / "tests" / "test.sh").write_text(TEST_SH.format(target=TARGET_FILE, token=token))
    return list(load_taskdir(root))


def policy(task: Task, scaffold) -> Policy:
    """Write the task's token with the scaffold's shell tool, then finish naming it."""
    from scaffolds.base import finish_call

    token = token_of(task.id)

    def respond(request: ChatRequest, ctx: CallContext):
        if ctx.kind == AUXILIARY:
            return "ok"
        if any(isinstance(p, ToolResult) for m in request.messages for p in m.content):
            return finish_call(scaffold, f"wrote {token}", f"call_done_{task.id}")
        return scaffold.shell_call(f"printf %s {token} > {TARGET_FILE}", f"call_write_{task.id}")

    return Policy(ScriptedResponder(respond))


def misrouting(result: EpisodeResult) -> list[str]:
    """Signs that another episode's traffic reached this one; ``[]`` when there are none.

    Every call must be filed under this episode, its request must carry this episode's token and
    no other (the instruction is in every request), and an answered call's answer must too; the
    agent's final message and the file the verifier read must not carry another token.
    """
    own, problems = token_of(result.task_id), []
    for call in result.calls:
        if call.episode_id != result.episode_id:
            problems.append(f"call {call.call_id} is filed under episode {call.episode_id}")
        if call.request_raw is not None:
            seen = set(TOKEN.findall(json.dumps(call.request_raw, default=str)))
            if seen != {own}:
                problems.append(f"call {call.call_id}: the request carries {sorted(seen)}")
        if call.status == 200:
            answered = set(TOKEN.findall(json.dumps(call.response_raw, default=str)))
            if answered != {own}:
                problems.append(f"call {call.call_id}: the answer carries {sorted(answered)}")
    verifier_output = result.verifier.details.get("output_tail", "") if result.verifier else ""
    for where, text in (("final message", result.final_message), ("verifier output", verifier_output)):
        if foreign := set(TOKEN.findall(text)) - {own}:
            problems.append(f"the {where} carries {sorted(foreign)}")
    return problems


def completed(result: EpisodeResult) -> bool:
    return result.status == OK and result.reward_valid and result.reward == 1.0


# --- memory and process sampling -------------------------------------------------------------------


def _self_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE_MB


def _processes() -> dict[int, tuple[str, int, float]]:
    """pid -> (comm, ppid, rss MB) of every process now."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    head, _, rest = f.read().rpartition(")")
            except OSError:
                continue
            fields = rest.split()
            found[int(name)] = (head.partition("(")[2], int(fields[1]), int(fields[21]) * _PAGE_MB)
    return found


def _pss_mb(pid: int) -> float:
    """Proportional set size (shared pages split among their users); 0 for a process gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next((int(line.split()[1]) / 1024 for line in f if line.startswith("Pss:")), 0.0)
    except OSError:
        return 0.0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


PEAKS = ("podman_rss_mb", "podman_pss_mb", "fds", "podman_procs", "conmon", "slirp4netns")


class Sampler:
    """Samples RSS, open files and processes every ``interval`` seconds in a thread.

    The podman side: the service whose command line names ``socket`` and its descendants
    (slirp4netns runs under it), plus each conmon whose command line names a container of this run
    (``kwaigym-{prefix}``) with its conmon and podman descendants (exec monitors, cleanup commands).
    """

    def __init__(self, socket: str, prefix: str, interval: float = 1.0):
        self.socket, self.marker, self.interval = socket, f"-n kwaigym-{prefix}", interval
        self.peak = dict.fromkeys(PEAKS, 0)
        self.podman_rss_mb = 0.0
        self._service: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)

    def _sample(self) -> None:
        procs = _processes()
        if self._service not in procs:
            self._service = next((p for p, (c, _, _) in procs.items() if c == "podman"
                                  and self.socket in _cmdline(p)), None)  # fmt: skip
        roots = {self._service} | {
            p for p, (c, _, _) in procs.items() if c == "conmon" and self.marker in _cmdline(p)
        }
        children: dict[int, list[int]] = {}
        for pid, (_, ppid, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        ours, todo = set(), [r for r in roots if r is not None]
        while todo:
            pid = todo.pop()
            ours.add(pid)
            keep = ("podman", "conmon", "slirp4netns") if pid != self._service else None
            todo += [c for c in children.get(pid, ()) if keep is None or procs[c][0] in keep]
        counts = Counter(procs[p][0] for p in ours)
        self.podman_rss_mb = sum(procs[p][2] for p in ours)
        now = {"podman_rss_mb": self.podman_rss_mb, "podman_pss_mb": sum(map(_pss_mb, ours)),
               "fds": len(os.listdir("/proc/self/fd")), "podman_procs": len(ours), "conmon": counts["conmon"],
               "slirp4netns": counts["slirp4netns"]}  # fmt: skip
        self.peak = {k: max(v, now[k]) for k, v in self.peak.items()}

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._sample()
            except (OSError, ValueError, IndexError):  # a process that vanished mid-read: next time
                continue

    def __enter__(self) -> Sampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# --- the run ---------------------------------------------------------------------------------------------


async def run_load(tasks: list[Task], prefix: str, *, backend: PodmanBackend, attempts: int = 1,
                   show_progress: bool = False) -> dict:  # fmt: skip
    """All ``tasks`` at once through the rollout runner; the measures of the module docstring.

    ``prefix`` starts every task id (so every episode id): the leak check looks for it.
    """
    await task_image(tasks[0], ImageStore(backend.service))  # the one shared image, built before timing
    n, marks, progress = len(tasks), {}, []
    quarters = {math.ceil(n * q / 4): q * 25 for q in range(1, 5)}
    socket = backend.service.api_url.removeprefix("unix://")
    with Sampler(socket, prefix) as sampler:

        def on_result(result: EpisodeResult) -> None:
            progress.append(result)
            if (pct := quarters.get(len(progress))) is not None:
                marks[pct] = (round(_self_rss_mb(), 1), round(sampler.podman_rss_mb, 1))

        rss_before, started = _self_rss_mb(), time.perf_counter()
        results = await rollout(tasks, ["mini"], policy, concurrency=n, attempts=attempts, backend=backend,
                                show_progress=show_progress, on_result=on_result)  # fmt: skip
        wall = time.perf_counter() - started
    leftovers = [b for b in await list_sandboxes(backend.service) if b.episode_id.startswith(prefix)]
    for box in leftovers:  # counted as leaked, then removed: no container outlives the benchmark
        await remove_container(backend.service, box.id)
    problems = {r.episode_id: p for r in results if (p := misrouting(r))}
    failures = Counter(f"{r.status}: {_HEX_ID.sub('<id>', (r.error or 'reward 0').splitlines()[0])[:160]}"
                       for r in results if not completed(r))  # fmt: skip
    durations = [r.duration_s for r in results] or [0.0]
    return {
        "episodes": n,
        "completed": sum(map(completed, results)),
        "misrouted": len(problems),
        "leaked": len(leftovers),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_mb": round(rss_before, 1),
        "rss_by_progress_mb": {f"{pct}%": self_mb for pct, (self_mb, _) in sorted(marks.items())},
        "podman_peak_rss_mb": round(sampler.peak["podman_rss_mb"], 1),
        "podman_peak_pss_mb": round(sampler.peak["podman_pss_mb"], 1),
        "podman_rss_by_progress_mb": {f"{pct}%": pod for pct, (_, pod) in sorted(marks.items())},
        "peak_open_files": sampler.peak["fds"],
        "podman_peak_processes": sampler.peak["podman_procs"],
        "peak_conmon": sampler.peak["conmon"],
        "peak_slirp4netns": sampler.peak["slirp4netns"],
        "wall_s": round(wall, 1),
        "episodes_per_min": round(n / (wall / 60), 1),
        "episode_p50_s": round(statistics.median(durations), 1),
        "episode_max_s": round(max(durations), 1),
        "failures": dict(failures.most_common(8)),
        "misrouting": dict(list(problems.items())[:8]),
    }


def render(out: dict):
    from rich.table import Table

    table = Table(title=f"{out['episodes']} concurrent episodes of mini (scripted)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in out.items():
        if key not in ("failures", "misrouting"):
            table.add_row(key, str(value))
    for what in ("failures", "misrouting"):
        for reason, count in out[what].items():
            table.add_row(f"[red]{what}[/red]", f"{reason}: {count}")
    return table


async def main(args) -> dict:
    prefix = f"load-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="kwaigym-load-") as root:
        tasks = make_tasks(Path(root), args.episodes or (QUICK_EPISODES if args.quick else EPISODES), prefix)
        async with PodmanBackend(reap=False) as backend:
            return await run_load(tasks, prefix, backend=backend, attempts=args.attempts, show_progress=True)


if __name__ == "__main__":
    # benchmarks/scaffolds.py shares its name with the ``scaffolds`` package, which the runner and the
    # policy import when they run: keep this folder off the path (the module imports it nowhere).
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_EPISODES} episodes instead of {EPISODES}"
    )
    parser.add_argument("--episodes", type=int, help="episodes, all at once (overrides --quick)")
    parser.add_argument(
        "--attempts", type=int, default=1, help="tries per episode on infra errors (default 1)"
    )
    cli = parser.parse_args()
    result = asyncio.run(main(cli))
    from rich.console import Console

    Console().print(render(result))
    ok = result["completed"] == result["episodes"] and not result["misrouted"] and not result["leaked"]
    print(f"{result['completed']}/{result['episodes']} completed, {result['misrouted']} misrouted, "
          f"{result['leaked']} leaked: {'OK' if ok else 'FAILED'}")  # fmt: skip
    print(json.dumps(result))
