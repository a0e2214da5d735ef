"""Full justification."""

from __future__ import annotations

from wraptext.tokens import paragraphs
from wraptext.wrap import _check_width, wrap_paragraph


def justify_line(line: str, width: int) -> str:
    """Pad ``line`` to ``width`` by widening its gaps, leftmost gaps first."""
    parts = line.split(" ")
    if len(parts) == 1:
        return line
    gaps = len(parts) - 1
    spaces = width - sum(len(p) for p in parts)
    base, extra = divmod(spaces, gaps)
    out = ""
    for i, part in enumerate(parts[:-1]):
        out += part + " " * (base + (1 if i < extra else 0))
    return out + parts[-1]


def justify(text: str, width: int = 70) -> list[str]:
    _check_width(width)
    out: list[str] = []
    for i, paragraph in enumerate(paragraphs(text)):
        if i:
            out.append("")
        lines = wrap_paragraph(paragraph, width)
        out.extend(justify_line(line, width) for line in lines[:-1])
        out.extend(lines[-1:])
    return out
