"""Exec streams on podman's REST API, in asyncio.

podman-py runs exec sessions blocking and cannot write to a process's stdin (its
``socket`` argument is unused), and a persistent shell needs exactly that: one
hijacked connection that carries stdin one way and the multiplexed
stdout/stderr frames the other. This module speaks the few HTTP/1.1 requests
that exec needs directly on the service's socket; everything else goes through
podman-py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
from typing import Any

import tenacity

from kwaigym.errors import PodmanUnavailable, SandboxError, SandboxGone
from kwaigym.sandbox.service import API_PREFIX, PodmanService

log = logging.getLogger(__name__)
STDOUT, STDERR = 1, 2


async def _send(service: PodmanService, method: str, path: str, body: Any = None):
    reader, writer = await service.open_connection()
    data = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} {API_PREFIX}{path} HTTP/1.1\r\nHost: podman\r\nConnection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    try:
        writer.write(head.encode() + data)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionResetError(f"podman API closed the connection on {method} {path}")
        status = int(status_line.split()[1])
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
    except BaseException:
        writer.close()
        raise
    return status, headers, reader, writer


async def _read_body(status: int, headers: dict, reader: asyncio.StreamReader) -> bytes:
    if status in (204, 304):
        return b""
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding") == "chunked":
        parts = []
        while size := int((await reader.readline()).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readline()
        await reader.readline()
        return b"".join(parts)
    return await reader.read()


def _transient(method: str):
    """A failed connect never reached the service, so any request may be resent; a dropped
    connection only for GET, which changes nothing."""

    def check(exc: BaseException) -> bool:
        if isinstance(exc, PodmanUnavailable):
            return True
        return method == "GET" and isinstance(exc, ConnectionError | asyncio.IncompleteReadError)

    return check


_DROPPED = (ConnectionError, asyncio.IncompleteReadError)
"""A connection to the API that broke (the service died or restarted): an infrastructure failure."""


def _connection_failed(what: str, exc: BaseException) -> SandboxError:
    return SandboxError(f"podman API connection failed on {what}: {exc or type(exc).__name__}")


def _log_retry(state: tenacity.RetryCallState) -> None:
    log.warning("podman API call failed (%s), retry %d", state.outcome.exception(), state.attempt_number)


async def request(service: PodmanService, method: str, path: str, body: Any = None) -> Any:
    """One JSON request/response; API errors become ``SandboxGone`` (404/409) or ``SandboxError``.

    Transient failures are retried a few times with backoff (see ``_transient``); others raise at once.
    """
    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(_transient(method)),
        stop=tenacity.stop_after_attempt(4),
        wait=tenacity.wait_exponential(multiplier=0.1, max=2.0),
        before_sleep=_log_retry,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await _request_once(service, method, path, body)
    except _DROPPED as exc:
        raise _connection_failed(f"{method} {path}", exc) from exc


async def _request_once(service: PodmanService, method: str, path: str, body: Any) -> Any:
    status, headers, reader, writer = await _send(service, method, path, body)
    try:
        payload = await _read_body(status, headers, reader)
    finally:
        writer.close()
    decoded = json.loads(payload) if payload.strip() else None
    if status >= 400:
        message = (
            decoded.get("message", payload.decode(errors="replace")) if isinstance(decoded, dict) else payload
        )
        error = SandboxGone if status in (404, 409) else SandboxError
        raise error(f"podman API {method} {path} answered {status}: {message}")
    return decoded


class ExecStream:
    """A started exec session: write stdin, read demultiplexed (stream, bytes) frames."""

    def __init__(self, exec_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.exec_id = exec_id
        self._reader = reader
        self._writer = writer

    async def write(self, data: bytes) -> None:
        self._writer.write(data)  # a ConnectionError here is the shell session's sign of a killed shell
        await self._writer.drain()

    def close_stdin(self) -> None:
        if self._writer.can_write_eof() and not self._writer.is_closing():
            self._writer.write_eof()

    async def read_frame(self) -> tuple[int, bytes] | None:
        """Next (stream, payload); None at end of stream."""
        try:
            header = await self._reader.readexactly(8)
            kind, size = struct.unpack(">BxxxL", header)
            return kind, await self._reader.readexactly(size)
        except asyncio.IncompleteReadError:
            return None

    def close(self) -> None:
        self._writer.close()


async def exec_create(
    service: PodmanService,
    container_id: str,
    argv: list[str],
    *,
    env: dict[str, str],
    workdir: str | None,
    user: str | None,
    stdin: bool,
) -> str:
    body = {
        "AttachStdin": stdin,
        "AttachStdout": True,
        "AttachStderr": True,
        "Cmd": argv,
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Tty": False,
    }
    if workdir:
        body["WorkingDir"] = workdir
    if user:
        body["User"] = user
    return (await request(service, "POST", f"/containers/{container_id}/exec", body))["Id"]


async def exec_start(service: PodmanService, exec_id: str) -> ExecStream:
    """Start an exec session on a hijacked connection (stdin and output on one socket)."""
    try:
        status, headers, reader, writer = await _send(
            service, "POST", f"/exec/{exec_id}/start", {"Detach": False}
        )
    except _DROPPED as exc:  # not resent: the exec may have started
        raise _connection_failed(f"POST /exec/{exec_id[:12]}/start", exc) from exc
    if status >= 400:
        try:
            payload = await _read_body(status, headers, reader)
        finally:
            writer.close()
        error = SandboxGone if status in (404, 409) else SandboxError
        raise error(f"podman could not start exec {exec_id[:12]}: {status} {payload[:300]!r}")
    return ExecStream(exec_id, reader, writer)


async def exec_exit_code(service: PodmanService, exec_id: str) -> int | None:
    """The exit code of a finished exec session (None while it still runs)."""
    info = await request(service, "GET", f"/exec/{exec_id}/json")
    return None if info.get("Running") else info.get("ExitCode")
