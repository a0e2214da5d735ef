"""The upstream HTTP/1.1 client: keep-alive reuse, stale connections, chunked answers, failures."""

from __future__ import annotations

import asyncio

import pytest

from kwaigym.proxy.http1 import Http1Pool, TransportError


async def serve(answer: bytes, *, close_after: bool):
    """A loopback server answering every request with ``answer``; counts its connections."""
    connections = []

    async def handle(reader, writer):
        connections.append(writer)
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            length = int(
                next(h for h in head.decode().split("\r\n") if h.lower().startswith("content-length")).split(
                    ":"
                )[1]
            )
            await reader.readexactly(length)
            writer.write(answer)
            await writer.drain()
            if close_after:  # drop the connection without saying so: the client's kept one goes stale
                break
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", connections


OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
CHUNKED = b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"


async def test_connections_are_kept_alive():
    """Sequential calls reuse one connection."""
    server, url, connections = await serve(OK, close_after=False)
    async with server:
        pool = Http1Pool(url, {}, timeout=5)
        results = [await pool.post_json("/x", {"n": n}) for n in range(5)]
        await pool.aclose()
        await asyncio.sleep(0.05)  # let the server's handlers see the close and end
    assert results == [(200, b"ok")] * 5 and len(connections) == 1


async def test_stale_connection_is_replaced():
    """A kept connection the server dropped is replaced at once, without an error."""
    server, url, connections = await serve(OK, close_after=True)
    async with server:
        pool = Http1Pool(url, {}, timeout=5)
        results = []
        for n in range(3):
            results.append(await pool.post_json("/x", {"n": n}))
            await asyncio.sleep(0.05)  # let the server's close arrive
        await pool.aclose()
        await asyncio.sleep(0.05)  # let the server's handlers see the close and end
    assert results == [(200, b"ok")] * 3 and len(connections) == 3


async def test_chunked_answer_and_unreachable_upstream():
    """Chunked bodies are joined; a closed port is a TransportError (retryable)."""
    server, url, _ = await serve(CHUNKED, close_after=False)
    async with server:
        pool = Http1Pool(url, {"authorization": "Bearer k"}, timeout=5)
        assert await pool.post_json("/x", {}) == (201, b"abcde")
        await pool.aclose()
        await asyncio.sleep(0.05)  # let the server's handlers see the close and end
    with pytest.raises(TransportError):
        await Http1Pool("http://127.0.0.1:9/v1", {}, timeout=5).post_json("/x", {})
