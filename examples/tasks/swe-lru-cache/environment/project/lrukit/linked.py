"""A minimal doubly linked list with a sentinel node."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class Node:
    __slots__ = ("key", "value", "prev", "next")

    def __init__(self, key: Any = None, value: Any = None) -> None:
        self.key = key
        self.value = value
        self.prev: Node | None = None
        self.next: Node | None = None


class LinkedList:
    """Most recently used at the front (``head.next``), least recently used at the back."""

    def __init__(self) -> None:
        self.head = Node()
        self.head.prev = self.head.next = self.head
        self.size = 0

    def push_front(self, node: Node) -> None:
        node.prev, node.next = self.head, self.head.next
        self.head.next.prev = node
        self.head.next = node
        self.size += 1

    def unlink(self, node: Node) -> None:
        node.prev.next = node.next
        node.next.prev = node.prev
        node.prev = node.next = None
        self.size -= 1

    def move_to_front(self, node: Node) -> None:
        self.unlink(node)
        self.push_front(node)

    def back(self) -> Node | None:
        return None if self.size == 0 else self.head.prev

    def __iter__(self) -> Iterator[Node]:
        node = self.head.next
        while node is not self.head:
            yield node
            node = node.next

    def __len__(self) -> int:
        return self.size
