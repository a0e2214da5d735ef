"""The model endpoints, served on a private loopback port behind mitmproxy.

mitmproxy sends an answer that an addon makes up as one piece; an agent that asked
for a stream must instead get its first events at once and keep-alives while the
policy thinks, or its idle timer fires. So mitmproxy forwards model calls here, to a
small HTTP/1.1 server (h11, which mitmproxy itself uses) in the same event loop, and
streams its answers through. This server decodes the call with the codec of its
route, asks the episode's responder, encodes the answer (JSON, or an SSE stream with
keep-alives), and records the call. It trusts the ``x-kwaigym-episode`` header, which
only the addon sets after checking the episode's token; it listens on loopback only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import h11

from kwaigym.chat import anthropic
from kwaigym.chat.codec import BadRequest, codec_for
from kwaigym.chat.types import ChatRequest, Completion, WireFormat
from kwaigym.proxy.recorder import CallRecord, Recorder
from kwaigym.proxy.responders import CallContext, Responder, new_call_id
from kwaigym.proxy.tagging import Tagger, recordable_headers

log = logging.getLogger(__name__)

EPISODE_HEADER = "x-kwaigym-episode"
MAX_BODY = 32 * 1024 * 1024
ROUTES: dict[str, WireFormat] = {
    "/v1/messages": "anthropic",
    "/v1/messages/count_tokens": "anthropic",
    "/v1/chat/completions": "openai-chat",
    "/v1/responses": "openai-responses",
}


def route(path: str) -> WireFormat | None:
    """The wire format of a model endpoint path (query string ignored; ``/v1`` optional)."""
    path = path.split("?", 1)[0].rstrip("/")
    return ROUTES.get(path) or ROUTES.get("/v1" + path)


def error_body(fmt: WireFormat | None, status: int, message: str) -> dict[str, Any]:
    """An error in the shape the agent's SDK parses for its format."""
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
            413: "request_too_large"}.get(status, "api_error")  # fmt: skip
    if fmt == "anthropic":
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "code": status}}


class ModelEndpoints:
    """The HTTP server behind the proxy. ``responders`` maps episode ids to their responder."""

    def __init__(
        self, responders: Callable[[str], Responder | None], recorder: Recorder, *, keepalive_s: float = 5.0
    ):
        self._responders = responders
        self.recorder = recorder
        self.tagger = Tagger()
        self.keepalive_s = keepalive_s
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        # mitmproxy opens one connection here per agent connection that streams: room for a burst
        self._server = await asyncio.start_server(
            self._connection, "127.0.0.1", 0, limit=1 << 20, backlog=4096
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and end open connections (their handlers finish on the closed stream)."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._open):
                writer.close()
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
        self._open.add(writer)
        try:
            while True:
                request, body = await _read_request(conn, reader)
                if request is None:
                    return
                await self._handle(conn, writer, request, body)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.RemoteProtocolError, ConnectionError, asyncio.IncompleteReadError) as exc:
            log.debug("model endpoint connection ended: %s", exc)
        finally:
            self._open.discard(writer)
            writer.close()

    async def _handle(self, conn, writer, request: h11.Request, body: bytes) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        episode_id = headers.get(EPISODE_HEADER, "")
        await self.handle(_Sender(conn, writer), episode_id, request.target.decode(), body, headers=headers)

    async def handle(
        self,
        send,
        episode_id: str,
        path: str,
        body: bytes,
        parsed: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer one model call through ``send`` and record it. ``parsed``: the body's JSON, if the
        caller already decoded it (the addon answers plain calls inside mitmproxy this way);
        ``headers``: the agent's request headers (lower-case names), which tag the call."""
        fmt = route(path)
        headers = recordable_headers(
            headers or {}, drop=frozenset({EPISODE_HEADER, "host", "content-length"})
        )
        record = CallRecord(call_id=new_call_id(), episode_id=episode_id, format=fmt, path=path,
                            started_at=time.time(), headers=headers)  # fmt: skip
        started = time.monotonic()
        try:
            await self._serve(send, record, body, started, parsed)
        except Exception as exc:  # a bug must cost one call an error answer, not the connection
            log.exception("episode %s: call %s failed", record.episode_id, record.call_id)
            record.error = f"{type(exc).__name__}: {exc}"
            if not send.started:
                await send.json(record, 500, error_body(fmt, 500, f"kwaigym proxy: internal error: {exc}"))
        finally:
            record.total_s = time.monotonic() - started
            if record.episode_id:
                self.recorder.add(record)

    def record_auxiliary(self, episode_id: str, path: str, headers: dict[str, str], answer: Any) -> None:
        """Record a side call the proxy answered itself (a model listing), tagged auxiliary."""
        headers = recordable_headers({k.lower(): v for k, v in headers.items()})
        self.recorder.add(CallRecord(
            call_id=new_call_id(), episode_id=episode_id, format=None, path=path, started_at=time.time(),
            headers=headers, response_raw=answer, status=200, ttfb_s=0.0, total_s=0.0, kind="auxiliary",
        ))  # fmt: skip

    async def _serve(self, send, record: CallRecord, body: bytes, started: float, parsed: Any) -> None:
        fmt = record.format
        responder = self._responders(record.episode_id)
        try:
            record.request_raw = parsed if parsed is not None else json.loads(body) if body else None
        except ValueError as exc:
            record.request_raw = body.decode(errors="replace")
            return await send.json(record, 400, error_body(fmt, 400, f"request body is not JSON: {exc}"))
        if fmt is None or responder is None:
            what = f"no model endpoint at {record.path}" if fmt is None else "unknown episode"
            return await send.json(record, 404, error_body(fmt, 404, what))
        codec = codec_for(fmt)
        counting = record.path.split("?")[0].rstrip("/").endswith("/count_tokens")
        try:
            if counting:
                request = anthropic.decode_count_tokens_request(record.request_raw)
            else:
                request = codec.decode_request(record.request_raw)
        except BadRequest as exc:
            return await send.json(record, 400, error_body(fmt, 400, exc.message))
        record.request, record.stream = request, request.stream
        tag = self.tagger.tag(record.episode_id, record.path, record.headers, request)
        record.kind, record.agent_id = tag.kind, tag.agent_id
        if counting:
            return await send.json(record, 200, anthropic.count_tokens_response(request))
        ctx = CallContext(
            episode_id=record.episode_id, call_id=record.call_id, kind=tag.kind, agent_id=tag.agent_id
        )
        answer = asyncio.ensure_future(responder.respond(request, ctx))
        try:
            if request.stream:
                await self._stream(send, record, codec, request, answer, started)
            else:
                await self._plain(send, record, codec, request, answer, started)
        finally:
            answer.cancel()

    async def _plain(self, send, record, codec, request: ChatRequest, answer: asyncio.Future, started: float):
        try:
            completion = await answer
        except Exception as exc:  # the responder failed: the agent sees an API error, the record why
            record.error = f"{type(exc).__name__}: {exc}"
            return await send.json(record, 502, error_body(request.format, 502, f"policy failed: {exc}"))
        record.completion = completion
        body = codec.encode_response(completion, request, response_id=_response_id(request))
        record.ttfb_s = time.monotonic() - started
        await send.json(record, 200, body)

    async def _stream(
        self, send, record, codec, request: ChatRequest, answer: asyncio.Future, started: float
    ):
        response_id = _response_id(request)
        await send.start(200, "text/event-stream")
        prelude = codec.sse_prelude(request, response_id=response_id)
        await send.chunk(prelude or codec.sse_keepalive())
        record.ttfb_s = time.monotonic() - started
        events = [prelude] if prelude else []
        while True:
            done, _ = await asyncio.wait({answer}, timeout=self.keepalive_s)
            if done:
                break
            await send.chunk(codec.sse_keepalive())
        try:
            completion: Completion = answer.result()
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            tail = (
                b"event: error\ndata: "
                + json.dumps(error_body(request.format, 502, f"policy failed: {exc}")).encode()
            )
            await send.chunk(tail + b"\n\n")
        else:
            record.completion = completion
            rest = codec.sse_completion(completion, request, response_id=response_id)
            events.append(rest)
            await send.chunk(rest)
        record.response_raw = b"".join(events).decode(errors="replace")
        record.status = 200
        await send.end()


def _response_id(request: ChatRequest) -> str:
    prefix = {"anthropic": "msg_", "openai-chat": "chatcmpl-", "openai-responses": "resp_"}[request.format]
    return prefix + uuid.uuid4().hex[:24]


def note_answer(record: CallRecord, status: int, body: dict[str, Any]) -> bytes:
    """Record a JSON answer (and the error it carries) and return its bytes."""
    record.status, record.response_raw = status, body
    if status >= 400 and not record.error and isinstance(body.get("error"), dict):
        record.error = body["error"].get("message")
    return json.dumps(body, ensure_ascii=False).encode()


class _Sender:
    """Writes one HTTP response through h11."""

    def __init__(self, conn: h11.Connection, writer: asyncio.StreamWriter):
        self.conn, self.writer = conn, writer
        self.started = False

    async def _write(self, event) -> None:
        self.started = True
        self.writer.write(self.conn.send(event))
        await self.writer.drain()

    async def start(self, status: int, content_type: str) -> None:
        headers = [
            ("content-type", content_type),
            ("cache-control", "no-cache"),
            ("transfer-encoding", "chunked"),
        ]
        await self._write(h11.Response(status_code=status, headers=headers))

    async def chunk(self, data: bytes) -> None:
        if data:
            await self._write(h11.Data(data=data))

    async def end(self) -> None:
        await self._write(h11.EndOfMessage())

    async def json(self, record: CallRecord, status: int, body: dict[str, Any]) -> None:
        data = note_answer(record, status, body)
        headers = [("content-type", "application/json"), ("content-length", str(len(data)))]
        self.started = True
        head = self.conn.send(h11.Response(status_code=status, headers=headers))
        self.writer.write(head + self.conn.send(h11.Data(data=data)) + self.conn.send(h11.EndOfMessage()))
        await self.writer.drain()


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader
) -> tuple[h11.Request | None, bytes]:
    request, body = None, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(1 << 16)
            conn.receive_data(data)
            if not data and request is None:
                return None, b""
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise h11.RemoteProtocolError("request body too large")
        elif isinstance(event, h11.EndOfMessage):
            return request, bytes(body)
        elif isinstance(event, h11.ConnectionClosed):
            return None, b""
