"""Server-sent events: writing them and reading them back (WHATWG event-stream format)."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Iterator
from typing import Any


def event(data: Any, name: str | None = None) -> bytes:
    """One SSE event; ``data`` is JSON-encoded unless it is already a string."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    head = f"event: {name}\n" if name else ""
    return (head + "".join(f"data: {line}\n" for line in text.split("\n")) + "\n").encode()


def comment(text: str = "keep-alive") -> bytes:
    """An SSE comment line: ignored by clients, but it resets their idle timers."""
    return f": {text}\n\n".encode()


def parse(chunks: Iterable[bytes]) -> Iterator[tuple[str | None, str]]:
    """(event name or None, data) for each event in a byte stream cut anywhere (even inside a character)."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    buffer = ""
    name: str | None = None
    data: list[str] = []
    for chunk in chunks:
        buffer += decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        *lines, buffer = buffer.replace("\r\n", "\n").split("\n")
        for line in lines:
            if not line:
                if data:
                    yield name, "\n".join(data)
                name, data = None, []
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)
    buffer += decoder.decode(b"", final=True)
    if buffer and not buffer.startswith(":"):
        field, _, value = buffer.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield name, "\n".join(data)
