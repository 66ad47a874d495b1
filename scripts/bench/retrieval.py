"""Retrieval quality and speed on a BEIR-layout dataset, through the live API.

Each corpus entry becomes one document (source_id = its _id). Prints nDCG@10, recall@10 and
recall@100 for keyword, semantic and hybrid search, fusion variants computed from the same
candidate lists, ingest throughput, and query latency p50/p95.

    python scripts/bench/retrieval.py data/evalsets/msmarco-subset [--url URL --key KEY] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import bench_server, ingest_corpus, percentile  # noqa: E402

from appliance.index.protocols import IndexHit  # noqa: E402
from appliance.retrieve.fusion import reciprocal_rank_fusion, weighted_fusion  # noqa: E402

COLLECTION = "bench"


def load(dataset: Path):
    corpus = [json.loads(line) for line in (dataset / "corpus.jsonl").open()]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (dataset / "queries.jsonl").open())}
    qrels: dict[str, dict[str, int]] = {}
    for i, line in enumerate((dataset / "qrels" / "test.tsv").open()):
        parts = line.rstrip("\n").split("\t")
        if i == 0 and not parts[-1].lstrip("-").isdigit():
            continue
        qid, did, rel = parts[0], parts[1], int(parts[2])
        qrels.setdefault(qid, {})[did] = rel
    return corpus, {q: t for q, t in queries.items() if q in qrels}, qrels


def ndcg_at(ranked: list[str], rels: dict[str, int], k: int = 10) -> float:
    """Standard (linear gain) nDCG, as trec_eval computes it."""
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(rels.values(), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], rels: dict[str, int], k: int) -> float:
    relevant = {d for d, r in rels.items() if r > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


def doc_ranking(hits: list[dict]) -> list[str]:
    """Chunks to documents: a document ranks at its best chunk."""
    seen, out = set(), []
    for hit in hits:
        if hit["source_id"] not in seen:
            seen.add(hit["source_id"])
            out.append(hit["source_id"])
    return out


def evaluate(runs: dict[str, list[str]], qrels: dict) -> dict[str, float]:
    n = len(runs)
    return {
        "ndcg@10": sum(ndcg_at(r, qrels[q]) for q, r in runs.items()) / n,
        "recall@10": sum(recall_at(r, qrels[q], 10) for q, r in runs.items()) / n,
        "recall@100": sum(recall_at(r, qrels[q], 100) for q, r in runs.items()) / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--url")
    ap.add_argument("--key")
    ap.add_argument("--limit", type=int, default=0, help="ingest only the first N corpus entries")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument(
        "--rerank",
        action="store_true",
        help="also measure hybrid + the bi-encoder reranker (packaged all-mpnet-base-v2)",
    )
    args = ap.parse_args()
    corpus, queries, qrels = load(args.dataset)
    if args.limit:
        corpus = corpus[: args.limit]

    env = {"APPLIANCE_RETRIEVAL__RERANKER": "bi-encoder"} if args.rerank else None
    modes = ["keyword", "semantic", "hybrid"] + (["hybrid+rerank"] if args.rerank else [])
    with bench_server(args.url, args.key, env=env) as client:
        client.post("/api/v1/collections", json={"name": COLLECTION})
        started = time.perf_counter()
        results = ingest_corpus(client, COLLECTION, corpus, args.batch)
        ingest_s = time.perf_counter() - started
        failed = sum(j["progress"]["failed"] for j in results)
        chunks = next(
            c["chunks"] for c in client.get("/api/v1/collections").json() if c["name"] == COLLECTION
        )
        print(
            f"dataset: {args.dataset.name}  documents: {len(corpus)}  chunks: {chunks}  queries: {len(queries)}  failed: {failed}"
        )
        print(
            f"ingest: {ingest_s:.1f} s  {len(corpus) / ingest_s:.1f} documents/s  {chunks / ingest_s:.1f} chunks/s"
        )

        per_mode: dict[str, dict[str, list]] = {}
        latencies: dict[str, list[float]] = {}
        candidate_lists: dict[str, dict[str, list[IndexHit]]] = {"keyword": {}, "semantic": {}}
        source_of: dict[int, str] = {}
        for mode in modes:
            runs, lat = {}, []
            for qid, text in queries.items():
                # Reranking is measured on its default depth (30 candidates): recall@100 is not comparable there.
                rerank = mode.endswith("+rerank")
                body = {
                    "query": text,
                    "collections": [COLLECTION],
                    "top_k": 30 if rerank else 100,
                    "mode": mode.split("+")[0],
                    "rerank": rerank,
                }
                t = time.perf_counter()
                r = client.post("/api/v1/knowledge/search", json=body)
                lat.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
                hits = r.json()["hits"]
                runs[qid] = doc_ranking(hits)
                if mode in candidate_lists:
                    candidate_lists[mode][qid] = [IndexHit(h["chunk_id"], h["score"]) for h in hits]
                    source_of.update({h["chunk_id"]: h["source_id"] for h in hits})
            per_mode[mode] = runs
            latencies[mode] = lat

        print(f"\n{'mode':<28} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'p50 ms':>8} {'p95 ms':>8}")
        scores = {}
        for mode, runs in per_mode.items():
            m = scores[mode] = evaluate(runs, qrels)
            print(
                f"{mode:<28} {m['ndcg@10']:>8.4f} {m['recall@10']:>7.4f} {m['recall@100']:>7.4f} "
                f"{percentile(latencies[mode], 50):>8.1f} {percentile(latencies[mode], 95):>8.1f}"
            )

        print("\nfusion variants over the same top-100 candidate lists (offline, same code as the server):")
        variants = {"rrf k=60": lambda kw, sem: reciprocal_rank_fusion([kw, sem], k=60)}
        for w in (0.5, 0.6, 0.7, 0.8, 0.9):
            variants[f"weighted sem={w}"] = lambda kw, sem, w=w: weighted_fusion([kw, sem], [1 - w, w])
        for name, fuse in variants.items():
            runs = {}
            for qid in queries:
                fused = fuse(candidate_lists["keyword"][qid], candidate_lists["semantic"][qid])
                runs[qid] = list(dict.fromkeys(source_of[h.chunk_id] for h in fused))
            m = evaluate(runs, qrels)
            print(f"{name:<28} {m['ndcg@10']:>8.4f} {m['recall@10']:>7.4f} {m['recall@100']:>7.4f}")

        best_single = max(scores["keyword"]["ndcg@10"], scores["semantic"]["ndcg@10"])
        print(f"\nhybrid / keyword nDCG@10: {scores['hybrid']['ndcg@10'] / scores['keyword']['ndcg@10']:.3f}")
        print(f"hybrid / semantic nDCG@10: {scores['hybrid']['ndcg@10'] / scores['semantic']['ndcg@10']:.3f}")
        print(f"hybrid - best single mode nDCG@10: {scores['hybrid']['ndcg@10'] - best_single:+.4f}")


if __name__ == "__main__":
    main()
