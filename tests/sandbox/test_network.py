"""Network policies: `none` reaches nothing, `proxy` reaches exactly the named host port.

The servers are on this host's loopback; every connection goes from a sandbox (a network
namespace the test made) to loopback, or to addresses inside that namespace's own user-mode
network. Nothing else is ever contacted.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from kwaigym.sandbox import PROXY_HOST, NetworkPolicy

pytestmark = pytest.mark.podman

# Prints "ok <first bytes>" or "fail <error class>" for a TCP connect + HTTP GET, within 3 s.
PROBE = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    s = socket.create_connection((host, port), timeout=3)
    s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
    print("ok", s.recv(64).decode(errors="replace").split()[0])
except Exception as e:
    print("fail", type(e).__name__)
"""
UDP_PROBE = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
try:
    s.sendto(b"x", ("10.0.2.3", 53)); s.recv(10); print("ok")
except Exception as e:
    print("fail", type(e).__name__)
"""


@contextlib.asynccontextmanager
async def http_server():
    """A tiny HTTP server on 127.0.0.1, on a free port."""

    async def answer(reader, writer):
        await reader.read(100)
        writer.write(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nhi")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def probe(sb, host: str, port: int) -> str:
    result = await sb.exec(["python3", "-c", PROBE, host, str(port)], timeout=20)
    return result.stdout.strip()


async def test_none_reaches_no_host_port(backend, spec):
    """With mode `none` the host's loopback is unreachable, by either address."""
    async with http_server() as port, backend.sandbox(spec(network=NetworkPolicy(mode="none"))) as sb:
        assert (await probe(sb, PROXY_HOST, port)).startswith("fail")
        assert (await probe(sb, "127.0.0.1", port)).startswith("fail")
        interfaces = await sb.exec("cat /proc/net/dev")
    assert [ln.split(":")[0].strip() for ln in interfaces.stdout.splitlines()[2:]] == ["lo"]


async def test_proxy_reaches_only_the_named_port(backend, spec):
    """Mode `proxy` reaches the named host port and is refused at once everywhere else."""
    async with http_server() as allowed, http_server() as other:
        policy = NetworkPolicy(mode="proxy", proxy_port=allowed)
        async with backend.sandbox(spec(network=policy)) as sb:
            assert await probe(sb, PROXY_HOST, allowed) == "ok HTTP/1.0"
            assert await probe(sb, PROXY_HOST, other) == "fail ConnectionRefusedError"
            assert await probe(sb, "10.0.2.3", 53) == "fail ConnectionRefusedError"  # slirp's DNS
            udp = await sb.exec(["python3", "-c", UDP_PROBE], timeout=20)
            tamper = await sb.exec("iptables -F 2>&1 || ip link set tap0 down 2>&1; echo done")
            assert await probe(sb, PROXY_HOST, other) == "fail ConnectionRefusedError"
    assert udp.stdout.startswith("fail")
    assert "done" in tamper.stdout


async def test_open_does_not_expose_host_loopback(backend, spec):
    """Mode `open` has a network but no path to the host's loopback."""
    async with http_server() as port, backend.sandbox(spec(network=NetworkPolicy(mode="open"))) as sb:
        assert (await probe(sb, PROXY_HOST, port)).startswith("fail")
        routes = await sb.exec("cat /proc/net/route")
    assert "tap0" in routes.stdout
