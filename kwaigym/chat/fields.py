"""Checked reads of JSON request bodies, shared by the OpenAI codecs.

A codec reads each field with an expected kind; a wrong type raises ``BadRequest``
naming the field's path ("messages[3].content: expected a string or a list, got int").
``Fields`` also keeps everything it was not asked to take in ``extra``, so a codec
can hand unknown fields back unchanged on a round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from kwaigym.chat.codec import BadRequest

#: A kind: a predicate and how to say it in an error ("a string").
Kind = tuple[Callable[[Any], bool], str]
STR: Kind = (lambda v: isinstance(v, str), "a string")
INT: Kind = (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")
NUM: Kind = (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number")
BOOL: Kind = (lambda v: isinstance(v, bool), "a boolean")
OBJ: Kind = (lambda v: isinstance(v, Mapping), "an object")
LIST: Kind = (lambda v: isinstance(v, list), "a list")
CHOICE: Kind = (lambda v: isinstance(v, str | Mapping), "a string or an object")


def kind_of(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    names = {type(None): "null", bool: "bool", list: "list"}
    return "object" if isinstance(value, Mapping) else names.get(type(value), type(value).__name__)


def check(value: Any, kind: Kind, path: str) -> Any:
    """``value`` if it is of ``kind``, else BadRequest naming ``path``."""
    if not kind[0](value):
        raise BadRequest(f"{path}: expected {kind[1]}, got {kind_of(value)}")
    return value


class Fields:
    """Checked reads of one JSON object; what is not taken stays in ``extra``."""

    def __init__(self, obj: Any, path: str):
        self.obj = check(obj, OBJ, path or "request body")
        self.path, self.extra = path, dict(obj)

    def read(self, key: str, kind: Kind, *, required: bool = False) -> Any:
        """The checked value (None when absent or null), left in ``extra``."""
        value, where = self.obj.get(key), f"{self.path}.{key}" if self.path else key
        if value is None and required:
            got = "null" if key in self.obj else "no such field"
            raise BadRequest(f"{where}: expected {kind[1]}, got {got}")
        return None if value is None else check(value, kind, where)

    def take(self, key: str, kind: Kind, default: Any = None, *, required: bool = False) -> Any:
        """The checked value, out of ``extra`` unless it equals the default (then it is echoed as sent)."""
        value = self.read(key, kind, required=required)
        if value is None:
            return default
        if value != default:
            del self.extra[key]
        return value
