"""Bounded capture of a command's output.

Agents run commands whose output can be endless (``yes``, a runaway log). The
buffer keeps the first and last halves of the cap and counts what it dropped, so
memory stays bounded, the process is never blocked on a full pipe, and the
reader still sees how the output began and how it ended.
"""

from __future__ import annotations

DEFAULT_MAX_OUTPUT = 1 << 20  # bytes per stream


class CappedBuffer:
    """Keeps at most ``cap`` bytes: the head, the tail, and a count of what was dropped between."""

    def __init__(self, cap: int = DEFAULT_MAX_OUTPUT):
        self.cap = cap
        self._head = bytearray()
        self._tail = bytearray()
        self.dropped = 0

    def write(self, data: bytes) -> None:
        room = self.cap // 2 - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data:
            return
        self._tail += data
        keep = self.cap - self.cap // 2
        if len(self._tail) > keep:
            excess = len(self._tail) - keep
            del self._tail[:excess]
            self.dropped += excess

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def getvalue(self) -> bytes:
        """All bytes kept, raw (a split may cut a multi-byte character: decode with errors='replace')."""
        return bytes(self._head + self._tail)

    def pop_trailer(self, prefix: bytes) -> bytes | None:
        """Remove a last line ``\n<prefix><value>\n`` from the end; return ``value`` (None if absent).

        The tail is always kept, so a trailer survives truncation of the middle.
        """
        if not self.dropped:  # nothing dropped: head and tail are one run of bytes
            self._head, self._tail = self._head + self._tail, bytearray()
        buf = self._tail if self.dropped else self._head
        if not buf.endswith(b"\n"):
            return None
        start = buf.rfind(b"\n" + prefix, 0, len(buf) - 1)
        if start < 0 or b"\n" in buf[start + 1 : -1]:
            return None
        value = bytes(buf[start + 1 + len(prefix) : -1])
        del buf[start:]
        return value

    def text(self) -> str:
        if not self.dropped:
            return bytes(self._head + self._tail).decode(errors="replace")
        marker = f"\n[... kwaigym: {self.dropped} bytes of output truncated ...]\n"
        return self._head.decode(errors="replace") + marker + self._tail.decode(errors="replace")
