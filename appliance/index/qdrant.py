"""Dense vector index on Qdrant: embedded local mode on this box, or a Qdrant cluster by URL."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import InvalidInput, NotReady
from appliance.index.protocols import COLLECTION_RE, IndexedChunk, IndexHit, check_chunk_id, check_vector

log = logging.getLogger(__name__)

FORMAT = 1
VECTOR = "dense"  # the one named vector; the seq point has none, so no search can return it
# The reserved point that records the applied seq. Chunk ids are positive, so 0 is never one.
SEQ_POINT = 0
UPSERT_BATCH = 256  # points per request: bounds a request's size over the network


class QdrantVectorIndex:
    """VectorIndex on one Qdrant collection for the whole appliance, filtered by a `collection` payload.

    One Qdrant collection rather than one per appliance collection: a chunk that moves between
    collections is a plain upsert by id, a delete needs no collection, a search over several
    collections is one filtered query rather than a fan-out and merge, and a new appliance collection
    costs nothing on the cluster (Qdrant's own advice for many tenants: a keyword payload index with
    `is_tenant`). The collection belongs to this appliance alone: `reset()` drops it.

    Writes wait in memory until `commit(seq)`, which sends the deletes, then the upserts (each
    acknowledged, `wait=True`), then the seq point, last: whatever survives a crash mid-commit, the
    seq on record never claims more than the points hold, and replaying the outbox from it is
    idempotent. So uncommitted changes are neither searchable nor durable, like a keyword index's.
    `applied_seq()` is None when the collection is missing, built for other dimensions, or has no seq
    point (a reset that no commit followed).
    """

    name = "qdrant"

    def __init__(
        self,
        dimensions: int,
        *,
        path: Path | None = None,
        url: str = "",
        api_key: str = "",
        collection: str = "appliance_chunks",
        timeout_seconds: float = 10.0,
        count_settle_seconds: float = 0.0,
    ) -> None:
        if int(dimensions) <= 0:
            raise ValueError(f"dimensions must be positive, got {dimensions}")
        if path is not None and url:
            raise ValueError("give a local path or a cluster URL, not both")
        try:  # only when this backend is chosen: the default install has no qdrant-client
            from qdrant_client import QdrantClient, models
        except ImportError:
            raise InvalidInput(
                "index.vector_backend = 'qdrant' needs qdrant-client: pip install 'appliance[qdrant]'"
            ) from None
        self.dimensions = int(dimensions)
        self.collection = collection
        self.remote = bool(url)
        # Counts read from a replica of a cluster may trail its writes; the reconcile waits this long
        # for them to settle before it takes a mismatch for a broken index (appliance/index/sync.py).
        self.count_settle_seconds = float(count_settle_seconds)
        self._m = models
        if url:
            # REST, never gRPC: gRPC opens its sockets in native code, outside the network guard.
            # The client's own version check warns from a thread of its own, on stderr, outside the
            # JSON log; the same check runs below, in line, into the log.
            self._client = QdrantClient(
                url=url,
                api_key=api_key or None,
                prefer_grpc=False,
                timeout=int(timeout_seconds),
                check_compatibility=False,
            )
        elif path is not None:
            Path(path).mkdir(parents=True, exist_ok=True)
            self._client = QdrantClient(path=str(path))
        else:
            self._client = QdrantClient(location=":memory:")
        # Local mode is plain Python over NumPy arrays, not safe for a search during a write; a
        # cluster takes concurrent requests, and its client (httpx) is thread-safe.
        self._engine_lock: Any = contextlib.nullcontext() if self.remote else threading.Lock()
        self._lock = threading.Lock()  # the pending writes
        self._write_lock = threading.Lock()  # one mutator at a time, held across a commit
        self._pending: dict[int, tuple[str, str, np.ndarray] | None] = {}  # None: delete
        self._closed = False
        self._exists = False  # whether the collection is there (asked once, not on every search)
        self._problem = ""  # why the existing collection cannot take our vectors (until a reset)
        try:
            if self.remote:
                self._check_version()
            self._seq = self._read_seq()
        except Exception as exc:  # unreachable, refused by the guard, a wrong key: say which cluster
            self._client.close()
            if not self.remote:
                raise
            raise NotReady(f"the Qdrant cluster at {url} cannot be read: {exc}") from None

    # -- opening -----------------------------------------------------------------------------
    def _read_seq(self) -> int | None:
        with self._engine_lock:
            self._exists = self._client.collection_exists(self.collection)
            if not self._exists:
                log.info("qdrant collection missing; starting empty", extra={"collection": self.collection})
                return None
            self._problem = problem = self._incompatible()
            if problem:
                log.warning(
                    "qdrant collection unusable", extra={"collection": self.collection, "error": problem}
                )
                return None
            records = self._client.retrieve(self.collection, [SEQ_POINT], with_payload=True)
        payload = records[0].payload if records else None
        if not payload or payload.get("format") != FORMAT or not isinstance(payload.get("seq"), int):
            return None
        return int(payload["seq"])

    def _check_version(self) -> None:
        from importlib.metadata import version

        from qdrant_client.common.version_check import is_compatible

        client, server = version("qdrant-client"), self._client.info().version
        if not is_compatible(client, server):
            log.warning(
                "qdrant-client and the Qdrant cluster differ by more than one minor version",
                extra={"client_version": client, "server_version": server},
            )

    def _incompatible(self) -> str:
        """Why the collection cannot hold this index's vectors; empty when it can."""
        vectors = self._client.get_collection(self.collection).config.params.vectors
        params = vectors.get(VECTOR) if isinstance(vectors, dict) else None
        if params is None:
            return f"no vector named {VECTOR!r}"
        if params.size != self.dimensions or params.distance != self._m.Distance.COSINE:
            return f"built for {params.size}-d {params.distance}, configured {self.dimensions}-d cosine"
        return ""

    def _create_collection(self) -> None:
        m = self._m
        self._client.create_collection(
            self.collection,
            vectors_config={VECTOR: m.VectorParams(size=self.dimensions, distance=m.Distance.COSINE)},
        )
        if self.remote:  # local mode filters by scanning and warns that payload indexes do nothing
            self._client.create_payload_index(
                self.collection,
                "collection",
                field_schema=m.KeywordIndexParams(type=m.KeywordIndexType.KEYWORD, is_tenant=True),
                wait=True,
            )
        self._exists = True

    # -- SearchIndex -------------------------------------------------------------------------
    def applied_seq(self) -> int | None:
        return self._seq

    def upsert(self, chunks: Sequence[IndexedChunk]) -> None:
        staged: dict[int, tuple[str, str, np.ndarray]] = {}
        for c in chunks:  # validate everything before staging anything
            chunk_id = check_chunk_id(c.chunk_id)
            if not isinstance(c.collection, str) or not COLLECTION_RE.match(c.collection):
                raise ValueError(f"invalid collection name {c.collection!r}")
            if c.embedding is None:
                raise ValueError(f"chunk {chunk_id} has no embedding")
            staged[chunk_id] = (c.collection, c.document_id, check_vector(c.embedding, self.dimensions))
        with self._lock:
            self._check_open()
            self._pending.update(staged)

    def delete(self, chunk_ids: Sequence[int]) -> None:
        ids = [check_chunk_id(i) for i in chunk_ids]
        with self._lock:
            self._check_open()
            self._pending.update(dict.fromkeys(ids))

    def commit(self, seq: int) -> None:
        if seq < 0:
            raise ValueError(f"seq must be >= 0, got {seq}")
        m = self._m
        with self._write_lock:
            with self._lock:
                self._check_open()
                pending = dict(self._pending)
            if not pending and seq == self._seq:
                return  # the caller commits after every batch; an unchanged state costs nothing
            deletes = [i for i, v in pending.items() if v is None]
            points = [
                m.PointStruct(
                    id=i, vector={VECTOR: v[2].tolist()}, payload={"collection": v[0], "document_id": v[1]}
                )
                for i, v in pending.items()
                if v is not None
            ]
            with self._engine_lock:
                if not self._exists:
                    self._create_collection()
                elif self._problem:
                    raise NotReady(f"qdrant collection {self.collection!r} needs a rebuild: {self._problem}")
                # Across replicas, a chunk upserted in one commit and deleted in the next must not
                # be applied the other way round: writes go through the shard's leader ("medium").
                order = {"ordering": m.WriteOrdering.MEDIUM} if self.remote else {}
                if deletes:
                    self._client.delete(self.collection, m.PointIdsList(points=deletes), wait=True, **order)
                for start in range(0, len(points), UPSERT_BATCH):
                    batch = points[start : start + UPSERT_BATCH]
                    self._client.upsert(self.collection, batch, wait=True, **order)
                # Last, once every point is acknowledged: a seq is never recorded ahead of its points.
                marker = m.PointStruct(
                    id=SEQ_POINT,
                    vector={},
                    payload={"format": FORMAT, "seq": seq, "dimensions": self.dimensions},
                )
                self._client.upsert(self.collection, [marker], wait=True, **order)
            with self._lock:
                # Only what was sent: a write staged meanwhile, or a failed commit, stays pending.
                for chunk_id, value in pending.items():
                    if chunk_id in self._pending and self._pending[chunk_id] is value:
                        del self._pending[chunk_id]
            self._seq = seq

    def count(self) -> int:
        m = self._m
        with self._engine_lock:
            self._check_open()
            if not self._exists:
                return 0
            found = self._client.count(
                self.collection,
                count_filter=m.Filter(must_not=[m.HasIdCondition(has_id=[SEQ_POINT])]),
                exact=True,
            )
        return int(found.count)

    def reset(self) -> None:
        # Dropping the collection takes the seq point with it first: a crash before the rebuild
        # commits reopens as None (rebuild again), never as an old seq over missing points.
        with self._write_lock, self._engine_lock:
            with self._lock:
                self._check_open()
                self._pending.clear()
            if self._client.collection_exists(self.collection):
                self._client.delete_collection(self.collection)
            self._exists, self._problem = False, ""
            self._create_collection()
            self._seq = 0

    def close(self) -> None:
        with self._write_lock, self._engine_lock:
            with self._lock:
                if self._closed:
                    return
                self._closed = True
                self._pending.clear()
            self._client.close()  # local mode: releases the folder's lock for the next opener

    # -- VectorIndex -------------------------------------------------------------------------
    def search(self, vector: np.ndarray, collections: Sequence[str], k: int) -> list[IndexHit]:
        query = check_vector(vector, self.dimensions)
        colls = list(dict.fromkeys(collections))
        if k <= 0 or not colls:
            return []
        m = self._m
        with self._engine_lock:
            self._check_open()
            if not self._exists or self._problem:
                return []  # nothing of ours to find; the reconcile rebuilds it
            found = self._client.query_points(
                self.collection,
                query=query.tolist(),
                using=VECTOR,
                query_filter=m.Filter(must=[m.FieldCondition(key="collection", match=m.MatchAny(any=colls))]),
                limit=k,
                with_payload=False,
            )
        return [IndexHit(int(p.id), min(1.0, max(-1.0, float(p.score)))) for p in found.points]

    # -- helpers -----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise NotReady("vector index is closed")
