"""Where the podman REST API lives: a private service we start, or a URL the user gives.

``PodmanService()`` starts ``podman system service`` on a private unix socket on
first use and stops it when closed or when this process dies (parent-death
signal), so nothing is left running. ``PodmanService("tcp://host:port")`` or
``PodmanService("ssh://user@host/run/podman/podman.sock")`` use a remote host
(ssh through a local forwarded socket); several services make one pool span hosts.

Two clients talk to the service: podman-py (blocking, run in a bounded thread
pool) for the container and image lifecycle, and ``kwaigym.sandbox.wire`` for
exec streams, which need a hijacked, bidirectional connection podman-py lacks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import functools
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import TypeVar
from urllib.parse import urlparse

import tenacity

from kwaigym.errors import ConfigError, PodmanUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

API_PREFIX = "/v4.0.0/libpod"
_READY_TIMEOUT_S = 30.0
_TRANSIENT_PHRASES = ("database is locked", "resource temporarily unavailable", "connection reset", "EOF")


def _die_with_parent() -> None:
    """Ask the kernel to SIGTERM the child when the process that spawned it dies."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def is_transient(exc: BaseException) -> bool:
    """True for podman API failures that a retry may fix (service busy or restarting)."""
    import podman.errors
    import requests

    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
        return True
    if isinstance(exc, podman.errors.APIError) and not isinstance(exc, podman.errors.NotFound):
        text = str(exc)
        return any(p in text for p in _TRANSIENT_PHRASES)
    return False


def _no_answer(exc: BaseException) -> bool:
    """The API gave no HTTP answer at all (service gone, connection lost): podman-py raises
    ``APIError`` without a response for that, or lets the connection error through."""
    import podman.errors
    import requests

    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError):
        return True
    return isinstance(exc, podman.errors.APIError) and getattr(exc, "response", None) is None


def _log_retry(state: tenacity.RetryCallState) -> None:
    log.warning(
        "podman call %s failed (%s), retry %d",
        getattr(state.fn, "__name__", state.fn),
        state.outcome.exception() if state.outcome else "?",
        state.attempt_number,
    )


#: Transient podman errors are retried a few times with backoff; real failures raise at once.
retry_transient = tenacity.retry(
    retry=tenacity.retry_if_exception(is_transient),
    stop=tenacity.stop_after_attempt(4),
    wait=tenacity.wait_exponential(multiplier=0.1, max=2.0),
    before_sleep=_log_retry,
    reraise=True,
)


class PodmanService:
    """A podman API endpoint plus the clients that talk to it.

    Args:
        url: ``None`` to start a private local service; ``unix:///path``,
            ``tcp://host:port`` or ``ssh://user@host[:port]/path/to/podman.sock``
            to use an existing one.
        identity: ssh private key for ``ssh://`` URLs.
        ssh_options: extra ssh arguments for ``ssh://`` URLs (e.g. ``["-o", "ProxyJump=bastion"]``).
        max_threads: bound on concurrent blocking podman-py calls.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        identity: str | None = None,
        ssh_options: Sequence[str] = (),
        max_threads: int = 64,
    ):
        self.url = url
        self.identity = identity
        self.ssh_options = list(ssh_options)
        self._procs: list[subprocess.Popen] = []
        self._tmpdir: str | None = None
        self._api_url: str | None = None
        self._client = None
        self._max_threads = max_threads
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._start_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._api_url is not None

    @property
    def is_local(self) -> bool:
        """True when the containers run on this machine (their netns can be entered directly)."""
        return self.url is None or self.url.startswith("unix://")

    async def start(self) -> PodmanService:
        """Start (or connect to) the service once; later calls return at once."""
        async with self._start_lock:
            if self._api_url is None:
                # Spawned from this thread, not a worker: the child's parent-death signal follows
                # the thread that forked it, and executor threads end before the process does.
                self._spawn()
                try:
                    await asyncio.get_running_loop().run_in_executor(None, self._wait_ready)
                except BaseException:
                    self.close()
                    raise
        return self

    def start_sync(self) -> PodmanService:
        """Blocking variant of ``start`` for command-line tools and test fixtures."""
        if self._api_url is None:
            self._spawn()
            try:
                self._wait_ready()
            except BaseException:
                self.close()
                raise
        return self

    def _spawn(self) -> None:
        self._api_url = self._spawn_private_service() if self.url is None else self._resolve_url(self.url)

    def _spawn_private_service(self) -> str:
        podman = shutil.which("podman")
        if podman is None:
            raise PodmanUnavailable(
                "podman is not installed on this machine; run `make test` or `kwaigym setup` "
                "(as root on Debian) to install it, or pass a remote url=..."
            )
        sock = os.path.join(self._make_tmpdir("kwaigym-podman-"), "podman.sock")
        self._launch([podman, "system", "service", "--time=0", f"unix://{sock}"])
        return f"unix://{sock}"

    def _make_tmpdir(self, prefix: str) -> str:
        self._tmpdir = tempfile.mkdtemp(prefix=prefix)
        return self._tmpdir

    def _launch(self, cmd: list[str]) -> None:
        """Start a helper process that dies with us, its output kept in the private directory's log."""
        assert self._tmpdir is not None
        with open(os.path.join(self._tmpdir, "service.log"), "wb") as log_file:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self._procs.append(proc)

    def _resolve_url(self, url: str) -> str:
        parsed = urlparse(url)
        if parsed.scheme == "unix" or parsed.scheme == "tcp":
            return url
        if parsed.scheme == "ssh":
            return self._spawn_ssh_tunnel(parsed)
        raise ConfigError(
            f"podman service URL {url!r} is not understood; expected unix:///path, tcp://host:port "
            "or ssh://user@host[:port]/run/podman/podman.sock"
        )

    def _spawn_ssh_tunnel(self, parsed) -> str:
        """Forward the remote socket to a private local one, so both clients speak to a unix socket."""
        if not parsed.path:
            raise ConfigError(
                f"ssh URL {self.url!r} names no socket path, e.g. ssh://root@host/run/podman/podman.sock"
            )
        sock = os.path.join(self._make_tmpdir("kwaigym-ssh-"), "podman.sock")
        cmd = [
            "ssh",
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-o",
            "BatchMode=yes",
            "-L",
            f"{sock}:{parsed.path}",
        ]
        if parsed.port:
            cmd += ["-p", str(parsed.port)]
        if self.identity:
            cmd += ["-i", self.identity]
        cmd += [
            *self.ssh_options,
            f"{parsed.username}@{parsed.hostname}" if parsed.username else parsed.hostname,
        ]
        self._launch(cmd)
        return f"unix://{sock}"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:  # a readiness poll, not a retry of a failed operation: a plain deadline loop is clearest
            dead = [p for p in self._procs if p.poll() is not None]
            if dead:
                raise PodmanUnavailable(
                    f"the podman service (or ssh tunnel) exited early; {self._log_tail()}"
                )
            try:
                if self.client.ping():
                    return
            except Exception as exc:  # noqa: BLE001 - any failure here means "not ready yet"
                last = exc
            else:
                last = None
            if time.monotonic() > deadline:
                raise PodmanUnavailable(
                    f"podman API at {self._api_url} did not answer within {_READY_TIMEOUT_S:.0f}s "
                    f"({last}); {self._log_tail()}"
                )
            time.sleep(0.05)

    def _log_tail(self) -> str:
        if not self._tmpdir or not os.path.exists(os.path.join(self._tmpdir, "service.log")):
            return "check that `podman info` works on that host"
        with open(os.path.join(self._tmpdir, "service.log"), errors="replace") as f:
            tail = f.read()[-800:].strip()
        return f"its log: {tail or '(empty)'}"

    def close(self) -> None:
        """Stop what we started (service, ssh tunnel) and drop the clients. Idempotent."""
        if self._client is not None:
            self._client.close()
            self._client = None
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        self._api_url = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def aclose(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    async def __aenter__(self) -> PodmanService:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def __enter__(self) -> PodmanService:
        return self.start_sync()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- clients ---------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        if self._api_url is None:
            raise ConfigError(
                "PodmanService is not started; `await service.start()` or use it as a context manager"
            )
        return self._api_url

    @property
    def client(self):
        """The podman-py client (blocking; call it through ``call``)."""
        if self._client is None:
            import podman

            self._client = podman.PodmanClient(base_url=self.api_url, timeout=600)
        return self._client

    async def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run a blocking podman-py call in the bounded pool, retrying transient failures."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self._max_threads, thread_name_prefix="kwaigym-podman"
            )
        bound = functools.partial(retry_transient(fn), *args, **kwargs)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, bound)
        except Exception as exc:
            if _no_answer(exc):  # an infrastructure failure (the episode's), not a bug to crash on
                raise PodmanUnavailable(f"the podman API at {self.api_url} did not answer: {exc}") from exc
            raise

    async def open_connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A fresh raw connection to the API (for hijacked exec streams)."""
        parsed = urlparse(self.api_url)
        try:
            if parsed.scheme == "unix":
                return await asyncio.open_unix_connection(parsed.path, limit=1 << 20)
            return await asyncio.open_connection(parsed.hostname, parsed.port, limit=1 << 20)
        except OSError as exc:
            raise PodmanUnavailable(f"cannot connect to the podman API at {self.api_url}: {exc}") from exc
