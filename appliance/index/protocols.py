"""The narrow contracts every keyword and vector index backend implements.

They speak only of chunk ids, collections, text and vectors, never of Tantivy or
USearch, so a distributed engine (OpenSearch, Vespa, Qdrant: appliance/index/qdrant.py) can stand in.
Writes are idempotent upserts keyed by chunk id; `commit(seq)` makes everything
applied so far durable and records the last outbox sequence it covers.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from appliance.names import COLLECTION_NAME

# What every backend accepts, checked at its door: collection names as the catalogue makes them,
# chunk ids as DuckDB's BIGINT sequence hands them out.
# \A...\Z: the whole string, so `.match` cannot accept "name\n" the way `$` would.
COLLECTION_RE = re.compile(rf"\A(?:{COLLECTION_NAME.pattern})\Z")
_INT64_MAX = 2**63 - 1


def check_vector(vector: np.ndarray, dimensions: int) -> np.ndarray:
    """The vector as float32; ValueError unless it has `dimensions` finite values, not all zero."""
    v = np.asarray(vector, dtype=np.float32)
    if v.shape != (dimensions,):
        raise ValueError(f"expected a vector of shape ({dimensions},), got {v.shape}")
    if not np.isfinite(v).all() or not v.any():
        raise ValueError("vector must be finite and non-zero")
    return v


def check_chunk_id(chunk_id: int) -> int:
    """The id as a plain int; ValueError unless it is a positive int64 (NumPy integers pass,
    floats and bools do not)."""
    try:
        value = operator.index(chunk_id) if not isinstance(chunk_id, bool) else -1
    except TypeError:
        value = -1
    if not 0 < value <= _INT64_MAX:
        raise ValueError(f"chunk id must be a positive int64, got {chunk_id!r}")
    return value


@dataclass(frozen=True, slots=True)
class IndexedChunk:
    """What an index needs to know about a chunk."""

    chunk_id: int
    collection: str
    document_id: str
    title: str
    text: str
    embedding: np.ndarray | None = None  # float32, L2-normalised, for vector indexes


@dataclass(frozen=True, slots=True)
class IndexHit:
    chunk_id: int
    score: float  # higher is better; BM25 score or cosine similarity


@runtime_checkable
class SearchIndex(Protocol):
    """Shared part of both index kinds."""

    name: str
    # How long `count()` may trail acknowledged writes (an eventually consistent engine's replicas);
    # 0 for an index that counts exactly what it committed. The reconcile waits this long for the
    # count to reach DuckDB's before it takes a mismatch for damage and rebuilds.
    count_settle_seconds: float

    def applied_seq(self) -> int | None:
        """Last outbox sequence made durable, or None when the index is missing or unusable
        (the reconciler then rebuilds it from DuckDB)."""

    def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        """Insert or replace chunks by id. Visible to search after `refresh` or `commit`."""

    def delete(self, chunk_ids: Sequence[int]) -> None:
        """Remove chunks by id; unknown ids are ignored."""

    def commit(self, seq: int) -> None:
        """Make all applied changes durable (atomically) and record `seq` as applied."""

    def count(self) -> int:
        """Number of chunks currently searchable."""

    def reset(self) -> None:
        """Drop every entry (before a rebuild). `applied_seq()` is then 0."""

    def close(self) -> None: ...


@runtime_checkable
class KeywordIndex(SearchIndex, Protocol):
    def search(self, query: str, collections: Sequence[str], k: int) -> list[IndexHit]:
        """BM25 over title and body, restricted to `collections` (never empty)."""


@runtime_checkable
class VectorIndex(SearchIndex, Protocol):
    dimensions: int

    def search(self, vector: np.ndarray, collections: Sequence[str], k: int) -> list[IndexHit]:
        """Nearest chunks by cosine similarity, restricted to `collections` (never empty)."""
