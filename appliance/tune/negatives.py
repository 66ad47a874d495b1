"""Hard negatives: chunks BM25 and the current embedder rank high for a query that are not its
positive, nor a near-duplicate of it, nor held out."""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence

import numpy as np

from appliance.index.memory import MemoryKeywordIndex, terms
from appliance.index.protocols import IndexedChunk
from appliance.tune.pairs import TrainingPair

NEAR_DUPLICATE_JACCARD = 0.6  # of content terms: a reworded copy of the positive is no negative
NEAR_DUPLICATE_COSINE = 0.95
_COLLECTION = "tune"

EmbedTexts = Callable[[Sequence[str]], np.ndarray]  # L2-normalised rows, one per text


def _term_set(text: str) -> frozenset[str]:
    return frozenset(terms(text))


def near_duplicate(a: frozenset[str], b: frozenset[str]) -> bool:
    if not a or not b:
        return a == b
    return len(a & b) / len(a | b) >= NEAR_DUPLICATE_JACCARD


class NegativeMiner:
    """Ranks every chunk for a query with BM25 (the in-memory index) and, given `embed`, by cosine
    to the embedder's vectors; negatives are taken from both lists in turn, below `skip_top` (the
    very top is too often an unlabelled positive) and within `depth`."""

    def __init__(
        self,
        texts: Sequence[str],
        embed: EmbedTexts | None = None,
        *,
        depth: int = 30,
        skip_top: int = 2,
        vectors: np.ndarray | None = None,
    ) -> None:
        self.texts = list(texts)
        self.depth = depth
        self.skip_top = skip_top
        self.embed = embed
        self._terms = [_term_set(t) for t in self.texts]
        self._bm25 = MemoryKeywordIndex()
        self._bm25.upsert(
            [
                IndexedChunk(i + 1, _COLLECTION, str(i), "", t) for i, t in enumerate(self.texts)
            ]  # ids start at 1
        )
        self._bm25.commit(1)
        if vectors is None and embed is not None:
            vectors = embed(self.texts)
        self.vectors = vectors

    def candidates(self, query: str, query_vector: np.ndarray | None = None) -> list[int]:
        """The chunk indexes to draw negatives from, best first, the two rankers interleaved."""
        keyword = [h.chunk_id - 1 for h in self._bm25.search(query, [_COLLECTION], self.depth)]
        dense: list[int] = []
        if self.vectors is not None and query_vector is not None:
            scores = self.vectors @ query_vector
            top = min(self.depth, len(scores))
            dense = [int(i) for i in np.argsort(-scores)[:top]]
        keyword, dense = keyword[self.skip_top :], dense[self.skip_top :]
        out: list[int] = []
        for rank in range(max(len(keyword), len(dense))):
            for ranked in (keyword, dense):
                if rank < len(ranked) and ranked[rank] not in out:
                    out.append(ranked[rank])
        return out

    def is_near_duplicate(self, candidate: int, pair: TrainingPair) -> bool:
        if candidate == pair.positive or self.texts[candidate].strip() == pair.positive_text.strip():
            return True
        if near_duplicate(self._terms[candidate], self._terms[pair.positive]):
            return True
        if self.vectors is not None:
            return float(self.vectors[candidate] @ self.vectors[pair.positive]) >= NEAR_DUPLICATE_COSINE
        return False

    def mine(
        self,
        pairs: Sequence[TrainingPair],
        per_pair: int = 1,
        exclude: Collection[int] = frozenset(),
        seed: int = 0,
    ) -> list[TrainingPair]:
        """Each pair with up to `per_pair` hard negatives; never its positive, a near-duplicate of
        it, nor a chunk in `exclude` (the held-out ones). A pair with no candidate gets a random
        other chunk, so every training batch has a third column."""
        rng = random.Random(seed)
        out: list[TrainingPair] = []
        queries = self.embed([p.query for p in pairs]) if self.embed is not None and pairs else None
        for n, pair in enumerate(pairs):
            chosen: list[int] = []
            for candidate in self.candidates(pair.query, queries[n] if queries is not None else None):
                if len(chosen) >= per_pair:
                    break
                if candidate in exclude or self.is_near_duplicate(candidate, pair):
                    continue
                chosen.append(candidate)
            tries = 0
            while not chosen and tries < 20 and len(self.texts) > 1:
                tries += 1
                candidate = rng.randrange(len(self.texts))
                if candidate not in exclude and not self.is_near_duplicate(candidate, pair):
                    chosen.append(candidate)
            out.append(pair.with_negatives(chosen))
        return out
