"""The bounded LRU cache the retrieval and answer caches are built on."""

from __future__ import annotations

import threading

from appliance.retrieve.cache import LRUCache


def test_least_recently_used_leave_first_within_the_byte_budget():
    seen: list[tuple[str, bool]] = []
    cache: LRUCache[str] = LRUCache("t", 10, len, lambda name, hit: seen.append((name, hit)))
    cache.put("a", "xxxx")
    cache.put("b", "yyyy")
    assert cache.get("a") == "xxxx"  # a is now the most recent
    cache.put("c", "zzzz")  # 12 bytes > 10: the least recent (b) leaves
    assert cache.get("b") is None and cache.get("a") == "xxxx" and cache.get("c") == "zzzz"
    assert cache.size_bytes == 8 and len(cache) == 2
    assert (cache.hits, cache.misses) == (3, 1)
    assert seen == [("t", True), ("t", False), ("t", True), ("t", True)]


def test_a_value_heavier_than_the_budget_is_never_kept_and_replacing_reweighs():
    cache: LRUCache[str] = LRUCache("t", 5, len)
    cache.put("big", "x" * 6)
    assert cache.get("big") is None and cache.size_bytes == 0
    cache.put("k", "xx")
    cache.put("k", "xxxx")
    assert cache.size_bytes == 4 and cache.get("k") == "xxxx"
    cache.discard("k")
    assert cache.size_bytes == 0 and len(cache) == 0


def test_concurrent_writers_keep_the_budget():
    cache: LRUCache[bytes] = LRUCache("t", 1000, len)

    def write(offset: int) -> None:
        for i in range(2000):
            cache.put((offset, i), b"x" * (1 + i % 50))
            cache.get((offset, i - 1))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 0 < cache.size_bytes <= 1000
    assert cache.size_bytes == sum(len(cache.get(k) or b"") for k in list(cache._entries))
