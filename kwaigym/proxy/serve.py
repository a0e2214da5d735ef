"""``kwaigym proxy serve``: the interception proxy as a standalone process.

Point any agent at it by hand to see (and record) what it sends: with ``--upstream``
each call goes to a real model server, with ``--echo`` a scripted policy answers
with a short text. Every finished call is appended to ``--record`` as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import attrs

from kwaigym.proxy.recorder import CallRecord
from kwaigym.proxy.responders import ScriptedResponder, UpstreamResponder
from kwaigym.proxy.server import InterceptionProxy


def add_arguments(parser) -> None:
    parser.add_argument("--upstream", help="model server API root, e.g. http://127.0.0.1:30000/v1")
    parser.add_argument("--upstream-format", default="openai-chat", help="its wire format")
    parser.add_argument("--api-key-env", help="name of the environment variable holding the upstream key")
    parser.add_argument("--echo", action="store_true", help="answer every call with a short text instead")
    parser.add_argument("--episode", default="manual", help="episode id for the records")
    parser.add_argument("--record", type=Path, help="append each call as a JSON line to this file")


def record_json(record: CallRecord) -> str:
    return json.dumps(attrs.asdict(record), default=str, ensure_ascii=False)


async def serve(args) -> int:
    if bool(args.upstream) == bool(args.echo):
        print("kwaigym proxy serve: give exactly one of --upstream URL or --echo", file=sys.stderr)
        return 2
    if args.upstream:
        key = os.environ.get(args.api_key_env) if args.api_key_env else None
        responder = UpstreamResponder(args.upstream, format=args.upstream_format, api_key=key)
    else:
        responder = ScriptedResponder(lambda request, ctx: f"kwaigym echo: {len(request.messages)} messages")
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    sink = args.record.open("a", buffering=1) if args.record else None
    async with InterceptionProxy() as proxy:
        route = proxy.register(args.episode, responder, host="127.0.0.1")
        if sink:
            proxy.recorder.subscribe(lambda record: sink.write(record_json(record) + "\n"))
        print(f"ANTHROPIC_BASE_URL={route.base_url}", f"OPENAI_BASE_URL={route.base_url}/v1",
              f"API_KEY={route.token}", f"HTTPS_PROXY={route.https_proxy}", f"CA={proxy.ca_cert}",
              sep="\n", flush=True)  # fmt: skip
        await stop.wait()
    if sink:
        sink.close()
    if args.upstream:
        await responder.aclose()
    return 0
