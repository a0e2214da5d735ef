"""npm-style ranges: comparators (>=1.2.0 <2.0.0), caret (^1.2.3), tilde (~1.2), x-ranges (1.x)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from semverlite.version import InvalidVersion, Version

_OPS = {
    ">=": lambda c: c >= 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    "<": lambda c: c < 0,
    "=": lambda c: c == 0,
}
_PARTIAL = re.compile(r"^v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?$")


def _partial(text: str) -> tuple[int | None, ...]:
    m = _PARTIAL.match(text)
    if not m:
        raise InvalidVersion(f"bad version in range: {text!r}")
    return tuple(None if g is None or g in "xX*" else int(g) for g in m.groups())


def _expand(token: str) -> list[tuple[str, Version]]:
    """One range token as a list of (operator, version) comparators."""
    if token.startswith("^"):
        major, minor, patch = _partial(token[1:])
        low = Version(major, minor or 0, patch or 0)
        if major > 0 or minor is None:
            high = Version(major + 1, 0, 0)
        elif minor > 0 or patch is None:
            high = Version(0, minor + 1, 0)
        else:
            high = Version(0, 0, patch + 1)
        return [(">=", low), ("<", high)]
    if token.startswith("~"):
        major, minor, patch = _partial(token[1:])
        low = Version(major, minor or 0, patch or 0)
        high = Version(major + 1, 0, 0) if minor is None else Version(major, minor + 1, 0)
        return [(">=", low), ("<", high)]
    op = next((o for o in (">=", "<=", ">", "<", "=") if token.startswith(o)), "")
    rest = token[len(op) :]
    if rest.count(".") >= 2 and not re.search(r"[xX*]", rest):
        return [(op or "=", Version.parse(rest))]
    major, minor, patch = _partial(rest)
    if major is None:
        return []
    if minor is None:
        return [(">=", Version(major, 0, 0)), ("<", Version(major + 1, 0, 0))]
    return [(">=", Version(major, minor, 0)), ("<", Version(major, minor + 1, 0))]


@dataclass(frozen=True)
class Range:
    """Space-separated tokens are ANDed; ``||`` separates alternatives."""

    alternatives: tuple[tuple[tuple[str, Version], ...], ...]

    @classmethod
    def parse(cls, text: str) -> Range:
        alts = []
        for alt in text.split("||"):
            comparators: list[tuple[str, Version]] = []
            for token in alt.split():
                comparators.extend(_expand(token))
            alts.append(tuple(comparators))
        return cls(tuple(alts))

    def contains(self, version: Version) -> bool:
        for comparators in self.alternatives:
            if all(_OPS[op](version.compare(v)) for op, v in comparators):
                if version.prerelease and not any(
                    v.prerelease
                    and (v.major, v.minor, v.patch) == (version.major, version.minor, version.patch)
                    for _, v in comparators
                ):
                    continue  # pre-releases only match ranges that name the same core version
                return True
        return False


def satisfies(version: str, range_text: str) -> bool:
    return Range.parse(range_text).contains(Version.parse(version))


def max_satisfying(versions: Iterable[str], range_text: str) -> str | None:
    rng = Range.parse(range_text)
    matching = [(Version.parse(v), v) for v in versions if rng.contains(Version.parse(v))]
    return max(matching)[1] if matching else None
