"""The parsed configuration and its typed getters."""

from __future__ import annotations

DEFAULT = "DEFAULT"
_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}
_MISSING = object()


class ConfigError(KeyError):
    """A missing section or option, or a value of the wrong type."""

    def __str__(self) -> str:
        return str(self.args[0])


class Config:
    """Sections of options; lookups fall back to the DEFAULT section."""

    def __init__(self) -> None:
        self._sections: dict[str, dict[str, str]] = {DEFAULT: {}}

    def add_section(self, name: str) -> dict[str, str]:
        if name in self._sections and name != DEFAULT:
            raise ConfigError(f"duplicate section [{name}]")
        return self._sections.setdefault(name, {})

    def sections(self) -> list[str]:
        return [name for name in self._sections if name != DEFAULT]

    def options(self, section: str) -> dict[str, str]:
        if section not in self._sections:
            raise ConfigError(f"no section [{section}]")
        merged = dict(self._sections[DEFAULT])
        merged.update(self._sections[section])
        return merged

    def get(self, section: str, option: str, default=_MISSING) -> str:
        value: str | None = self.options(section).get(option.lower())
        if value is None:
            if default is _MISSING:
                raise ConfigError(f"no option {option!r} in section [{section}]")
            return default
        return value

    def getint(self, section: str, option: str, default=_MISSING) -> int:
        value = self.get(section, option, default)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"[{section}] {option} = {value!r} is not an integer") from None

    def getbool(self, section: str, option: str, default=_MISSING) -> bool:
        value = self.get(section, option, default)
        if isinstance(value, bool):
            return value
        lowered = str(value).lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"[{section}] {option} = {value!r} is not a boolean")

    def getlist(self, section: str, option: str, sep: str = ",") -> list[str]:
        return [part.strip() for part in self.get(section, option).split(sep) if part.strip()]
