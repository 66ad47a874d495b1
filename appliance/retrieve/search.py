"""Hybrid search: BM25 and vector candidates, fused, filtered, optionally reranked."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec
import numpy as np

from appliance.config import RetrievalSettings
from appliance.db.catalog import Catalog
from appliance.errors import InvalidInput
from appliance.index.protocols import IndexHit, KeywordIndex, VectorIndex
from appliance.models.embedder import Embedder
from appliance.records import Hit
from appliance.retrieve.fusion import reciprocal_rank_fusion, weighted_fusion
from appliance.retrieve.rerank import RerankCandidate, Reranker

Mode = Literal["keyword", "semantic", "hybrid"]
MODES = ("keyword", "semantic", "hybrid")

# With metadata filters the indexes cannot filter (they know only collections), so take
# more candidates to leave enough after filtering in DuckDB.
FILTER_OVERFETCH = 5


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


class HybridSearcher:
    def __init__(
        self,
        catalog: Catalog,
        keyword: KeywordIndex,
        vectors: VectorIndex,
        embedder: Embedder,
        settings: RetrievalSettings,
        reranker: Reranker | None = None,
    ) -> None:
        self.catalog = catalog
        self.keyword = keyword
        self.vectors = vectors
        self.embedder = embedder
        self.settings = settings
        self.reranker = reranker

    def search(
        self,
        query: str,
        collections: Sequence[str],
        top_k: int = 10,
        mode: str | None = None,
        rerank: bool | None = None,
        filters: dict | None = None,
    ) -> SearchResult:
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
        timings: dict[str, float] = {}
        started = time.perf_counter()
        depth = max(self.settings.candidates, top_k, self.settings.rerank_candidates if use_rerank else 0)
        if filters:
            depth *= FILTER_OVERFETCH

        lists: list[list[IndexHit]] = []
        weights: list[float] = []
        best_similarity: float | None = None
        vector = None
        if mode in ("keyword", "hybrid"):
            t = time.perf_counter()
            lists.append(self.keyword.search(query, collections, depth))
            weights.append(1.0 - self.settings.semantic_weight)
            timings["keyword_ms"] = _ms(t)
        if mode in ("semantic", "hybrid"):
            t = time.perf_counter()
            vector = self.embedder.embed_query(query)
            timings["embed_ms"] = _ms(t)
            t = time.perf_counter()
            semantic = self.vectors.search(vector, collections, depth)
            lists.append(semantic)
            weights.append(self.settings.semantic_weight)
            best_similarity = max((h.score for h in semantic), default=0.0)
            timings["vector_ms"] = _ms(t)

        t = time.perf_counter()
        if len(lists) == 1:
            fused = lists[0]
        elif self.settings.fusion == "rrf":
            fused = reciprocal_rank_fusion(lists, k=self.settings.rrf_k)
        else:
            fused = weighted_fusion(lists, weights)
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
