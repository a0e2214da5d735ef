"""Semantic versions and ranges."""

from semverlite.ranges import Range, max_satisfying, satisfies
from semverlite.version import InvalidVersion, Version

__all__ = ["InvalidVersion", "Range", "Version", "max_satisfying", "satisfies"]
