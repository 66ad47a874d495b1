"""Content generations: counters that move whenever what a search over a collection could return changes."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence


class Generations:
    """One counter per collection, plus one for every collection at once.

    The catalogue moves a collection's counter around each write to it (before and after the
    transaction, so a search that overlaps the write is keyed with a counter no later search
    uses), the index sync after applying its changes (what became searchable). A cache keyed by
    `of(collections)` is therefore never read after a change to any of them. Counters live in the
    process, as the caches they key do.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, int] = {}
        self._everything = 0

    def bump(self, collections: Iterable[str]) -> None:
        with self._lock:
            for name in set(collections):
                self._counters[name] = self._counters.get(name, 0) + 1

    def bump_all(self) -> None:
        """A change whose collection is not known here (an index delete): every key moves."""
        with self._lock:
            self._everything += 1

    def of(self, collections: Sequence[str]) -> tuple[int, tuple[int, ...]]:
        with self._lock:
            return self._everything, tuple(self._counters.get(name, 0) for name in collections)
