"""A small keep-alive HTTP/1.1 client for the upstream model server.

Why not httpx: on the proxy's hot path (one upstream call per intercepted agent call)
httpx costs about 1 ms of CPU per request, a third of the proxy's whole latency budget.
This client does only what ``UpstreamResponder`` needs, JSON POSTs to one origin over
kept-alive connections, on h11 (the HTTP/1.1 state machine mitmproxy also uses), so
framing (content-length, chunked) is h11's, not ours.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import h11


class TransportError(ConnectionError):
    """The upstream could not be reached or broke the connection; safe to retry."""


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.h11 = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.writer.close()


class Http1Pool:
    """Kept-alive connections to one origin (``http`` or ``https``)."""

    def __init__(self, base_url: str, headers: Mapping[str, str], *, timeout: float):
        url = urlsplit(base_url.rstrip("/"))
        self.host, self.prefix, self.timeout = url.hostname or "", url.path, timeout
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = ssl.create_default_context() if url.scheme == "https" else None
        netloc = self.host if url.port is None else f"{self.host}:{url.port}"
        self.headers = [("host", netloc), *headers.items()]
        self._idle: list[_Conn] = []
        self.base_url = base_url

    async def post_json(self, path: str, body: Any) -> tuple[int, bytes]:
        """POST ``body`` as JSON; (status, response bytes). Raises TransportError, TimeoutError."""
        data = json.dumps(body, ensure_ascii=False).encode()
        reused = bool(self._idle)
        try:
            return await asyncio.wait_for(self._exchange(path, data), self.timeout)
        except TransportError:
            if not reused:
                raise
            return await asyncio.wait_for(self._exchange(path, data), self.timeout)  # the kept one went stale

    async def _exchange(self, path: str, data: bytes) -> tuple[int, bytes]:
        conn = self._idle.pop() if self._idle else await self._open()
        headers = [*self.headers, ("content-type", "application/json"), ("content-length", str(len(data)))]
        try:
            request = h11.Request(method="POST", target=self.prefix + path, headers=headers)
            payload = conn.h11.send(request) + conn.h11.send(h11.Data(data=data))
            conn.writer.write(payload + conn.h11.send(h11.EndOfMessage()))
            await conn.writer.drain()
            status, parts = 0, []
            while True:
                event = conn.h11.next_event()
                if event is h11.NEED_DATA:
                    chunk = await conn.reader.read(1 << 16)
                    if not chunk and conn.h11.their_state is h11.SEND_RESPONSE and not status:
                        raise TransportError(f"{self.base_url} closed the connection before answering")
                    conn.h11.receive_data(chunk)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    parts.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise TransportError(f"{self.base_url} closed the connection mid-answer")
        except (OSError, h11.ProtocolError) as exc:
            conn.close()
            raise TransportError(f"{self.base_url}: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        if conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            self._idle.append(conn)
        else:
            conn.close()
        return status, b"".join(parts)

    async def _open(self) -> _Conn:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl, limit=1 << 20)
        except OSError as exc:
            raise TransportError(f"cannot connect to {self.base_url}: {exc}") from exc
        return _Conn(reader, writer)

    async def aclose(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()
