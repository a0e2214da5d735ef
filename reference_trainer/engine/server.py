"""A ``LocalEngine`` over HTTP on loopback: OpenAI chat completions and a token-in/token-out route.

Routes:

- ``POST /v1/chat/completions``: OpenAI chat completions, tools included, through kwaigym's
  ``openai-chat`` codec (so ``UpstreamResponder`` and the ``openai`` client both work). Answers
  carry ``prompt_token_ids`` and ``choices[0].token_ids`` (where vLLM puts them) and logprobs when
  ``logprobs`` is asked. ``stream: true`` is answered as SSE, but the text comes whole once it is
  sampled (the engine does not decode incrementally); keep-alive comments go out meanwhile.
- ``POST /generate`` (as SGLang's): ``{"input_ids": [...] or [[...], ...], "sampling_params":
  {"temperature", "top_p", "max_new_tokens", "stop", "top_logprobs"}}`` -> per prompt
  ``{"output_ids", "output_logprobs", "finish_reason", "text", "weights_version"}`` (one object
  for one flat prompt, a list for a list of prompts).
- ``GET /v1/models``, ``GET /health`` (with the engine's ``weights_version``).

Every request goes through the engine's batcher, so concurrent calls share a ``generate``. Bad
input is answered with HTTP 400 and an OpenAI-style ``{"error": {...}}`` naming the field; an
engine failure with 500. Weights are not sent over HTTP: the process that owns the server calls
``engine.update_weights`` (or steps the shared model in place) between steps. ``max_tokens`` and
``max_new_tokens`` are capped at the engine's ``max_new_tokens``.

    python -m reference_trainer.engine.server /path/to/model --port 30000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web

from kwaigym.chat.codec import BadRequest, codec_for
from kwaigym.chat.fields import INT, LIST, NUM, Fields, check, kind_of
from kwaigym.errors import ConfigError
from reference_trainer.engine.local import LocalEngine, SampleParams

log = logging.getLogger(__name__)
_CHAT = codec_for("openai-chat")
_SAMPLING_KEYS = ("temperature", "top_p", "max_new_tokens", "stop", "top_logprobs")


class _Refused(Exception):
    """A request the server will not run: answered with ``status`` and ``message``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message, self.status = message, status


def _error(message: str, status: int) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": status}}


class _Route(tornado.web.RequestHandler):
    """JSON in, JSON out; every failure is a JSON error, never a hang or an HTML page."""

    def initialize(self, server: EngineServer) -> None:
        self.server, self.engine = server, server.engine

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish(_error(self._reason, status_code))

    def body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"")
        except ValueError as exc:
            raise _Refused(f"request body is not JSON: {exc}") from None
        if not isinstance(body, Mapping):
            raise _Refused(f"request body: expected a JSON object, got {kind_of(body)}")
        return body

    async def guarded(self, handle) -> None:
        try:
            await handle()
        except (_Refused, BadRequest, ConfigError) as exc:
            status, message = getattr(exc, "status", 400), exc.message
            self.fail(status, message)
        except tornado.iostream.StreamClosedError:
            pass  # the client left
        except Exception as exc:
            log.exception("engine server: %s %s failed", self.request.method, self.request.path)
            self.fail(500, f"the engine failed: {type(exc).__name__}: {exc}")

    def fail(self, status: int, message: str) -> None:
        if self._finished:
            return
        if self._headers_written:  # a stream already under way: end it with an error event
            self.write(b"data: " + json.dumps(_error(message, status)).encode() + b"\n\n")
            self.finish()
            return
        self.clear()
        self.set_status(status)
        self.finish(_error(message, status))


class _Chat(_Route):
    async def post(self) -> None:
        await self.guarded(self.chat)

    async def chat(self) -> None:
        request = _CHAT.decode_request(self.body())
        try:
            prompt = await asyncio.to_thread(self.engine.render, request)
        except Exception as exc:
            raise _Refused(f"messages: the model's chat template cannot render them: {exc}") from None
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


class _Generate(_Route):
    async def post(self) -> None:
        await self.guarded(self.generate)

    async def generate(self) -> None:
        body = self.body()
        if unknown := sorted(set(body) - {"input_ids", "sampling_params"}):
            raise _Refused(f"{unknown[0]}: unknown field; expected input_ids and sampling_params")
        prompts, flat = self.prompts(body.get("input_ids"))
        params = self.params(body.get("sampling_params") or {})
        futures = [asyncio.wrap_future(self.engine.submit(p, params)) for p in prompts]
        outputs = [
            {
                "output_ids": list(s.token_ids),
                "output_logprobs": list(s.logprobs),
                "finish_reason": s.finish_reason,
                "text": s.text,
                "weights_version": s.weights_version,
            }
            | (
                {"output_top_logprobs": [[list(a) for a in top] for top in s.top_logprobs]}
                if s.top_logprobs
                else {}
            )
            for s in await asyncio.gather(*futures)
        ]
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(outputs[0] if flat else outputs))

    def prompts(self, value: Any) -> tuple[list[list[int]], bool]:
        """The prompts, and whether one flat list was sent; every id must be in the vocabulary."""
        if not isinstance(value, list) or not value:
            got = "no such field" if value is None else kind_of(value) if value != [] else "an empty list"
            raise _Refused(
                f"input_ids: expected a non-empty list of token ids or of lists of them, got {got}"
            )
        flat = not isinstance(value[0], list)
        prompts = [value] if flat else value
        vocab = self.engine.model.get_input_embeddings().num_embeddings
        for i, prompt in enumerate(prompts):
            where = "input_ids" if flat else f"input_ids[{i}]"
            if not check(prompt, LIST, where):
                raise _Refused(f"{where}: expected a non-empty list of token ids, got an empty list")
            for j, token in enumerate(prompt):
                if not (INT[0](token) and 0 <= token < vocab):
                    shown = kind_of(token) if not INT[0](token) else token
                    raise _Refused(f"{where}[{j}]: expected a token id in [0, {vocab}), got {shown}")
        return prompts, flat

    def params(self, raw: Any) -> SampleParams:
        f = Fields(raw, "sampling_params")
        if unknown := sorted(set(f.obj) - set(_SAMPLING_KEYS)):
            raise _Refused(
                f"sampling_params.{unknown[0]}: unknown field; expected one of {', '.join(_SAMPLING_KEYS)}"
            )
        stop = (
            f.read(
                "stop",
                (
                    lambda v: (
                        isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str) for s in v))
                    ),
                    "a string or a list of strings",
                ),
            )
            or []
        )
        limit = f.read("max_new_tokens", INT)
        temperature, top_p = f.read("temperature", NUM), f.read("top_p", NUM)
        return SampleParams(
            temperature=self.engine.temperature if temperature is None else temperature,
            top_p=1.0 if top_p is None else top_p,
            stop=[stop] if isinstance(stop, str) else stop,
            max_new_tokens=min(
                self.engine.max_new_tokens if limit is None else limit, self.engine.max_new_tokens
            ),
            top_logprobs=f.read("top_logprobs", INT) or 0,
        )


class _Models(_Route):
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


class _Health(_Route):
    def get(self) -> None:
        self.finish(
            {"status": "ok", "model": self.engine.name, "weights_version": self.engine.weights_version}
        )


class _NotFound(_Route):
    def prepare(self) -> None:
        self.fail(
            404,
            f"no route {self.request.method} {self.request.path}; "
            "expected /v1/chat/completions, /generate, /v1/models or /health",
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

    @property
    def url(self) -> str:
        """The server's root, e.g. ``http://127.0.0.1:41234`` (OpenAI clients want ``url + "/v1"``)."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> str:
        """Listen in the running event loop; returns ``url``."""
        app = tornado.web.Application(
            [
                (r"/v1/chat/completions", _Chat, {"server": self}),
                (r"/generate", _Generate, {"server": self}),
                (r"/v1/models", _Models, {"server": self}),
                (r"/health", _Health, {"server": self}),
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
    parser.add_argument("model", help="a Hugging Face model directory")
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
    engine = LocalEngine(
        args.model,
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
