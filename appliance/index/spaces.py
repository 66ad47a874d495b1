"""Vector spaces per collection: the shared vector index, plus an own USearch index for each collection
whose embedder is not the server's (another model may have other dimensions), behind one VectorIndex."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from appliance.index.protocols import IndexedChunk, IndexHit, VectorIndex
from appliance.index.vectors import EXACT_SEARCH_MAX, USearchVectorIndex


def generation_dir(root: Path, collection: str, generation: int) -> Path:
    """Where a collection's own vector index of `generation` lives (generation 0 is the shared index)."""
    return Path(root) / collection / f"g{generation:06d}"


class CollectionSpaces:
    """One VectorIndex to the index sync: chunks of a collection with an own generation go to that
    generation's index, every other chunk to the shared index. `applied_seq` is the lowest of all
    (None when any is unusable: the sync then rebuilds all of them from DuckDB, where each chunk's
    vector is its collection's live one), `commit` commits each, `count` adds them up.

    `attach` and `detach` swap a collection's index at a switch; the embedders service calls them
    with the index sync paused, so no outbox apply sees half a switch."""

    def __init__(
        self,
        shared: VectorIndex,
        root: Path,
        dtype: str,
        own: dict[str, tuple[int, int]],
        exact_search_max: int = EXACT_SEARCH_MAX,
    ) -> None:
        self.shared = shared
        self.exact_search_max = exact_search_max
        self.name = shared.name
        self.root = Path(root)
        self.dtype = dtype
        self.dimensions = shared.dimensions
        self.count_settle_seconds = shared.count_settle_seconds
        self._lock = threading.Lock()  # the map, against searches reading it
        self._own: dict[str, VectorIndex] = {
            coll: self.open_generation(coll, gen, dims) for coll, (gen, dims) in own.items()
        }

    def open_generation(self, collection: str, generation: int, dimensions: int) -> USearchVectorIndex:
        """A collection's own index of `generation` (created empty when new)."""
        return USearchVectorIndex(
            generation_dir(self.root, collection, generation),
            dimensions,
            self.dtype,
            exact_search_max=self.exact_search_max,
        )

    # -- the map -----------------------------------------------------------------------------------
    def index_for(self, collection: str) -> VectorIndex:
        with self._lock:
            return self._own.get(collection, self.shared)

    def attach(self, collection: str, index: VectorIndex | None) -> VectorIndex | None:
        """Serve `collection` from `index` (None: from the shared index); returns the own index it had."""
        with self._lock:
            previous = self._own.pop(collection, None)
            if index is not None:
                self._own[collection] = index
            return previous

    def own_collections(self) -> list[str]:
        with self._lock:
            return sorted(self._own)

    def _all(self) -> list[VectorIndex]:
        with self._lock:
            return [self.shared, *self._own.values()]

    # -- SearchIndex -----------------------------------------------------------------------------------
    def applied_seq(self) -> int | None:
        seqs = [index.applied_seq() for index in self._all()]
        return None if any(s is None for s in seqs) else min(seqs)

    def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        groups: dict[int, tuple[VectorIndex, list[IndexedChunk]]] = {}
        for chunk in chunks:
            index = self.index_for(chunk.collection)
            groups.setdefault(id(index), (index, []))[1].append(chunk)
        for index, part in groups.values():
            index.upsert(part)

    def delete(self, chunk_ids: Sequence[int]) -> None:
        for index in self._all():  # a delete names no collection; unknown ids are ignored
            index.delete(chunk_ids)

    def commit(self, seq: int) -> None:
        for index in self._all():
            index.commit(seq)

    def count(self) -> int:
        return sum(index.count() for index in self._all())

    def reset(self) -> None:
        for index in self._all():
            index.reset()

    def close(self) -> None:
        for index in self._all():
            index.close()

    # -- VectorIndex -----------------------------------------------------------------------------------
    def search(self, vector: np.ndarray, collections: Sequence[str], k: int) -> list[IndexHit]:
        """Nearest chunks of `collections`, which must share the vector's space (the searcher groups
        collections by embedder before it embeds the query)."""
        groups: dict[int, tuple[VectorIndex, list[str]]] = {}
        for coll in dict.fromkeys(collections):
            index = self.index_for(coll)
            groups.setdefault(id(index), (index, []))[1].append(coll)
        hits = [h for index, colls in groups.values() for h in index.search(vector, colls, k)]
        return sorted(hits, key=lambda h: -h.score)[:k]


def remove_generation(root: Path, collection: str, generation: int) -> None:
    """Delete a generation's files (a failed gate, a confirmed switch's old one)."""
    shutil.rmtree(generation_dir(root, collection, generation), ignore_errors=True)
