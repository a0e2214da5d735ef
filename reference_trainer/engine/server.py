"""A ``LocalEngine`` over HTTP on loopback: OpenAI chat completions and SGLang's native protocol.

Routes:

- ``POST /v1/chat/completions``: OpenAI chat completions, tools included, through kwaigym's
  ``openai-chat`` codec (so ``UpstreamResponder`` and the ``openai`` client both work). Answers
  carry ``prompt_token_ids`` and ``choices[0].token_ids`` (where vLLM puts them) and logprobs when
  ``logprobs`` is asked. ``stream: true`` is answered as SSE, but the text comes whole once it is
  sampled (the engine does not decode incrementally); keep-alive comments go out meanwhile.
- SGLang's ``POST /generate`` (token ids in, token ids and log-probs out, prefill scoring) and its
  weight, pause and memory routes, so that the SGLang client (and any SGLang client) runs against a
  local model: see :mod:`reference_trainer.engine.sglang_routes`.
- ``GET /v1/models``, ``GET /health`` (with the engine's ``weights_version``).

Every request goes through the engine's batcher, so concurrent calls share a ``generate``. Bad
input is answered with HTTP 400 and an OpenAI-style ``{"error": {...}}`` naming the field; an
engine failure with 500. Weights change in process (the owner calls ``engine.update_weights`` or
steps the shared model in place) or over SGLang's update routes. ``max_tokens`` and
``max_new_tokens`` are capped at the engine's ``max_new_tokens``.

    python -m reference_trainer.engine.server /path/to/model --port 30000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import tornado.httpserver
import tornado.netutil
import tornado.web

from kwaigym.chat.codec import codec_for
from reference_trainer.engine import sglang_routes
from reference_trainer.engine.local import LocalEngine
from reference_trainer.engine.routes import JsonRoute, Refused

log = logging.getLogger(__name__)
_CHAT = codec_for("openai-chat")


class _Chat(JsonRoute):
    async def post(self) -> None:
        await self.guarded(self.chat)

    async def chat(self) -> None:
        request = _CHAT.decode_request(self.body())
        try:
            prompt = await asyncio.to_thread(self.engine.render, request)
        except Exception as exc:
            raise Refused(f"messages: the model's chat template cannot render them: {exc}") from None
        await self.server.ready_to_generate()
        future = asyncio.wrap_future(self.engine.submit(prompt, self.engine.params_for(request)))
        response_id = f"chatcmpl-{uuid.uuid4().hex}"
        if request.stream:
            self.set_header("Content-Type", "text/event-stream")
            self.set_header("Cache-Control", "no-cache")
            self.write(_CHAT.sse_prelude(request, response_id=response_id))
            await self.flush()
            while not (await asyncio.wait({future}, timeout=self.server.keepalive_s))[0]:
                self.write(_CHAT.sse_keepalive())
                await self.flush()
        completion = self.engine.to_completion(await future)
        if not request.params.logprobs:
            completion = attrs.evolve(completion, logprobs=None)
        if request.stream:
            self.finish(_CHAT.sse_completion(completion, request, response_id=response_id))
        else:
            self.finish(_CHAT.encode_response(completion, request, response_id=response_id))


class _Models(JsonRoute):
    def get(self) -> None:
        self.finish(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.engine.name,
                        "object": "model",
                        "created": self.server.started,
                        "owned_by": "kwaigym",
                    }
                ],
            }
        )


class _Health(JsonRoute):
    def get(self) -> None:
        self.finish(
            {"status": "ok", "model": self.engine.name, "weights_version": self.engine.weights_version}
        )


class _NotFound(JsonRoute):
    def prepare(self) -> None:
        self.fail(
            404,
            f"no route {self.request.method} {self.request.path}; "
            "expected /v1/chat/completions, /v1/models, /health or one of SGLang's (/generate, ...)",
        )


def _log(handler: tornado.web.RequestHandler) -> None:
    """Access lines at debug level; failures of the engine (5xx) as warnings."""
    status, request = handler.get_status(), handler.request
    level = logging.WARNING if status >= 500 else logging.DEBUG
    log.log(level, "%d %s %s %.1fms", status, request.method, request.uri, 1000 * request.request_time())


class EngineServer:
    """Serves ``engine`` on ``host:port`` (0: a free port): in the running loop (``async with``,
    ``start``/``stop``) or on a background thread of its own (``with``, for synchronous callers).
    """

    def __init__(
        self, engine: LocalEngine, *, host: str = "127.0.0.1", port: int = 0, keepalive_s: float = 15.0
    ):
        self.engine, self.host, self.port, self.keepalive_s = engine, host, port, keepalive_s
        self.started = int(time.time())
        self._http: tornado.httpserver.HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop_thread: asyncio.Event | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self.hits: Counter[str] = Counter()
        """Requests served, by path (tests read it to see where a router sent them)."""
        self.events: list[str] = []
        """SGLang control calls in order (``pause_generation``, ``update_weights_from_disk``, ...)."""
        self.extra_keys: list[Any] = []
        """The ``extra_key`` (cache namespace) of every ``/generate`` that sent one."""
        self.inflight = 0
        self.released: set[str] = set()
        self.stale_weights = False
        """Weights were resumed after a release and not sent again: generating is refused meanwhile."""
        self.groups: dict[str, Any] = {}
        self.resumed: asyncio.Event | None = None

    async def ready_to_generate(self) -> None:
        """Wait while paused; refuse while memory is released or resumed weights were not re-sent."""
        if self.released:
            raise Refused(f"memory is released ({', '.join(sorted(self.released))}): "
                          "call /resume_memory_occupation first")  # fmt: skip
        if self.stale_weights:
            raise Refused("weights were resumed after a release but not sent again: "
                          "update them (from disk or distributed) before generating")  # fmt: skip
        await self.resumed.wait()

    @property
    def url(self) -> str:
        """The server's root, e.g. ``http://127.0.0.1:41234`` (OpenAI clients want ``url + "/v1"``)."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        """Listen in the running event loop; returns ``url``."""
        self.resumed = asyncio.Event()
        self.resumed.set()
        app = tornado.web.Application(
            [
                (r"/v1/chat/completions", _Chat, {"server": self}),
                (r"/v1/models", _Models, {"server": self}),
                (r"/health", _Health, {"server": self}),
                *((path, route, {"server": self}) for path, route in sglang_routes.ROUTES),
            ],
            default_handler_class=_NotFound,
            default_handler_args={"server": self},
            log_function=_log,
        )
        sockets = tornado.netutil.bind_sockets(self.port, self.host)
        self.port = sockets[0].getsockname()[1]
        self._http = tornado.httpserver.HTTPServer(app)
        self._http.add_sockets(sockets)
        return self.url

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._http is not None:
            self._http.stop()
            await self._http.close_all_connections()
            self._http = None

    async def __aenter__(self) -> EngineServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __enter__(self) -> EngineServer:
        ready, failure = threading.Event(), []

        async def run() -> None:
            try:
                await self.start()
                self._stop_thread, self._thread_loop = asyncio.Event(), asyncio.get_running_loop()
            except BaseException as exc:
                failure.append(exc)
                raise
            finally:
                ready.set()
            await self._stop_thread.wait()
            await self.stop()

        self._thread = threading.Thread(target=asyncio.run, args=(run(),), name="engine-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._thread_loop.call_soon_threadsafe(self._stop_thread.set)
            self._thread.join()
            self._thread = None


@asynccontextmanager
async def serve(engine: LocalEngine, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[EngineServer]:
    """Serve ``engine`` in the running loop for the ``async with`` block; yields the server (its ``url``)."""
    async with EngineServer(engine, host=host, port=port) as server:
        yield server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m reference_trainer.engine.server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("model", nargs="?", help="a Hugging Face model directory")
    parser.add_argument("--model-path", help="the same, as SGLang's launcher spells it")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000, help="0 picks a free port")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-window-ms", type=float, default=5.0)
    parser.add_argument(
        "--policy-sampling",
        action="store_true",
        help="ignore requests' temperature and top_p: always sample at --temperature",
    )
    args = parser.parse_args(argv)
    if not (args.model or args.model_path):
        parser.error("give a model directory (positional or --model-path)")
    engine = LocalEngine(
        args.model or args.model_path,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        request_sampling=not args.policy_sampling,
        max_batch_size=args.max_batch_size,
        batch_window_s=args.batch_window_ms / 1000,
    )

    async def run() -> None:
        async with serve(engine, args.host, args.port) as server:
            print(f"serving {engine.name} at {server.url} (OpenAI base URL {server.url}/v1)", flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
