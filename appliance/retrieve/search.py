"""Hybrid search: BM25 and vector candidates, fused, filtered, optionally reranked."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Literal

import msgspec
import numpy as np

from appliance.config import CacheSettings, RetrievalSettings
from appliance.db.catalog import Catalog
from appliance.db.fusion import FusionStore
from appliance.errors import InvalidInput
from appliance.index.protocols import IndexHit, KeywordIndex, VectorIndex
from appliance.models.embedder import Embedder
from appliance.records import FusionSettings, Hit
from appliance.retrieve.cache import LRUCache
from appliance.retrieve.fusion import fuse
from appliance.retrieve.rerank import RerankCandidate, Reranker
from appliance.retrieve.routing import routed_weight

Mode = Literal["keyword", "semantic", "hybrid"]
MODES = ("keyword", "semantic", "hybrid")

# With metadata filters the indexes cannot filter (they know only collections), so take
# more candidates to leave enough after filtering in DuckDB.
FILTER_OVERFETCH = 5


# Collections grouped by the embedder their vectors come from, with the index serving them, held
# while the search uses them: a semantic search embeds the query once per group (core/embedders.py
# routes by each collection's live embedder, and a switch waits for the searches holding the old
# route; without it every collection is on the server's embedder and its index).
Route = Callable[[Sequence[str]], AbstractContextManager[list[tuple[Embedder, VectorIndex, list[str]]]]]

# A cached result is served for the same query, collections (at the same content generation),
# mode, depth, reranking, filters and fusion settings (a calibration changes a collection's).
_ResultKey = tuple[str, tuple[str, ...], int, str, bool, str, tuple[int, tuple[int, ...]], FusionSettings]


def default_fusion(settings: RetrievalSettings) -> FusionSettings:
    """The server-wide fusion: what a collection without calibrated settings gets."""
    return FusionSettings(
        method=settings.fusion,
        semantic_weight=settings.semantic_weight,
        rrf_k=settings.rrf_k,
        candidates=settings.candidates,
        routing=settings.routing,
        lookup_semantic_weight=settings.lookup_semantic_weight,
        question_semantic_weight=settings.question_semantic_weight,
    )


def fuse_candidates(
    query: str, keyword: list[IndexHit], semantic: list[IndexHit], fusion: FusionSettings
) -> list[IndexHit]:
    """Hybrid fusion of one query's two candidate lists under `fusion` (routing included)."""
    weight = fusion.semantic_weight
    if fusion.routing:
        weight = routed_weight(query, weight, fusion.lookup_semantic_weight, fusion.question_semantic_weight)
    return fuse([keyword, semantic], fusion.method, [1.0 - weight, weight], fusion.rrf_k)


@dataclass(slots=True)
class SearchResult:
    hits: list[Hit]
    timings: dict[str, float] = field(default_factory=dict)
    mode: str = "hybrid"
    reranked: bool = False
    # Cosine similarity of the closest chunk, before fusion: an absolute relevance signal that
    # fused or reranked scores are not. None when the semantic retriever did not run.
    best_similarity: float | None = None
    # The query's embedding when the semantic retriever ran (answer traces keep it, for drift).
    query_vector: np.ndarray | None = None
    cached: bool = False  # served from the retrieval cache


def _result_bytes(result: SearchResult) -> int:
    vector = result.query_vector.nbytes if result.query_vector is not None else 0
    return 512 + vector + sum(600 + len(h.text) * 2 for h in result.hits)


class HybridSearcher:
    def __init__(
        self,
        catalog: Catalog,
        keyword: KeywordIndex,
        vectors: VectorIndex,
        embedder: Embedder,
        settings: RetrievalSettings,
        reranker: Reranker | None = None,
        cache: CacheSettings | None = None,
        on_cache_lookup: Callable[[str, bool], None] | None = None,
        fusion_store: FusionStore | None = None,
        route: Route | None = None,
    ) -> None:
        self.catalog = catalog
        self.route: Route = route or (
            lambda collections: nullcontext([(self.embedder, self.vectors, list(collections))])
        )
        self.keyword = keyword
        self.vectors = vectors
        self.embedder = embedder
        self.settings = settings
        self.reranker = reranker
        self.fusion_store = fusion_store
        self.default_fusion = default_fusion(settings)
        cache = cache or CacheSettings(enabled=False)
        mb = 1 << 20
        # Query embeddings: the same question asked again skips the embedder (most of a search's
        # time on a CPU); results: the same search over unchanged collections skips everything.
        self.embedding_cache: LRUCache[np.ndarray] | None = (
            LRUCache("embedding", cache.embedding_mb * mb, lambda v: v.nbytes + 200, on_cache_lookup)
            if cache.enabled and cache.embedding_mb
            else None
        )
        self.result_cache: LRUCache[SearchResult] | None = (
            LRUCache("retrieval", cache.retrieval_mb * mb, _result_bytes, on_cache_lookup)
            if cache.enabled and cache.retrieval_mb
            else None
        )

    def search(
        self,
        query: str,
        collections: Sequence[str],
        top_k: int = 10,
        mode: str | None = None,
        rerank: bool | None = None,
        filters: dict | None = None,
        cache: bool = True,
    ) -> SearchResult:
        """The top_k hits over `collections`. `cache=False` neither reads nor fills the caches
        (evaluation measures the retrievers themselves)."""
        mode = mode or self.settings.default_mode
        if mode not in MODES:
            raise InvalidInput(f"unknown search mode {mode!r}: use one of {', '.join(MODES)}")
        if not query.strip():
            raise InvalidInput("query is empty")
        if filters and not all(isinstance(key, str) and key for key in filters):
            raise InvalidInput("filters: every key must be a non-empty metadata key")
        use_rerank = (self.settings.reranker != "none") if rerank is None else rerank
        if use_rerank and self.reranker is None:
            raise InvalidInput("no reranker is configured on this server (retrieval.reranker)")
        started = time.perf_counter()
        fusion = self.fusion_for(collections)
        key: _ResultKey | None = None
        if cache and self.result_cache is not None:
            names = tuple(sorted(set(collections)))
            filtered = json.dumps(filters, sort_keys=True, default=str) if filters else ""
            generation = self.catalog.generations.of(names)
            key = (query, names, top_k, mode, use_rerank, filtered, generation, fusion)
            if (hit := self.result_cache.get(key)) is not None:
                return dataclasses.replace(
                    hit, hits=list(hit.hits), timings={"total_ms": _ms(started)}, cached=True
                )
        result = self._search(query, collections, top_k, mode, use_rerank, filters, started, cache, fusion)
        if key is not None:
            self.result_cache.put(key, result)
        return result

    def fusion_for(self, collections: Sequence[str]) -> FusionSettings:
        """The collections' calibrated fusion when they share one, else the server's default."""
        stored = self.fusion_store.settings_for(list(collections)) if self.fusion_store else None
        return stored or self.default_fusion

    def _embed(self, query: str, cache: bool, embedder: Embedder | None = None) -> np.ndarray:
        embedder = embedder or self.embedder
        if not cache or self.embedding_cache is None:
            return embedder.embed_query(query)
        # The server's embedder keys by the query alone (as callers outside search expect).
        key = query if embedder is self.embedder else f"{embedder.name}\x00{query}"
        vector = self.embedding_cache.get(key)
        if vector is None:
            vector = embedder.embed_query(query)
            vector.flags.writeable = False  # shared by every search that asks the same
            self.embedding_cache.put(key, vector)
        return vector

    def semantic(
        self, query: str, collections: Sequence[str], depth: int, cache: bool = True
    ) -> tuple[list[IndexHit], np.ndarray | None, dict[str, float]]:
        """Vector candidates over `collections`, each group embedded by its collections' embedder;
        the query's vector by the server's embedder when it was computed (answer traces, drift)."""
        timings = {"embed_ms": 0.0, "vector_ms": 0.0}
        hits: list[IndexHit] = []
        server_vector = None
        with self.route(collections) as groups:
            for embedder, index, group in groups:
                t = time.perf_counter()
                vector = self._embed(query, cache, embedder)
                timings["embed_ms"] += _ms(t)
                if embedder is self.embedder:
                    server_vector = vector
                t = time.perf_counter()
                hits.extend(index.search(vector, group, depth))
                timings["vector_ms"] += _ms(t)
        hits.sort(key=lambda h: -h.score)
        return hits[:depth], server_vector, {k: round(v, 2) for k, v in timings.items()}

    def _search(
        self,
        query: str,
        collections: Sequence[str],
        top_k: int,
        mode: str,
        use_rerank: bool,
        filters: dict | None,
        started: float,
        cache: bool,
        fusion: FusionSettings,
    ) -> SearchResult:
        timings: dict[str, float] = {}
        depth = max(fusion.candidates, top_k, self.settings.rerank_candidates if use_rerank else 0)
        if filters:
            depth *= FILTER_OVERFETCH

        lists: list[list[IndexHit]] = []
        best_similarity: float | None = None
        vector = None
        if mode in ("keyword", "hybrid"):
            t = time.perf_counter()
            lists.append(self.keyword.search(query, collections, depth))
            timings["keyword_ms"] = _ms(t)
        if mode in ("semantic", "hybrid"):
            semantic, vector, semantic_timings = self.semantic(query, collections, depth, cache)
            timings.update(semantic_timings)
            lists.append(semantic)
            best_similarity = max((h.score for h in semantic), default=0.0)

        t = time.perf_counter()
        fused = lists[0] if len(lists) == 1 else fuse_candidates(query, lists[0], lists[1], fusion)
        timings["fusion_ms"] = _ms(t)

        t = time.perf_counter()
        # Reranking covers at least top_k candidates, so every hit returned carries a score
        # from the same (last) stage and the list stays ordered by it.
        keep = max(self.settings.rerank_candidates, top_k) if use_rerank else top_k
        rows = self.catalog.hydrate_chunks([h.chunk_id for h in fused], collections, filters)
        ranked = [(rows[h.chunk_id], h.score) for h in fused if h.chunk_id in rows][:keep]
        timings["hydrate_ms"] = _ms(t)

        if use_rerank and ranked:
            t = time.perf_counter()
            candidates = [RerankCandidate(row.chunk_id, row.text, row.title) for row, _ in ranked]
            scores = self.reranker.rerank(query, candidates)
            ranked = sorted(zip([r for r, _ in ranked], scores, strict=True), key=lambda rs: -rs[1])
            timings["rerank_ms"] = _ms(t)

        hits = [msgspec.structs.replace(row, score=round(float(score), 6)) for row, score in ranked[:top_k]]
        timings["total_ms"] = _ms(started)
        return SearchResult(
            hits=hits,
            timings=timings,
            mode=mode,
            reranked=bool(use_rerank and ranked),
            best_similarity=best_similarity,
            query_vector=vector,
        )


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)
