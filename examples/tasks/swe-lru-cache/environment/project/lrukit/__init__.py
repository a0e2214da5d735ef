"""A bounded LRU cache."""

from lrukit.cache import CacheInfo, LRUCache
from lrukit.memo import memoize

__all__ = ["CacheInfo", "LRUCache", "memoize"]
