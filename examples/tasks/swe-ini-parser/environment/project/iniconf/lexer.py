"""Split INI text into typed lines."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

COMMENT_PREFIXES = ("#", ";")
SEPARATORS = (":", "=")


@dataclass(frozen=True)
class Line:
    """One meaningful line of an INI file."""

    kind: str  # "section" | "item" | "continuation"
    lineno: int
    name: str = ""
    value: str = ""


class LexError(ValueError):
    def __init__(self, lineno: int, message: str) -> None:
        super().__init__(f"line {lineno}: {message}")
        self.lineno = lineno


def _split_item(text: str, lineno: int) -> tuple[str, str]:
    """Split ``key = value`` / ``key: value`` at the separator that ends the key."""
    sep: str | None = None
    for candidate in SEPARATORS:
        if candidate in text:
            sep = candidate
            break
    if sep is None:
        raise LexError(lineno, f"expected 'key = value' or 'key: value', got {text!r}")
    key, _, value = text.partition(sep)
    key = key.strip()
    if not key:
        raise LexError(lineno, "empty key")
    return key, value.strip()


def tokenize(text: str) -> Iterator[Line]:
    """Yield the section, item and continuation lines of ``text``; skip blanks and comments."""
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith(COMMENT_PREFIXES):
            continue
        if raw[0] in " \t":
            yield Line("continuation", lineno, value=stripped)
        elif stripped.startswith("["):
            if not stripped.endswith("]") or len(stripped) < 3:
                raise LexError(lineno, f"malformed section header {stripped!r}")
            yield Line("section", lineno, name=stripped[1:-1].strip())
        else:
            key, value = _split_item(stripped, lineno)
            yield Line("item", lineno, name=key, value=value)
