"""The LRU cache."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, NamedTuple

from lrukit.linked import LinkedList, Node

_MISSING = object()


class CacheInfo(NamedTuple):
    hits: int
    misses: int
    evictions: int
    size: int
    capacity: int


class LRUCache:
    """At most ``capacity`` entries; the least recently used one goes first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._map: dict[Hashable, Node] = {}
        self._order = LinkedList()
        self.hits = self.misses = self.evictions = 0

    def get(self, key: Hashable, default: Any = None) -> Any:
        node = self._map.get(key)
        if node is None:
            self.misses += 1
            return default
        self.hits += 1
        self._order.move_to_front(node)
        return node.value

    def put(self, key: Hashable, value: Any) -> None:
        if len(self._map) >= self.capacity:
            self._evict()
        node = self._map.get(key)
        if node is not None:
            node.value = value
            self._order.move_to_front(node)
            return
        node = Node(key, value)
        self._map[key] = node
        self._order.push_front(node)

    def pop(self, key: Hashable, default: Any = _MISSING) -> Any:
        node = self._map.pop(key, None)
        if node is None:
            if default is _MISSING:
                raise KeyError(key)
            return default
        self._order.unlink(node)
        return node.value

    def _evict(self) -> None:
        node = self._order.back()
        if node is None:
            return
        self._order.unlink(node)
        del self._map[node.key]
        self.evictions += 1

    def keys(self) -> list[Hashable]:
        """Keys from most to least recently used."""
        return [node.key for node in self._order]

    def info(self) -> CacheInfo:
        return CacheInfo(self.hits, self.misses, self.evictions, len(self._map), self.capacity)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._map

    def __len__(self) -> int:
        return len(self._map)
