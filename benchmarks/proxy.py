"""Proxy overhead benchmark: what the interception layer adds to every model call of an agent.

Measures, in one run and side by side (shared machines are noisy, so measures that are compared
are interleaved sample by sample):

- added latency (paid on every agent turn): a chat call to a fake upstream (a minimal OpenAI-compatible
  server: keep-alive, fixed answer, no sleep) directly, and through the proxy to an ``UpstreamResponder``
  in front of it: the cost of mitmproxy, the model endpoints, the codecs and the responder's HTTP client.
  Also with ``stream: true``, to the end of the stream (the proxy asks the upstream without streaming).
- throughput (what one proxy process serves a batch of rollouts): 32 keep-alive clients calling the
  proxy (a ``ScriptedResponder`` each, no upstream) and, as a baseline, the fake upstream.
- routing: many calls at once from 50 episodes, each with a unique marker; every answer and record must
  be the caller's (else ``misrouted``), every call must get a 200 and a record (else ``lost``).

The clients of throughput and routing run in a child process, as agents run in their sandboxes, so the
proxy's event loop does only the proxy's work. Limits: all on 127.0.0.1; the latency client shares the
proxy's event loop (it costs the same on both paths); a real upstream's own time is not counted.
The last line of stdout is one JSON object with the numbers, for scripts and CI.
Usage: python benchmarks/proxy.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import multiprocessing
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor

import httpx
from rich.console import Console
from rich.table import Table

from kwaigym.chat.codec import codec_for
from kwaigym.chat.types import Completion
from kwaigym.proxy import InterceptionProxy, ScriptedResponder, UpstreamResponder

QUICK = {"samples": 200, "hammer_s": 5, "routing_calls": 300}
FULL = {"samples": 1000, "hammer_s": 15, "routing_calls": 1000}
WARMUP, CLIENTS, EPISODES = 20, 32, 50
PATH = "/v1/chat/completions"
JSON = {"content-type": "application/json"}
# key -> (label, target or None, unit); a target bounds ms from above, calls/s from below
ROWS = {
    "added_p50_ms": ("added latency p50, non-streaming", 3.0, "ms"),
    "added_p95_ms": ("added latency p95, non-streaming", None, "ms"),
    "direct_p50_ms": ("  direct to the fake upstream, p50 / p95", None, "ms"),
    "proxied_p50_ms": ("  through the proxy, p50 / p95", None, "ms"),
    "added_stream_p50_ms": ("added latency p50, streaming (to end of stream)", None, "ms"),
    "direct_stream_p50_ms": ("  direct, streaming p50", None, "ms"),
    "proxied_stream_p50_ms": ("  through the proxy, streaming p50", None, "ms"),
    "calls_per_s_32": ("throughput, 32 clients, proxy + ScriptedResponder", 300, "calls/s"),
    "direct_calls_per_s_32": ("  32 clients, fake upstream directly", None, "calls/s"),
    "calls_total": ("routing: calls at once from 50 episodes", None, ""),
    "misrouted": ("  misrouted (answer or record of another call)", 0, ""),
    "lost": ("  lost (error, non-200, or no record)", 0, ""),
}


def p50(xs: list[float]) -> float:
    return statistics.median(xs)


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[94]


def chat_body(text: str, *, stream: bool = False) -> bytes:
    messages = [{"role": "user", "content": text}]
    return json.dumps({"model": "bench", "messages": messages, "stream": stream}).encode()


def bearer(token: str) -> dict[str, str]:
    return JSON | {"authorization": f"Bearer {token}"}


def in_child(fn, *args):
    """Runs the coroutine function ``fn(*args)`` in a fresh event loop (of a child process)."""
    return asyncio.run(fn(*args))


@contextlib.asynccontextmanager
async def fake_upstream():
    """A minimal OpenAI-compatible chat server on loopback (HTTP/1.1 keep-alive); yields its URL."""
    codec, rid = codec_for("openai-chat"), "chatcmpl-bench"
    request, done = codec.decode_request(json.loads(chat_body("hi"))), Completion(text="Hello from upstream.")
    plain = json.dumps(codec.encode_response(done, request, response_id=rid)).encode()
    events = codec.sse_prelude(request, response_id=rid)
    events += codec.sse_completion(done, request, response_id=rid)
    head = "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ncontent-length: {}\r\n\r\n"
    answers = {False: head.format("application/json", len(plain)).encode() + plain,
               True: head.format("text/event-stream", len(events)).encode() + events}  # fmt: skip

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                body = json.loads(await reader.readexactly(int(length[1]))) if length else {}
                writer.write(answers[body.get("stream") is True])
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed its connection (all do before the server closes)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def timed_call(client: httpx.AsyncClient, url: str, headers: dict, body: bytes, stream: bool) -> float:
    """Seconds for one call, to the end of the answer (of the stream when streaming)."""
    t0 = time.perf_counter()
    async with client.stream("POST", url, content=body, headers=headers) as response:
        data = await response.aread()
    elapsed = time.perf_counter() - t0
    if response.status_code != 200 or (stream and not data.rstrip().endswith(b"data: [DONE]")):
        raise RuntimeError(f"POST {url}: HTTP {response.status_code}: {data[-300:]!r}")
    return elapsed


async def measure_latency(client: httpx.AsyncClient, upstream: str, proxy: InterceptionProxy, n: int) -> dict:
    """n calls each of direct / proxied, plain and streamed, after WARMUP; the order rotates every round."""
    responder = UpstreamResponder(upstream + "/v1")
    route = proxy.register("bench-latency", responder, host="127.0.0.1")
    plain, streamed = chat_body("hi"), chat_body("hi", stream=True)
    kinds = {
        "direct": (upstream + PATH, JSON, plain, False),
        "proxied": (route.base_url + PATH, bearer(route.token), plain, False),
        "direct_stream": (upstream + PATH, JSON, streamed, True),
        "proxied_stream": (route.base_url + PATH, bearer(route.token), streamed, True),
    }
    ms: dict[str, list[float]] = {k: [] for k in kinds}
    order = list(kinds)
    try:
        for i in range(-WARMUP, n):
            for kind in order[i % 4 :] + order[: i % 4]:
                elapsed = await timed_call(client, *kinds[kind])
                if i >= 0:
                    ms[kind].append(elapsed * 1000)
    finally:
        await responder.aclose()
    out = {f"{k}_{q.__name__}_ms": q(ms[k]) for k in kinds for q in (p50, p95)}
    out["added_p50_ms"] = out["proxied_p50_ms"] - out["direct_p50_ms"]
    out["added_p95_ms"] = out["proxied_p95_ms"] - out["direct_p95_ms"]
    out["added_stream_p50_ms"] = out["proxied_stream_p50_ms"] - out["direct_stream_p50_ms"]
    return out


async def _calls_until(client: httpx.AsyncClient, url: str, headers: dict, deadline: float) -> int:
    calls = 0
    while time.perf_counter() < deadline:
        (await client.post(url, content=chat_body("hi"), headers=headers)).raise_for_status()
        calls += 1
    return calls


async def hammer(targets: dict[str, tuple[str, list[dict]]], slices: int) -> dict[str, float]:
    """CLIENTS keep-alive clients call each target (url, headers of each client) in turn, one second
    a slice, the order flipped every slice; returns each target's completed calls per second."""
    clients = [httpx.AsyncClient(timeout=60) for _ in range(CLIENTS)]
    calls, seconds = collections.Counter(), collections.Counter()
    try:
        for s in range(-1, slices):  # slice -1 warms up: every client connects to every target
            for name in list(targets)[:: 1 if s % 2 else -1]:
                (url, headers), t0 = targets[name], time.perf_counter()
                deadline = t0 + (1.0 if s >= 0 else 0.3)
                done = await asyncio.gather(*(_calls_until(c, url, h, deadline)
                                              for c, h in zip(clients, headers, strict=True)))  # fmt: skip
                if s >= 0:
                    calls[name] += sum(done)
                    seconds[name] += time.perf_counter() - t0
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return {name: calls[name] / seconds[name] for name in targets}


async def measure_throughput(proxy: InterceptionProxy, upstream: str, pool, seconds: int) -> dict:
    routes = [proxy.register(f"bench-hammer-{i}", ScriptedResponder(lambda request, ctx: "Hello."),
                             host="127.0.0.1") for i in range(CLIENTS)]  # fmt: skip
    targets = {"calls_per_s_32": (routes[0].base_url + PATH, [bearer(r.token) for r in routes]),
               "direct_calls_per_s_32": (upstream + PATH, [JSON] * CLIENTS)}  # fmt: skip
    return await asyncio.get_running_loop().run_in_executor(pool, in_child, hammer, targets, seconds)


def _scripted(episode: str) -> ScriptedResponder:
    """Answers "<episode> #<k> re <marker>": its own episode id, a counter, and the caller's marker."""
    counter = itertools.count(1)

    async def answer(request, ctx) -> str:
        k = next(counter)
        await asyncio.sleep(random.random() * 0.005)  # so that answers finish out of order
        return f"{episode} #{k} re {request.messages[-1].text}"

    return ScriptedResponder(answer)


async def route_calls(calls: list[tuple[str, str, str, str]]) -> list[str]:
    """All (episode, url, token, marker) calls at once, with one keep-alive client per episode (as each
    agent has its own); returns each answer's text, or "! <error>"."""
    per_episode = collections.Counter(ep for ep, *_ in calls)
    clients = {ep: httpx.AsyncClient(limits=httpx.Limits(max_connections=k), timeout=120)
               for ep, k in per_episode.items()}  # fmt: skip

    async def one(ep: str, url: str, token: str, marker: str) -> str:
        try:
            r = await clients[ep].post(url, content=chat_body(marker), headers=bearer(token))
            return r.raise_for_status().json()["choices"][0]["message"]["content"]
        except httpx.HTTPStatusError as exc:
            return f"! HTTP {exc.response.status_code}"
        except (httpx.HTTPError, ValueError, LookupError) as exc:
            return f"! {type(exc).__name__}"

    try:
        return await asyncio.gather(*(one(*call) for call in calls))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients.values()))


async def measure_routing(proxy: InterceptionProxy, pool, n: int) -> dict:
    """n calls at once, call i from episode i % EPISODES; checks the answers, then the recorder."""
    run = uuid.uuid4().hex[:6]
    episodes = [f"bench-route-{run}-{e:02d}" for e in range(EPISODES)]
    routes = {ep: proxy.register(ep, _scripted(ep), host="127.0.0.1") for ep in episodes}
    calls = [(ep, routes[ep].base_url + PATH, routes[ep].token, f"marker-{i}-{run}")
             for i, ep in ((i, episodes[i % EPISODES]) for i in range(n))]  # fmt: skip
    answers = await asyncio.get_running_loop().run_in_executor(pool, in_child, route_calls, calls)
    lost, misrouted = set(), set()
    for (ep, _, _, marker), answer in zip(calls, answers, strict=True):
        if answer.startswith("! "):
            lost.add(marker)
        elif not (answer.startswith(f"{ep} #") and answer.endswith(f" re {marker}")):
            misrouted.add(marker)
    owner, records = {m: ep for ep, _, _, m in calls}, collections.Counter()
    for ep in episodes:
        for record in proxy.recorder.calls(ep):
            marker = record.request_raw["messages"][-1]["content"]
            records[marker] += 1
            if owner.get(marker) != ep or records[marker] > 1:  # another episode's call, or recorded twice
                misrouted.add(marker)
    lost |= {m for m in owner if not records[m]}
    errors = collections.Counter(a[2:] for a in answers if a.startswith("! "))
    return {"calls_total": n, "misrouted": len(misrouted), "lost": len(lost), "lost_errors": dict(errors)}


async def main(args: argparse.Namespace) -> dict:
    sizes = QUICK if args.quick else FULL
    out: dict = {}
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as confdir, ProcessPoolExecutor(1, mp_context=spawn) as pool:
        async with (
            fake_upstream() as upstream,
            InterceptionProxy(confdir=confdir) as proxy,
            httpx.AsyncClient(timeout=60) as client,
        ):
            out |= await measure_latency(client, upstream, proxy, sizes["samples"])
            out |= await measure_throughput(proxy, upstream, pool, sizes["hammer_s"])
            out |= await measure_routing(proxy, pool, sizes["routing_calls"])
        await asyncio.sleep(0.2)  # the proxy's endpoint handlers end on their closed streams (else 3.11 logs)
    return out


def report(out: dict, wall_s: float, quick: bool) -> None:
    table = Table(title=f"kwaigym proxy benchmark ({'quick' if quick else 'full'})")
    for col in ("measure", "value", "target", "ok"):
        table.add_column(col)
    for key, (label, target, unit) in ROWS.items():
        value = out[key]
        shown = f"{value:.2f} ms" if unit == "ms" else f"{value:.0f} {unit}".strip()
        if key in ("direct_p50_ms", "proxied_p50_ms"):
            shown += f" / {out[key.replace('p50', 'p95')]:.2f} ms"
        if key == "lost" and value:
            shown += " (" + ", ".join(f"{k}: {v}" for k, v in out["lost_errors"].items()) + ")"
        if target is None:
            table.add_row(label, shown, "", "")
            continue
        ok, goal = {"ms": (value <= target, f"<= {target:g} ms"), "": (value == target, f"== {target}"),
                    "calls/s": (value >= target, f">= {target}")}[unit]  # fmt: skip
        table.add_row(label, shown, goal, "[green]yes[/]" if ok else "[red]NO[/]")
    table.caption = f"wall time {wall_s:.1f} s; throughput and routing clients in a child process"
    Console().print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, under a minute")
    cli = parser.parse_args()
    started = time.perf_counter()
    try:
        result = asyncio.run(main(cli))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    report(result, time.perf_counter() - started, cli.quick)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))
