"""The exec wire protocol, output capping and marker scanning, against a fake podman neighbour.

The part under test (``wire.request``, ``CappedBuffer``, the session's marker scanner) is real;
only the podman service is replaced by a small HTTP server on loopback.
"""

from __future__ import annotations

import asyncio

import pytest

from kwaigym.errors import PodmanUnavailable, SandboxError, SandboxGone
from kwaigym.sandbox import wire
from kwaigym.sandbox.output import CappedBuffer
from kwaigym.sandbox.session import _MarkerScanner


class FakeService:
    """Stands in for PodmanService: connects to a loopback server, failing the first ``refuse`` times."""

    def __init__(self, port: int, refuse: int = 0):
        self.port, self.refuse, self.connects = port, refuse, 0

    async def open_connection(self):
        self.connects += 1
        if self.connects <= self.refuse:
            raise PodmanUnavailable("connection refused (fake)")
        return await asyncio.open_connection("127.0.0.1", self.port)


async def serve(responses: list[bytes]):
    """A server answering each connection with the next canned response (b"" drops the connection)."""
    answers = iter(responses)

    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(next(answers))
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def answer(status: str, body: bytes = b"") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


OK_JSON = answer("200 OK", b'{"Id": "x"}')
CHUNKED = b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n'


async def test_refused_connections_are_retried_for_any_method():
    """A connect that failed never reached podman, so even a POST is sent again."""
    server = await serve([OK_JSON])
    async with server:
        svc = FakeService(server.sockets[0].getsockname()[1], refuse=2)
        assert await wire.request(svc, "POST", "/containers/create", {}) == {"Id": "x"}
    assert svc.connects == 3


async def test_retries_are_bounded():
    """A service that never answers fails after a few tries, with the original error."""
    svc = FakeService(1, refuse=100)
    with pytest.raises(PodmanUnavailable):
        await wire.request(svc, "GET", "/_ping")
    assert svc.connects == 4


async def test_dropped_get_is_retried_but_dropped_post_is_not():
    """A GET cut off mid-answer is resent; a POST, which may have acted, is not."""
    server = await serve([b"", OK_JSON, b""])
    async with server:
        svc = FakeService(server.sockets[0].getsockname()[1])
        assert await wire.request(svc, "GET", "/containers/x/json") == {"Id": "x"}
        with pytest.raises(SandboxError):
            await wire.request(svc, "POST", "/containers/x/start")
    assert svc.connects == 3


async def test_bodies_and_errors_are_decoded():
    """Chunked bodies and 204 are read; 404 becomes SandboxGone and 500 SandboxError with podman's message."""
    server = await serve(
        [
            CHUNKED,
            b"HTTP/1.1 204 No Content\r\n\r\n",
            answer("404 Not Found", b'{"message": "no such container"}'),
            answer("500 Internal Server Error", b'{"message": "boom"}'),
        ]
    )
    async with server:
        svc = FakeService(server.sockets[0].getsockname()[1])
        assert await wire.request(svc, "GET", "/a") == {"a": 1}
        assert await wire.request(svc, "POST", "/b") is None
        with pytest.raises(SandboxGone, match="no such"):
            await wire.request(svc, "GET", "/c")
        with pytest.raises(SandboxError, match="boom"):
            await wire.request(svc, "POST", "/d")


def test_capped_buffer_keeps_head_and_tail():
    """Past the cap the middle is dropped and counted; below it nothing changes."""
    small = CappedBuffer(100)
    small.write(b"hello")
    assert (small.text(), small.truncated) == ("hello", False)
    buf = CappedBuffer(10)
    for chunk in (b"abc", b"defgh", b"ijklmnop", b"qrstuvwxyz"):
        buf.write(chunk)
    assert buf.getvalue() == b"abcdevwxyz" and buf.dropped == 16
    assert buf.text() == "abcde\n[... kwaigym: 16 bytes of output truncated ...]\nvwxyz"


def test_marker_scanner_finds_markers_split_across_frames():
    """The end marker is found however the stream is cut, and nothing after it leaks into the output."""
    text = b"line one\nline two" + b"\nMARK:7\n"
    for cut in range(1, 8):
        sink = CappedBuffer()
        scanner = _MarkerScanner(b"\nMARK:", sink)
        for i in range(0, len(text), cut):
            scanner.feed(text[i : i + cut])
        assert sink.getvalue() == b"line one\nline two"
        assert scanner.after == b"7\n"


@pytest.mark.parametrize("cap", [1 << 20, 64])
def test_exit_status_trailer_is_popped_whole_or_not_at_all(cap):
    """The exec's status line is taken off the end of stderr (also past truncation); other text stays."""
    tag = b"KWAIGYM_EXIT_STATUS_abc:"
    for before, status in ((b"", b"0"), (b"warning: x\n", b"3"), (b"no newline", b"137"), (b"z" * 500, b"1")):
        buf = CappedBuffer(cap)
        for i in range(0, len(before), 7):  # in frames, as the stream delivers it
            buf.write(before[i : i + 7])
        buf.write(b"\n" + tag + status + b"\n")
        assert buf.pop_trailer(tag) == status
        assert b"KWAIGYM_EXIT" not in buf.getvalue()
        if not buf.truncated:
            assert buf.getvalue() == before
    for text in (b"plain\n", b"\n" + tag + b"1\nmore\n", b"\n" + tag + b"2"):  # no trailer at the very end
        buf = CappedBuffer(cap)
        buf.write(text)
        assert buf.pop_trailer(tag) is None and buf.getvalue() == text[: cap // 2] + text[cap // 2 :][-cap:]
