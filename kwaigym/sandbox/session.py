"""A persistent shell in a sandbox: stateful and fast.

One long-lived shell (bash when the image has it, else sh) reads commands from a
hijacked exec stream. Each command runs in that shell itself, so ``cd`` and
``export`` persist, with stdin from /dev/null so it cannot swallow the next
command. The end of a command is found by a random marker the shell prints after
it on stdout (with the exit code) and on stderr. No process or HTTP request is
created per command, which makes a call take milliseconds instead of the ~0.1 s
of a fresh podman exec.

On timeout every process of the session is killed and the next call starts a
fresh shell: its cwd and variables are reset, and the error says so. The shell
first prints a start marker for each command, so a shell killed from outside (a
verifier's seal) is told apart from a command that ends the shell: the command is
run again, once, in a new shell.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Protocol

from kwaigym.errors import SandboxTimeout
from kwaigym.sandbox import wire
from kwaigym.sandbox.base import ExecResult
from kwaigym.sandbox.output import CappedBuffer

_SHELL = "command -v bash >/dev/null 2>&1 && exec bash --noprofile --norc; exec sh"
# `sh` (dash) exits on a syntax error inside eval, so there the script is parsed first with `sh -n`.
_TEMPLATE = """printf '{nonce}>'
__kw_s='{script}'
if [ -n "$BASH_VERSION" ] || sh -n -c "$__kw_s" 2>/dev/null; then eval "$__kw_s" </dev/null; \
else sh -n -c "$__kw_s"; (exit 2); fi
__kw_rc=$?; printf '\\n{nonce}:%d\\n' "$__kw_rc"; printf '\\n{nonce}\\n' >&2
"""


class _MarkerScanner:
    """Feeds a stream into a buffer until a marker appears; keeps what follows it."""

    def __init__(self, marker: bytes, sink: CappedBuffer):
        self.marker = marker
        self.sink = sink
        self._pending = b""
        self.after: bytes | None = None  # bytes after the marker, once seen

    def feed(self, data: bytes) -> None:
        if self.after is not None:
            self.after += data
            return
        buf = self._pending + data
        idx = buf.find(self.marker)
        if idx >= 0:
            self.sink.write(buf[:idx])
            self.after = buf[idx + len(self.marker) :]
            return
        keep = len(self.marker) - 1
        self.sink.write(buf[:-keep] if len(buf) > keep else b"")
        self._pending = buf[-keep:] if len(buf) > keep else buf


class _ShellGone(Exception):
    """The shell had died before it read the command (killed from outside): start a new one."""


class SessionHost(Protocol):
    """What a session needs from its sandbox."""

    episode_id: str

    async def open_exec(self, argv: list[str], *, marker: str, stdin: bool) -> wire.ExecStream: ...

    async def kill_marked(self, marker: str) -> None: ...

    async def exit_code(self, exec_id: str) -> int: ...


class ShellSession:
    """A persistent shell in one container. Calls are serialised."""

    def __init__(self, host: SessionHost):
        self._host = host
        self._episode_id = host.episode_id
        self._stream: wire.ExecStream | None = None
        self._token = ""
        self._lock = asyncio.Lock()

    async def _ensure(self) -> wire.ExecStream:
        if self._stream is None:
            self._token = uuid.uuid4().hex
            self._stream = await self._host.open_exec(
                ["/bin/sh", "-c", _SHELL], marker=self._token, stdin=True
            )
        return self._stream

    async def run(self, script: str, *, timeout: float | None, max_output: int) -> ExecResult:
        async with self._lock:
            try:
                return await self._run(script, timeout=timeout, max_output=max_output)
            except _ShellGone:  # e.g. a verifier's seal killed it: the command never ran, run it anew
                return await self._run(script, timeout=timeout, max_output=max_output)

    async def _run(self, script: str, *, timeout: float | None, max_output: int) -> ExecResult:
        stream = await self._ensure()
        nonce = uuid.uuid4().hex
        out, err = CappedBuffer(max_output), CappedBuffer(max_output)
        out_scan = _MarkerScanner(f"\n{nonce}:".encode(), out)
        started_scan = _MarkerScanner(f"{nonce}>".encode(), CappedBuffer(64))
        err_scan = _MarkerScanner(f"\n{nonce}\n".encode(), err)
        escaped = script.replace("'", "'\\''")
        started = time.monotonic()
        command = _TEMPLATE.format(script=escaped, nonce=nonce).encode()
        try:
            await stream.write(command)
        except (ConnectionError, OSError):  # the shell was killed from outside (a verifier's seal)
            stream.close()
            self._stream = None
            stream = await self._ensure()
            await stream.write(command)
        try:
            code = await asyncio.wait_for(
                self._read_until_done(stream, started_scan, out_scan, err_scan), timeout
            )
        except (TimeoutError, asyncio.CancelledError) as exc:
            await self.reset()
            if isinstance(exc, asyncio.CancelledError):
                raise
            partial = _result(-9, out, err, started)
            raise SandboxTimeout(
                f"shell command ran past its timeout of {timeout}s and was killed with its children; "
                "the shell session was restarted, so its cwd and variables are reset",
                result=partial,
                episode_id=self._episode_id,
            ) from None
        return _result(code, out, err, started)

    async def _read_until_done(
        self,
        stream: wire.ExecStream,
        started: _MarkerScanner,
        out_scan: _MarkerScanner,
        err_scan: _MarkerScanner,
    ) -> int:
        while out_scan.after is None or b"\n" not in out_scan.after or err_scan.after is None:
            frame = await stream.read_frame()
            if frame is None:  # the shell itself exited (`exit N`, killed, container gone)
                self._stream = None
                stream.close()
                if started.after is None:  # before it read the command: it was dead already
                    raise _ShellGone
                if out_scan.after is None:  # the command ended the shell: its status is the shell's
                    return await self._host.exit_code(stream.exec_id)
                break
            kind, data = frame
            if kind == wire.STDOUT and started.after is None:
                started.feed(data)  # the shell's note that it read the command; nothing precedes it
                if started.after is None:
                    continue
                data, started.after = started.after, b""
            (out_scan if kind == wire.STDOUT else err_scan).feed(data)
        return int(out_scan.after.split(b"\n", 1)[0])

    async def reset(self) -> None:
        """Kill the shell and everything it started; the next call starts a new one."""
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
            await self._host.kill_marked(self._token)

    async def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def _result(code: int, out: CappedBuffer, err: CappedBuffer, started: float) -> ExecResult:
    return ExecResult(
        exit_code=code,
        stdout=out.text(),
        stderr=err.text(),
        duration_s=time.monotonic() - started,
        truncated=out.truncated or err.truncated,
    )
