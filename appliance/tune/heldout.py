"""Held-out retrieval quality of an embedder: nDCG@10 of the held-out queries over the chunks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from appliance.evaluate.retrieval_metrics import ndcg_at, recall_at
from appliance.tune.pairs import TrainingPair

K = 10


def encoder(model_dir: Path | str, threads: int = 1, device: str = "cpu"):
    """`texts -> L2-normalised float32 rows` over a local sentence-transformers folder, run on
    `threads` torch threads of the calling thread; each distinct text is embedded once."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)

    # Mining, held-out scoring and benchmarks embed the same chunks again: each text is embedded once.
    cache: dict[str, np.ndarray] = {}

    def encode(texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in cache))
        if missing:
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                vectors = model.encode(
                    missing,
                    batch_size=64,
                    convert_to_numpy=True,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                )
            finally:
                torch.set_num_threads(previous)
            cache.update(zip(missing, np.asarray(vectors, dtype=np.float32), strict=True))
        if not texts:
            return np.zeros((0, model.get_embedding_dimension()), dtype=np.float32)
        return np.stack([cache[t] for t in texts])

    return encode


def ranked_ndcg(
    query_vectors: np.ndarray, corpus_vectors: np.ndarray, relevant: Sequence[set[int]]
) -> dict[str, float]:
    """Mean nDCG@10 and recall@10 of exact cosine rankings, each query's relevant chunk indexes given."""
    ndcg, recall = [], []
    scores = query_vectors @ corpus_vectors.T
    for row, gold in zip(scores, relevant, strict=True):
        top = np.argsort(-row)[:K]
        ranked = [str(int(i)) for i in top]
        rel = {str(i): 1 for i in gold}
        ndcg.append(ndcg_at(ranked, rel, K))
        recall.append(recall_at(ranked, rel, K))
    n = max(1, len(ndcg))
    return {"ndcg@10": round(sum(ndcg) / n, 4), "recall@10": round(sum(recall) / n, 4), "queries": len(ndcg)}


def held_out_scores(encode, texts: Sequence[str], held_out: Sequence[TrainingPair]) -> dict[str, float]:
    """The held-out pairs' queries ranked over every chunk in `texts` by `encode`."""
    if not held_out:
        return {"ndcg@10": 0.0, "recall@10": 0.0, "queries": 0}
    # A sentence pair's passage lacks its sentence: ranked as training saw it, not by a copied query.
    texts = list(texts)
    for p in held_out:
        texts[p.positive] = p.positive_text
    corpus = encode(texts)
    queries = encode([p.query for p in held_out])
    return ranked_ndcg(queries, corpus, [{p.positive} for p in held_out])
