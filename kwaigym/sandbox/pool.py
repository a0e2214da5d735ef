"""A bounded pool of sandboxes over one or more podman hosts.

The pool caps how many sandboxes run at once (extra requests wait their turn)
and places each new sandbox on the backend with the fewest live ones, so one
pool can span a local service and remote hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from kwaigym.errors import ConfigError
from kwaigym.sandbox.backend import PodmanBackend
from kwaigym.sandbox.base import SandboxSpec
from kwaigym.sandbox.podman import PodmanSandbox


class SandboxPool:
    """At most ``size`` live sandboxes over ``backends``.

    Example:
        >>> async with SandboxPool(size=8) as pool:               # doctest: +SKIP
        ...     async with pool.sandbox(SandboxSpec(image=img, episode_id="ep-1")) as sb:
        ...         print((await sb.shell("echo hi")).stdout)
    """

    def __init__(self, backends: Sequence[PodmanBackend] | None = None, *, size: int = 16):
        if size < 1:
            raise ConfigError(f"pool size must be at least 1, got {size}")
        self.backends = list(backends) if backends else [PodmanBackend()]
        self.size = size
        self._slots = asyncio.Semaphore(size)

    async def start(self) -> SandboxPool:
        await asyncio.gather(*(b.start() for b in self.backends))
        return self

    def _least_loaded(self) -> PodmanBackend:
        return min(self.backends, key=lambda b: b.live)

    @contextlib.asynccontextmanager
    async def sandbox(self, spec: SandboxSpec) -> AsyncIterator[PodmanSandbox]:
        """Wait for a free slot, start a sandbox for ``spec``, and remove it on exit."""
        async with self._slots:
            async with self._least_loaded().sandbox(spec) as sandbox:
                yield sandbox

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.backends))

    async def __aenter__(self) -> SandboxPool:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()
