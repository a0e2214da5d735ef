"""The servers an SGLang client talks to: JSON POSTs with typed errors and retries, and the router.

Connections are kept alive, one pool per server and event loop (a connection belongs to the loop
that opened it). Failures are translated here, once: unreachable, timed out, 5xx or 429 are retried
(tenacity) and then an ``UpstreamError`` (an ``InfraError``: retry the episode); a 4xx is a
``ConfigError`` (the request is wrong); an answer that is not JSON is an ``UpstreamError``. Every
message names the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import tenacity

from kwaigym.errors import ConfigError
from kwaigym.proxy.http1 import Http1Pool, TransportError
from kwaigym.proxy.responders import UpstreamError

log = logging.getLogger(__name__)


class Router:
    """Session-sticky, least-loaded choice among ``n`` servers (what SGLang's gateway calls cache-aware)."""

    def __init__(self, n: int, max_sessions: int = 10_000):
        self.inflight, self.sessions = [0] * n, [0] * n
        self.max_sessions = max_sessions
        self._home: OrderedDict[str, int] = OrderedDict()

    def pick(self, session: str | None) -> int:
        """The server for a request of ``session`` (None: the least loaded now)."""
        if session is not None and session in self._home:
            self._home.move_to_end(session)
            return self._home[session]
        best = min(range(len(self.inflight)), key=lambda i: (self.inflight[i], self.sessions[i], i))
        if session is not None:
            self._home[session] = best
            self.sessions[best] += 1
            if len(self._home) > self.max_sessions:
                _, gone = self._home.popitem(last=False)
                self.sessions[gone] -= 1
        return best


class _Retryable(Exception):
    pass


class Servers:
    """The servers at ``urls``, their connections and their ``router``."""

    def __init__(self, urls: Sequence[str], *, timeout_s: float, max_sessions: int = 10_000):
        self.urls, self.timeout_s = list(urls), timeout_s
        self.router = Router(len(self.urls), max_sessions)
        self._pools: dict[Any, dict[str, Http1Pool]] = {}

    async def aclose_connections(self) -> None:
        """Close the running loop's kept-alive connections (before that loop ends)."""
        for pool in self._pools.pop(asyncio.get_running_loop(), {}).values():
            await pool.aclose()

    def pool(self, url: str) -> Http1Pool:
        """Connections of the running loop to ``url`` (a connection belongs to the loop that opened it)."""
        loop = asyncio.get_running_loop()
        for stale in [k for k in self._pools if k.is_closed()]:
            del self._pools[stale]
        pools = self._pools.setdefault(loop, {})
        if url not in pools:
            pools[url] = Http1Pool(url, {"content-type": "application/json"}, timeout=self.timeout_s)
        return pools[url]

    async def post(
        self, url: str, path: str, body: dict[str, Any], *, attempts: int = 1, text_ok: bool = False
    ) -> Any:
        """POST to one server and read its JSON; transient failures retried ``attempts`` times, then
        ``UpstreamError`` (an ``InfraError``); a 4xx answer is a ``ConfigError``. With ``text_ok`` a
        plain-text answer is fine (SGLang's control routes, ``/flush_cache`` among them, answer text):
        it comes back as ``{"message": text}``."""
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            stop=tenacity.stop_after_attempt(attempts),
            wait=tenacity.wait_exponential(multiplier=0.2, max=5),
            before_sleep=lambda s: log.warning(
                "%s%s failed (%s), retry %d", url, path, s.outcome.exception(), s.attempt_number
            ),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self.post_once(url, path, body, text_ok=text_ok)
        except _Retryable as exc:
            raise UpstreamError(
                f"SGLang server {url}: {path} failed ({exc}); check that it is running and healthy "
                f"(GET {url}/health_generate) and see its log"
            ) from None

    async def post_once(self, url: str, path: str, body: dict[str, Any], *, text_ok: bool = False) -> Any:
        try:
            status, raw = await self.pool(url).post_json(path, body)
        except TransportError as exc:
            raise _Retryable(f"unreachable: {exc}") from exc
        except TimeoutError:
            raise _Retryable(f"no answer within {self.timeout_s:.0f}s") from None
        text = raw.decode(errors="replace")
        if status >= 500 or status == 429:
            raise _Retryable(f"HTTP {status}: {text[:300]}")
        if status >= 400:
            raise ConfigError(f"SGLang server {url} refused {path}: HTTP {status}: {text[:500]}")
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError:
            if text_ok:
                return {"message": text}
            raise UpstreamError(
                f"SGLang server {url}: {path} answered something that is not JSON: "
                f"{text[:300]!r}; is {url} an SGLang server?"
            ) from None

    async def each(self, path: str, body: dict[str, Any] | None = None) -> list[Any]:
        """The same POST to every server, concurrently; answers that say ``success: false`` fail."""
        answers = await asyncio.gather(*(self.post(u, path, body or {}, text_ok=True) for u in self.urls))
        for url, answer in zip(self.urls, answers, strict=True):
            if isinstance(answer, dict) and answer.get("success") is False:
                raise UpstreamError(f"SGLang server {url}: {path} failed: {answer.get('message')}")
        return answers

    def model_info(self, url: str) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"{url}/get_model_info", timeout=min(self.timeout_s, 30)) as answer:
                return json.loads(answer.read())
        except (OSError, ValueError) as exc:
            raise UpstreamError(
                f"SGLang server {url}: GET /get_model_info failed ({exc}); is it running? "
                "Or pass model_path= to load the tokenizer yourself"
            ) from None
