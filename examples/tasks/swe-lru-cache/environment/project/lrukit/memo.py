"""A memoizing decorator backed by LRUCache."""

from __future__ import annotations

import functools
from collections.abc import Callable

from lrukit.cache import LRUCache

_MISSING = object()


def memoize(maxsize: int = 128) -> Callable:
    """Cache results of a function of hashable positional/keyword arguments."""

    def decorate(func: Callable) -> Callable:
        cache = LRUCache(maxsize)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            key = (args, tuple(sorted(kwargs.items())))
            result = cache.get(key, _MISSING)
            if result is _MISSING:
                result = func(*args, **kwargs)
                cache.put(key, result)
            return result

        wrapper.cache_info = cache.info
        wrapper.cache = cache
        return wrapper

    return decorate
