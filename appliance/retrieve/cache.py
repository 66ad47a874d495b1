"""A bounded least-recently-used cache, weighed in bytes, that counts its hits and misses."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class LRUCache(Generic[V]):
    """At most `max_bytes` of values (as `weigh` estimates them); the least recently used leave
    first, and a value heavier than the whole budget is never kept. Thread-safe. `on_lookup`
    hears every get (True: a hit), for the hit-rate metric."""

    def __init__(
        self,
        name: str,
        max_bytes: int,
        weigh: Callable[[V], int],
        on_lookup: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.name = name
        self.max_bytes = max_bytes
        self._weigh = weigh
        self._on_lookup = on_lookup
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
            else:
                self.hits += 1
                self._entries.move_to_end(key)
        if self._on_lookup is not None:
            self._on_lookup(self.name, entry is not None)
        return entry[0] if entry is not None else None

    def put(self, key: Hashable, value: V) -> None:
        weight = self._weigh(value)
        if weight > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, weight)
            self._bytes += weight
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped

    def discard(self, key: Hashable) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)
