"""Embedder fine-tuning on a collection's own text: nDCG@10 before and after, semantic and hybrid.

Trains on the corpus of a BEIR-layout set only (heading, sentence and, if given, generated-question
pairs, with mined hard negatives; the set's queries are never seen), then ranks the set's queries
over the whole corpus with the base and the tuned embedder: semantic (exact cosine) and hybrid (BM25
from the in-memory index fused with the appliance's default weighted fusion, semantic weight 0.7).
Prints the numbers and the training time, and a JSON line.

    python scripts/bench/tune.py data/evalsets/msmarco-subset --budget 600 [--threads 1] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from appliance.evaluate.generate import SourceChunk  # noqa: E402
from appliance.evaluate.retrieval_metrics import ndcg_at  # noqa: E402
from appliance.index.memory import MemoryKeywordIndex  # noqa: E402
from appliance.index.protocols import IndexedChunk, IndexHit  # noqa: E402
from appliance.models.catalog import default_embedding_dir  # noqa: E402
from appliance.retrieve.fusion import weighted_fusion  # noqa: E402
from appliance.tune.dataset import build_training_data  # noqa: E402
from appliance.tune.heldout import encoder, held_out_scores  # noqa: E402
from appliance.tune.train import TrainConfig, train_embedder  # noqa: E402

CANDIDATES = 100
SEMANTIC_WEIGHT = 0.7


def load(dataset: Path, limit: int | None):
    corpus = [json.loads(line) for line in (dataset / "corpus.jsonl").open()]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (dataset / "queries.jsonl").open())}
    qrels: dict[str, dict[str, int]] = {}
    for i, line in enumerate((dataset / "qrels" / "test.tsv").open()):
        parts = line.rstrip("\n").split("\t")
        if i == 0 and not parts[-1].lstrip("-").isdigit():
            continue
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    if limit:
        keep = {d for rels in qrels.values() for d in rels}
        corpus = [d for d in corpus if d["_id"] in keep] + [d for d in corpus if d["_id"] not in keep]
        corpus = corpus[:limit]
    return corpus, {q: t for q, t in queries.items() if q in qrels}, qrels


def score(encode, corpus, queries, qrels, bm25: MemoryKeywordIndex) -> dict[str, float]:
    ids = [d["_id"] for d in corpus]
    docs = encode([(d.get("title", "") + "\n" + d["text"]).strip() for d in corpus])
    qids = list(queries)
    qvecs = encode([queries[q] for q in qids])
    semantic, hybrid = [], []
    for qid, qv in zip(qids, qvecs, strict=True):
        sims = docs @ qv
        top = np.argsort(-sims)[:CANDIDATES]
        dense = [IndexHit(int(i) + 1, float(sims[i])) for i in top]
        keyword = bm25.search(queries[qid], ["bench"], CANDIDATES)
        fused = weighted_fusion([keyword, dense], [1 - SEMANTIC_WEIGHT, SEMANTIC_WEIGHT])
        semantic.append(ndcg_at([ids[h.chunk_id - 1] for h in dense], qrels[qid], 10))
        hybrid.append(ndcg_at([ids[h.chunk_id - 1] for h in fused], qrels[qid], 10))
    return {
        "semantic_ndcg@10": round(float(np.mean(semantic)), 4),
        "hybrid_ndcg@10": round(float(np.mean(hybrid)), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--budget", type=float, default=600, help="training seconds (default 600)")
    ap.add_argument("--max-steps", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--learning-rate", type=float, default=2e-5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, help="corpus documents (those the qrels name first)")
    ap.add_argument("--work-dir", type=Path, help="keep the checkpoint and model here (resumes)")
    args = ap.parse_args()

    corpus, queries, qrels = load(args.dataset, args.limit)
    print(f"{args.dataset.name}: {len(corpus)} documents, {len(queries)} queries (evaluation only)")
    base = default_embedding_dir()
    encode = encoder(base, threads=args.threads)
    bm25 = MemoryKeywordIndex()
    bm25.upsert(
        [IndexedChunk(i + 1, "bench", d["_id"], d.get("title", ""), d["text"]) for i, d in enumerate(corpus)]
    )
    bm25.commit(1)

    started = time.monotonic()
    chunks = [SourceChunk(i, d["_id"], d["text"], (), d.get("title", "")) for i, d in enumerate(corpus)]
    data = build_training_data(chunks, encode)
    prepare_s = time.monotonic() - started
    print(f"training data in {prepare_s:.0f} s: {json.dumps(data.summary())}")
    before_held = held_out_scores(encode, data.texts, data.held_out)
    before = score(encode, corpus, queries, qrels, bm25)
    print(f"before: {before}  held-out {before_held}")

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="tune-bench-"))
    config = TrainConfig(
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        budget_seconds=args.budget,
        threads=args.threads,
        max_seq_length=args.max_seq_length,
        checkpoint_every=100,
    )
    outcome = train_embedder(base, data.train, data.texts, work, config)
    print(
        f"trained: {outcome.steps} steps (batch {args.batch_size}) in {outcome.seconds:.0f} s ({outcome.reason})"
    )
    tuned = encoder(work / "model", threads=args.threads)
    after_held = held_out_scores(tuned, data.texts, data.held_out)
    after = score(tuned, corpus, queries, qrels, bm25)
    print(f"after:  {after}  held-out {after_held}")
    for key in before:
        print(f"{key}: {before[key]:.4f} -> {after[key]:.4f} ({after[key] - before[key]:+.4f})")
    print(
        json.dumps(
            {
                "dataset": args.dataset.name,
                "documents": len(corpus),
                "queries": len(queries),
                "data": data.summary(),
                "prepare_seconds": round(prepare_s, 1),
                "train_seconds": outcome.seconds,
                "steps": outcome.steps,
                "batch_size": args.batch_size,
                "threads": args.threads,
                "before": before,
                "after": after,
                "held_out_before": before_held,
                "held_out_after": after_held,
            }
        )
    )


if __name__ == "__main__":
    main()
