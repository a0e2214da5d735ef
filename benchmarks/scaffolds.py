"""Scaffold benchmark: what each agent adapter costs besides the policy's own time.

Per adapter, in one run:

- ``overhead_s``: the wall time of a two-call episode (the agent runs ``true`` with its own shell
  tool, then is told it is done), from the exec of its command to its exit, minus the time the
  policy spent answering (a scripted policy, so near zero). It is the agent's start-up, its
  request building, its tool execution and its shutdown: what every rollout pays on top of the
  model. The median of the samples.
- ``install_fresh_s``: its bundle installed into an empty bundle cache. The package managers run
  offline (npm from its cache, pip from the wheelhouse the first install kept): a benchmark sends
  nothing off this machine, and the download depends on the network anyway.
- ``install_cached_s``: ``install()`` again when the bundle is cached (what each episode pays).
- ``deploy_s``: the time the bundle's read-only bind mounts add to starting a sandbox (start with
  the mounts minus start without, medians of interleaved samples); ``deploy_copy_s``, the
  baseline, copies the same bundle into a started sandbox instead (full runs only).

Adapters whose bundle cannot be installed or whose agent fails get ``"error"`` instead.
The last line of stdout is one JSON object mapping adapter names to their figures.
Usage: python benchmarks/scaffolds.py [--quick] [--only NAME[,NAME...]]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This script shares its name with the ``scaffolds`` package; keep its own folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
import uuid

from rich.console import Console
from rich.table import Table

from kwaigym.chat.types import ChatRequest, Completion
from kwaigym.proxy import InterceptionProxy
from kwaigym.proxy.responders import CallContext
from kwaigym.sandbox import PodmanBackend
from kwaigym.sandbox.base import NetworkPolicy, SandboxSpec
from kwaigym.sandbox.images import ImageStore
from scaffolds import registry
from scaffolds.base import Scaffold
from scaffolds.check import scripted_policy
from scaffolds.mini_swe_agent import wheelhouse

QUICK = {"adapters": ["mini", "claude-code"], "episodes": 1, "starts": 3, "fresh": True, "copy": False}
FULL = {"adapters": None, "episodes": 3, "starts": 7, "fresh": True, "copy": True}
DEPLOY_TARGET_S = 0.2


class TimedPolicy:
    """A responder that adds up how long the wrapped policy took to answer."""

    def __init__(self, inner):
        self.inner, self.busy_s = inner, 0.0

    async def respond(self, request: ChatRequest, ctx: CallContext) -> Completion:
        started = time.perf_counter()
        try:
            return await self.inner.respond(request, ctx)
        finally:
            self.busy_s += time.perf_counter() - started


async def episode_overhead(
    scaffold: Scaffold, bundle: Path, proxy, backend, image: str, run_id: str
) -> float:
    """One two-call episode; seconds of the agent's own time (wall minus policy)."""
    policy = TimedPolicy(scripted_policy(scaffold, "true"))
    route = proxy.register(f"{run_id}-{scaffold.name}-{uuid.uuid4().hex[:6]}", policy)
    try:
        spec = SandboxSpec(
            image=image,
            episode_id=route.episode_id,
            network=proxy.network_policy(),
            mounts=scaffold.mounts(bundle),
            env=scaffold.env(route),
        )
        async with backend.sandbox(spec) as sb:
            started = time.perf_counter()
            result = await sb.exec(scaffold.command("Run `true`, then stop."), timeout=300)
            wall = time.perf_counter() - started
    finally:
        proxy.unregister(route.episode_id)
    outcome = scaffold.outcome(result)
    if not outcome.ok:
        raise RuntimeError(f"the agent failed (exit {outcome.exit_code}): {outcome.final_message[-300:]}")
    return wall - policy.busy_s


async def start_s(backend, image: str, episode_id: str, mounts) -> float:
    """Seconds to create a sandbox (with ``mounts``) and run ``true`` in it; removal not timed."""
    spec = SandboxSpec(image=image, episode_id=episode_id, network=NetworkPolicy(mode="none"), mounts=mounts)
    started = time.perf_counter()
    sb = await backend.create(spec)
    try:
        result = await sb.exec("true")
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.shield(backend.destroy(sb))
    assert result.ok, result
    return elapsed


async def deploy(scaffold: Scaffold, bundle: Path, backend, image: str, run_id: str, n: int) -> dict:
    """What the bundle's bind mounts add to a sandbox start (interleaved with plain starts)."""
    mounts = scaffold.mounts(bundle)
    with_mounts, plain = [], []
    for i in range(n):
        pair = [(with_mounts, mounts), (plain, [])]
        for samples, m in pair if i % 2 else pair[::-1]:
            samples.append(await start_s(backend, image, f"{run_id}-deploy-{scaffold.name}-{i}", m))
    return {"deploy_s": max(0.0, statistics.median(with_mounts) - statistics.median(plain))}


async def deploy_by_copy(scaffold: Scaffold, bundle: Path, backend, image: str, run_id: str) -> float:
    """The baseline: the same bundle copied (tar through the API) into a started sandbox."""
    spec = SandboxSpec(
        image=image, episode_id=f"{run_id}-copy-{scaffold.name}", network=NetworkPolicy(mode="none")
    )
    async with backend.sandbox(spec) as sb:
        started = time.perf_counter()
        for mount in scaffold.mounts(bundle):
            await sb.exec(["mkdir", "-p", mount.target])
            await sb.put_dir(mount.source, mount.target)
        return time.perf_counter() - started


@contextlib.contextmanager
def fresh_offline_cache():
    """An empty bundle cache for this block, with npm and pip told to stay offline."""
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="kwaigym-fresh-") as empty:
        os.environ.update(
            KWAIGYM_BUNDLES=empty,
            npm_config_offline="true",
            PIP_NO_INDEX="1",
            PIP_FIND_LINKS=str(wheelhouse()),
        )
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


async def bench_adapter(name: str, sizes: dict, proxy, backend, image: str, run_id: str, out: dict) -> None:
    """Fill ``out`` with the adapter's figures (what was measured stays if a later step fails)."""
    scaffold = registry.get(name)
    bundle = await asyncio.to_thread(scaffold.install)  # setup: the one install that may download
    cached_s, _ = await asyncio.to_thread(timed, scaffold.install)
    out["install_cached_s"] = cached_s
    if sizes["fresh"]:

        def fresh():
            with fresh_offline_cache():
                return timed(scaffold.install)[0]

        out["install_fresh_s"] = await asyncio.to_thread(fresh)
    await episode_overhead(scaffold, bundle, proxy, backend, image, run_id)  # warm the page cache
    overheads = [
        await episode_overhead(scaffold, bundle, proxy, backend, image, run_id)
        for _ in range(sizes["episodes"])
    ]
    out["overhead_s"] = statistics.median(overheads)
    out |= await deploy(scaffold, bundle, backend, image, run_id, sizes["starts"])
    if sizes["copy"]:
        out["deploy_copy_s"] = await deploy_by_copy(scaffold, bundle, backend, image, run_id)


async def main(args: argparse.Namespace) -> dict:
    sizes = QUICK if args.quick else FULL
    names = args.only.split(",") if args.only else sizes["adapters"] or sorted(registry.available())
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    results: dict = {}
    async with PodmanBackend(reap=False) as backend, InterceptionProxy() as proxy:
        image = args.image or await ImageStore(backend.service).base_image()
        for name in names:
            results[name] = {}
            try:
                await bench_adapter(name, sizes, proxy, backend, image, run_id, results[name])
            except Exception as exc:  # one broken adapter must not hide the others' figures
                results[name]["error"] = f"{type(exc).__name__}: {exc}"[:500]
    return results


def report(results: dict, wall_s: float, quick: bool) -> None:
    table = Table(title=f"kwaigym scaffold benchmark ({'quick' if quick else 'full'})")
    for col in ("adapter", "overhead", "install fresh", "install cached", "deploy (<= 0.2 s)", "copy"):
        table.add_column(col)

    def show(value, unit="s"):
        return "" if value is None else f"{value * 1000:.1f} ms" if unit == "ms" else f"{value:.2f} s"

    for name, r in results.items():
        if "error" in r:
            table.add_row(name, f"[red]{r['error'][:80]}[/]", "", "", "", "")
            continue
        ok = "[green]yes[/]" if r["deploy_s"] <= DEPLOY_TARGET_S else "[red]NO[/]"
        table.add_row(name, show(r["overhead_s"]), show(r.get("install_fresh_s")),
                      show(r["install_cached_s"], "ms"), f"{show(r['deploy_s'], 'ms')} {ok}",
                      show(r.get("deploy_copy_s")))  # fmt: skip
    table.caption = f"wall time {wall_s:.0f} s; overhead = episode wall time minus the policy's time"
    Console().print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="mini and claude-code, one episode each")
    parser.add_argument("--only", help="comma-separated adapter names (default: all registered)")
    parser.add_argument("--image", help="image to run the agents in (default: the kwaigym Debian base image)")
    cli = parser.parse_args()
    started = time.perf_counter()
    try:
        out = asyncio.run(main(cli))
    except KeyboardInterrupt:
        print("interrupted; the sandboxes of this run were removed", file=sys.stderr)
        sys.exit(130)
    report(out, time.perf_counter() - started, cli.quick)
    print(
        json.dumps(
            {n: {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for n, r in out.items()}
        )
    )
