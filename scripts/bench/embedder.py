"""Benchmark the embedders: passages/s (batch 32, ~245-token MS MARCO passages) and short queries/s."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from appliance.models import catalog  # noqa: E402
from appliance.models import embedder as embedder_module  # noqa: E402
from appliance.models.embedder import SentenceTransformerEmbedder, available_cpus  # noqa: E402

# The MS MARCO subset shipped with the checkout (see data/evalsets/README.md).
EVALSET = REPO / "data" / "evalsets" / "msmarco-subset"
# models.md, measured on 2 CPU cores: (passages/s, queries/s).
REFERENCE = {catalog.MINILM_NAME: (23.0, 195.0), catalog.MPNET_NAME: (1.7, 29.0)}


def _jsonl_texts(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def _trim(embedder: SentenceTransformerEmbedder, text: str, tokens: int) -> str:
    """The longest word prefix of `text` within `tokens` tokens (binary search over the word count)."""
    words = text.split()
    low, high = 1, len(words)
    while low < high:
        mid = (low + high + 1) // 2
        if embedder.count_tokens(" ".join(words[:mid])) <= tokens:
            low = mid
        else:
            high = mid - 1
    return " ".join(words[:low])


def build_passages(
    embedder: SentenceTransformerEmbedder, corpus: list[str], count: int, tokens: int
) -> list[str]:
    """Join consecutive, distinct corpus passages until each reaches about `tokens` tokens."""
    passages: list[str] = []
    current: list[str] = []
    size = 0
    for text in corpus:
        current.append(text)
        size += embedder.count_tokens(text)
        if size >= tokens:
            passages.append(_trim(embedder, " ".join(current), tokens))
            current, size = [], 0
            if len(passages) == count:
                return passages
    raise SystemExit(f"corpus too small for {count} passages of {tokens} tokens")


def bench(embedder: SentenceTransformerEmbedder, corpus: list[str], queries: list[str], args) -> None:
    t0 = time.perf_counter()
    embedder.warm()
    load_s = time.perf_counter() - t0
    passages = build_passages(embedder, corpus, args.passages, args.tokens)
    lengths = [embedder.count_tokens(p) for p in passages]
    # One untimed batch first: the first forward pass allocates and picks kernels.
    embedder.embed_documents(passages[: embedder.batch_size])

    t0 = time.perf_counter()
    embedder.embed_documents(passages)
    doc_s = time.perf_counter() - t0

    for q in queries[:5]:
        embedder.embed_query(q)
    latencies = []
    for i in range(args.queries):
        t0 = time.perf_counter()
        embedder.embed_query(queries[i % len(queries)])
        latencies.append(time.perf_counter() - t0)
    query_s = sum(latencies)

    many_qps = None
    if args.compare_query_threads and embedder.name == catalog.MINILM_NAME:
        # Why queries run on one thread: the same loop with every CPU, next to whatever else is running.
        embedder_module.QUERY_THREADS = embedder.threads
        try:
            t0 = time.perf_counter()
            for i in range(args.queries):
                embedder.embed_query(queries[i % len(queries)])
            many_s = time.perf_counter() - t0
        finally:
            embedder_module.QUERY_THREADS = 1
        many_qps = args.queries / many_s

    ref_docs, ref_queries = REFERENCE.get(embedder.name, (float("nan"), float("nan")))
    pps, qps = len(passages) / doc_s, args.queries / query_s
    print(
        f"{embedder.name}: {embedder.dimensions}-d, max {embedder.max_tokens} tokens, load+warm {load_s:.1f} s"
    )
    print(
        f"  passages: {len(passages)} x ~{statistics.mean(lengths):.0f} tokens (min {min(lengths)}, "
        f"max {max(lengths)}), batch {embedder.batch_size}, {embedder.threads} threads: "
        f"{pps:.1f} passages/s  (models.md 2-core: {ref_docs}; ratio {pps / ref_docs:.2f})"
    )
    latencies.sort()
    print(
        f"  queries:  {args.queries}, 1 thread: {qps:.1f} queries/s, p50 {latencies[len(latencies) // 2] * 1e3:.1f} ms, "
        f"p95 {latencies[int(len(latencies) * 0.95)] * 1e3:.1f} ms  (models.md 2-core: {ref_queries}; "
        f"ratio {qps / ref_queries:.2f})"
    )
    if many_qps is not None:
        print(f"  queries on {embedder.threads} threads instead of 1: {many_qps:.1f} queries/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--evalset",
        type=Path,
        default=EVALSET,
        help="folder holding corpus.jsonl and queries.jsonl (default: the checkout's data/evalsets/msmarco-subset)",
    )
    parser.add_argument("--passages", type=int, default=128, help="passages per model (MiniLM)")
    parser.add_argument("--mpnet-passages", type=int, default=64, help="passages for mpnet (~10x slower)")
    parser.add_argument("--tokens", type=int, default=245, help="target tokens per passage")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="corpus threads (default: all usable CPUs)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--mpnet-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "appliance-models" / catalog.MPNET_NAME,
        help="where all-mpnet-base-v2 is (or gets) assembled",
    )
    parser.add_argument("--no-mpnet", action="store_true")
    parser.add_argument(
        "--no-compare-query-threads",
        dest="compare_query_threads",
        action="store_false",
        help="skip timing MiniLM queries on all threads",
    )
    args = parser.parse_args()

    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (args.evalset / name).is_file():
            parser.error(
                f"{args.evalset / name} not found (--evalset names a folder with corpus.jsonl and queries.jsonl)"
            )
    corpus = _jsonl_texts(args.evalset / "corpus.jsonl")
    queries = _jsonl_texts(args.evalset / "queries.jsonl")
    print(f"cpus usable: {available_cpus()}, device: {args.device}, load average: {os.getloadavg()[0]:.2f}")

    minilm = SentenceTransformerEmbedder(
        catalog.default_embedding_dir(), device=args.device, threads=args.threads, name=catalog.MINILM_NAME
    )
    bench(minilm, corpus, queries, args)

    if args.no_mpnet:
        return
    if not catalog.mpnet_parts_installed() and not (args.mpnet_dir / "config.json").is_file():
        print(f"{catalog.MPNET_NAME}: skipped (parts not installed)")
        return
    t0 = time.perf_counter()
    mpnet_dir = catalog.assemble_mpnet(args.mpnet_dir)
    print(f"{catalog.MPNET_NAME}: assembled at {mpnet_dir} in {time.perf_counter() - t0:.1f} s")
    mpnet = SentenceTransformerEmbedder(
        mpnet_dir, device=args.device, threads=args.threads, name=catalog.MPNET_NAME
    )
    args.passages = args.mpnet_passages
    bench(mpnet, corpus, queries, args)


if __name__ == "__main__":
    main()
