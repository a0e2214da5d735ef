"""Greedy line filling."""

from __future__ import annotations

from wraptext.tokens import paragraphs, words


def _check_width(width: int) -> None:
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")


def wrap_paragraph(paragraph: str, width: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in words(paragraph, width):
        if not current:
            current = word
        elif len(current) + 1 + len(word) < width:
            current = f"{current} {word}"
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines


def wrap(text: str, width: int = 70) -> list[str]:
    """Lines of at most ``width`` characters; paragraphs separated by one empty line."""
    _check_width(width)
    out: list[str] = []
    for i, paragraph in enumerate(paragraphs(text)):
        if i:
            out.append("")
        out.extend(wrap_paragraph(paragraph, width))
    return out


def fill(text: str, width: int = 70) -> str:
    return "\n".join(wrap(text, width))
