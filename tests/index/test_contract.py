"""One contract suite that every keyword and vector index backend must pass."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.index.bm25 import TantivyKeywordIndex
from appliance.index.memory import MemoryKeywordIndex, MemoryVectorIndex
from appliance.index.protocols import IndexedChunk, KeywordIndex, VectorIndex
from appliance.index.qdrant import QdrantVectorIndex
from appliance.index.vectors import USearchVectorIndex

DIM = 48

TEXTS = {
    1: ("Kubernetes operators", "Operators reconcile the desired state of custom resources in a cluster."),
    2: ("Photosynthesis", "Plants convert sunlight, water and carbon dioxide into glucose and oxygen."),
    3: ("Quarterly invoices", "The supplier invoice was paid by bank transfer at the end of March."),
    4: ("Sourdough baking", "A sourdough starter ferments flour with wild yeast before the bread rises."),
    5: ("Glacier retreat", "Alpine glaciers lose mass every summer as meltwater drains into valleys."),
}


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def chunk(
    chunk_id: int, collection: str = "docs", text_of: int | None = None, seed: int | None = None
) -> IndexedChunk:
    title, text = TEXTS[text_of or chunk_id]
    return IndexedChunk(
        chunk_id, collection, f"doc-{chunk_id}", title, text, unit(seed if seed is not None else chunk_id)
    )


@dataclass
class Backend:
    id: str  # unique among BACKENDS
    name: str  # what the index calls itself
    open: Callable[[Path], Any]
    query: Callable[[IndexedChunk], Any]  # what finds this chunk: its text, or its embedding
    protocol: type
    durable: bool = True  # whether a commit survives reopening the same path


def text(c: IndexedChunk) -> str:
    return c.text


def embedding(c: IndexedChunk) -> np.ndarray:
    return c.embedding


BACKENDS = [
    Backend("bm25", "bm25", lambda p: TantivyKeywordIndex(p / "bm25"), text, KeywordIndex),
    Backend("vectors", "vectors", lambda p: USearchVectorIndex(p / "vectors", DIM), embedding, VectorIndex),
    Backend("memory-bm25", "memory-bm25", lambda p: MemoryKeywordIndex(p / "kw"), text, KeywordIndex),
    Backend(
        "memory-vectors",
        "memory-vectors",
        lambda p: MemoryVectorIndex(DIM, p / "vec"),
        embedding,
        VectorIndex,
    ),
    # Qdrant's embedded local mode: the same client and collection calls a cluster gets by URL.
    Backend("qdrant", "qdrant", lambda p: QdrantVectorIndex(DIM, path=p / "qdrant"), embedding, VectorIndex),
    Backend("memory-bm25-volatile", "memory-bm25", lambda p: MemoryKeywordIndex(), text, KeywordIndex, False),
    Backend(
        "memory-vectors-volatile",
        "memory-vectors",
        lambda p: MemoryVectorIndex(DIM),
        embedding,
        VectorIndex,
        False,
    ),
]
DURABLE = [b for b in BACKENDS if b.durable]


@pytest.fixture(params=BACKENDS, ids=[b.id for b in BACKENDS])
def backend(request) -> Backend:
    return request.param


@pytest.fixture(params=DURABLE, ids=[b.id for b in DURABLE])
def durable_backend(request) -> Backend:
    return request.param


@pytest.fixture
def index(backend, tmp_path):
    ix = backend.open(tmp_path)
    yield ix
    ix.close()


def ids(hits) -> list[int]:
    return [h.chunk_id for h in hits]


def finds(backend: Backend, ix, c: IndexedChunk, collections=("docs",)) -> bool:
    """Whether searching for `c`'s content still finds `c` as a convincing match."""
    hits = ix.search(backend.query(c), list(collections), 5)
    if backend.protocol is VectorIndex:
        hits = [h for h in hits if h.score > 0.9]  # random vectors are near-orthogonal
    return c.chunk_id in ids(hits)


def test_implements_protocol(backend, index):
    assert isinstance(index, backend.protocol)
    assert index.name == backend.name
    assert index.applied_seq() is None  # a fresh directory has nothing the reconciler can trust


def test_upsert_then_search(backend, index):
    index.upsert([chunk(i) for i in (1, 2, 3)])
    index.commit(1)
    assert index.count() == 3
    hits = index.search(backend.query(chunk(2)), ["docs"], 5)
    assert hits[0].chunk_id == 2
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    assert len(index.search(backend.query(chunk(2)), ["docs"], 1)) == 1


def test_upsert_is_idempotent(backend, index):
    index.upsert([chunk(1), chunk(1)])
    index.upsert([chunk(1)])
    index.commit(1)
    index.upsert([chunk(1)])  # a replay after restart
    index.commit(1)
    assert index.count() == 1
    assert ids(index.search(backend.query(chunk(1)), ["docs"], 10)).count(1) == 1


def test_replace_changes_content(backend, index):
    old, new = chunk(1, text_of=1, seed=101), chunk(1, text_of=4, seed=404)
    index.upsert([old, chunk(2)])
    index.commit(1)
    index.upsert([new])
    index.commit(2)
    assert index.count() == 2
    assert not finds(backend, index, old)
    assert index.search(backend.query(new), ["docs"], 5)[0].chunk_id == 1


def test_delete_and_unknown_delete(backend, index):
    index.upsert([chunk(1), chunk(2)])
    index.commit(1)
    index.delete([1, 999_999])
    index.delete([424_242])
    index.commit(2)
    assert index.count() == 1
    assert not finds(backend, index, chunk(1))
    assert finds(backend, index, chunk(2))


def test_collection_filter_never_leaks(backend, index):
    index.upsert(
        [chunk(1, "alpha", text_of=3, seed=7), chunk(2, "beta", text_of=3, seed=7), chunk(3, "beta")]
    )
    index.commit(1)
    q = backend.query(chunk(1, "alpha", text_of=3, seed=7))
    assert ids(index.search(q, ["alpha"], 10)) == [1]
    assert set(ids(index.search(q, ["beta"], 10))) <= {2, 3}
    assert {1, 2} <= set(ids(index.search(q, ["alpha", "beta"], 10)))
    assert index.search(q, ["gamma"], 10) == []
    index.upsert([chunk(1, "beta", text_of=3, seed=7)])  # a chunk moving collections
    index.commit(2)
    assert index.search(q, ["alpha"], 10) == []
    assert index.count() == 3


def test_commit_close_reopen(durable_backend, tmp_path):
    backend = durable_backend
    ix = backend.open(tmp_path)
    ix.upsert([chunk(i) for i in (1, 2, 3)])
    ix.commit(7)
    assert ix.applied_seq() == 7
    ix.close()
    ix = backend.open(tmp_path)
    try:
        assert ix.applied_seq() == 7
        assert ix.count() == 3
        assert ix.search(backend.query(chunk(3)), ["docs"], 3)[0].chunk_id == 3
        ix.delete([3])  # still writable after reopening
        ix.commit(8)
        assert ix.count() == 2
    finally:
        ix.close()


def test_uncommitted_changes_are_not_durable(durable_backend, tmp_path):
    backend = durable_backend
    ix = backend.open(tmp_path)
    ix.upsert([chunk(1)])
    ix.commit(1)
    ix.upsert([chunk(2)])
    ix.close()
    ix = backend.open(tmp_path)
    try:
        assert (ix.applied_seq(), ix.count()) == (1, 1)
    finally:
        ix.close()


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_contract import BACKENDS, chunk
backend = next(b for b in BACKENDS if b.id == {id!r})
ix = backend.open(Path({path!r}))
ix.upsert([chunk(1), chunk(2)])
ix.commit(3)
ix.upsert([chunk(4)])
ix.delete([1])
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_keeps_what_was_committed(durable_backend, tmp_path):
    backend = durable_backend
    script = KILLED_WRITER.format(tests=str(Path(__file__).parent), id=backend.id, path=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    ix = backend.open(tmp_path)  # no stale writer lock, no half-written state
    try:
        assert (ix.applied_seq(), ix.count()) == (3, 2)
        assert ix.search(backend.query(chunk(1)), ["docs"], 1)[0].chunk_id == 1
    finally:
        ix.close()


def test_reset(backend, index):
    index.upsert([chunk(i) for i in (1, 2)])
    index.commit(5)
    index.upsert([chunk(3)])  # pending at the reset: must not come back
    index.reset()
    assert index.applied_seq() == 0
    assert index.count() == 0
    assert index.search(backend.query(chunk(1)), ["docs"], 5) == []
    index.commit(6)
    assert (index.applied_seq(), index.count()) == (6, 0)
    assert index.search(backend.query(chunk(3)), ["docs"], 5) == []


def test_crash_after_reset_means_rebuild(durable_backend, tmp_path):
    backend = durable_backend
    ix = backend.open(tmp_path)
    ix.upsert([chunk(i) for i in (1, 2)])
    ix.commit(5)
    ix.reset()
    ix.close()
    ix = backend.open(tmp_path)  # a crash between reset and the rebuild's commit
    assert ix.applied_seq() is None
    ix.reset()
    ix.upsert([chunk(3)])
    ix.commit(9)
    ix.close()
    ix = backend.open(tmp_path)
    try:
        assert (ix.applied_seq(), ix.count()) == (9, 1)
    finally:
        ix.close()


def test_empty_searches(backend, index):
    assert index.search(backend.query(chunk(1)), ["docs"], 5) == []  # empty index
    index.upsert([chunk(1)])
    index.commit(1)
    assert index.search(backend.query(chunk(1)), ["docs"], 0) == []
    assert index.search(backend.query(chunk(1)), [], 5) == []
    if backend.protocol is KeywordIndex:
        assert index.search("", ["docs"], 5) == []
        assert index.search("   ", ["docs"], 5) == []
        assert index.search("the and of a", ["docs"], 5) == []


def test_invalid_writes_are_refused(backend, index):
    for bad in (chunk(1, "Bad Name"), IndexedChunk(0, "docs", "d", "t", "x", unit(0))):
        with pytest.raises(ValueError):
            index.upsert([bad])
    with pytest.raises(ValueError):
        index.delete([-3])
    index.commit(1)
    assert index.count() == 0


def test_concurrent_searches_while_writing(backend, index):
    alpha, beta = [], []
    errors: list[BaseException] = []
    done = threading.Event()
    allowed = set()

    def writer():
        try:
            for batch in range(40):
                base = batch * 10 + 1
                cs = [
                    chunk(base + j, "alpha" if j % 2 else "beta", text_of=1 + j % 5, seed=base + j)
                    for j in range(10)
                ]
                allowed.update(c.chunk_id for c in cs if c.collection == "alpha")
                index.upsert(cs)
                index.commit(batch + 1)
                if batch % 5 == 4:
                    index.delete([base, base + 2])
            index.commit(41)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def reader():
        try:
            # One last pass after the writer is done: a fast index (the in-memory one) can finish
            # writing before a reader's first search, which then must still see the results.
            while True:
                finished = done.is_set()
                for n in range(1, 6):
                    hits = index.search(backend.query(chunk(n)), ["alpha"], 10)
                    (alpha if hits else beta).append(len(hits))
                    # Ids join `allowed` before their upsert, so every visible alpha id is in it.
                    assert set(ids(hits)) <= allowed, "a chunk from another collection leaked"
                if finished:
                    break
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert index.count() == 400 - 8 * 2
    assert alpha, "readers never saw a result"
