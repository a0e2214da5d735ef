"""Greedy word wrapping."""

from wraptext.justify import justify
from wraptext.wrap import fill, wrap

__all__ = ["fill", "justify", "wrap"]
