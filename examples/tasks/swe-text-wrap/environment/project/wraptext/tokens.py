"""Split text into paragraphs and words."""

from __future__ import annotations

import re

_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def paragraphs(text: str) -> list[str]:
    """Paragraphs of ``text`` (separated by blank lines), without empty ones."""
    return [p for p in _BLANK_LINE.split(text.strip()) if p.strip()]


def words(paragraph: str, width: int) -> list[str]:
    """Words of a paragraph; words longer than ``width`` are cut into ``width``-sized chunks."""
    out: list[str] = []
    for word in paragraph.split():
        while len(word) > width:
            out.append(word[:width])
            word = word[width:]
        if word:
            out.append(word)
    return out
