"""Build a Config from INI text."""

from __future__ import annotations

from typing import TextIO

from iniconf.config import DEFAULT, Config, ConfigError
from iniconf.lexer import LexError, tokenize


def loads(text: str) -> Config:
    """Parse INI ``text``. Raises ConfigError on malformed input."""
    config = Config()
    section = config.add_section(DEFAULT)
    last_key: str | None = None
    try:
        for line in tokenize(text):
            if line.kind == "section":
                section = config.add_section(line.name)
                last_key = None
            elif line.kind == "item":
                last_key = line.name.lower()
                section[last_key] = line.value
            else:
                if last_key is None:
                    raise ConfigError(f"line {line.lineno}: continuation line without a key")
                section[last_key] = f"{section[last_key]}\n{line.value}".lstrip("\n")
    except LexError as exc:
        raise ConfigError(str(exc)) from None
    return config


def load(fp: TextIO) -> Config:
    return loads(fp.read())
