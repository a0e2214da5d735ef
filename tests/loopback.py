"""A fake model server's plumbing for tests: an asyncio server on this machine's loopback."""

from __future__ import annotations

import asyncio
import json


class LoopbackServer:
    """``async with`` serves ``self._handle(reader, writer)`` on 127.0.0.1 at a free port; ``url`` is
    its OpenAI-style base URL. Subclasses implement ``_handle``."""

    server: asyncio.Server | None = None

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


async def read_json_request(reader: asyncio.StreamReader) -> tuple[dict[str, str], dict]:
    """One HTTP/1.1 request with a JSON body: its headers (lower-cased names) and the decoded body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    headers = {k.lower(): v for k, _, v in (ln.partition(": ") for ln in head.split("\r\n")[1:] if ln)}
    return headers, json.loads(await reader.readexactly(int(headers["content-length"])))
