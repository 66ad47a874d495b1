"""Ingest through the batch API, as a ratio to the raw embedding throughput of the same chunk texts.

A fresh `appliance serve` ingests a BEIR-layout corpus (short documents: MS MARCO passages by
default) in batches through POST /api/v1/documents/batch; the clock runs from the first POST to
the last job's end. Then the very chunk texts the server embedded (read back through the API) are
embedded by this process alone, on the same model and thread count, once the server is stopped.
Issue 18's target is a ratio of at least 0.90.

    python scripts/bench/ingest_api.py [DATASET] [--limit 2000] [--batch 500] [--repeat-raw 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import bench_server, chat_model_ready, ingest_corpus  # noqa: E402

from appliance.config import load_settings  # noqa: E402
from appliance.document import Chunk, Location  # noqa: E402
from appliance.ingest.pipeline import embedding_text  # noqa: E402
from appliance.models.catalog import MINILM_NAME, default_embedding_dir  # noqa: E402
from appliance.models.embedder import SentenceTransformerEmbedder  # noqa: E402
from appliance.records import Document  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
COLLECTION = "bench"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path, nargs="?", default=REPO / "data" / "evalsets" / "msmarco-subset")
    ap.add_argument("--limit", type=int, default=2000, help="ingest the first N corpus entries")
    ap.add_argument("--batch", type=int, default=500, help="documents per POST")
    ap.add_argument("--repeat-raw", type=int, default=1, help="raw embedding runs (the best is kept)")
    args = ap.parse_args()
    corpus = [json.loads(line) for line in (args.dataset / "corpus.jsonl").open()][: args.limit]

    with bench_server() as client:
        chat_model_ready(client)  # its load would compete with the ingest for the cores
        client.post("/api/v1/collections", json={"name": COLLECTION}).raise_for_status()
        started = time.perf_counter()
        results = ingest_corpus(client, COLLECTION, corpus, args.batch)
        api_s = time.perf_counter() - started
        failed = sum(j["progress"]["failed"] for j in results)

        texts: list[str] = []
        offset = 0
        while True:
            page = client.get(
                "/api/v1/documents", params={"collection": COLLECTION, "limit": 1000, "offset": offset}
            ).json()
            for listed in page["documents"]:
                raw = client.get(f"/api/v1/documents/{listed['id']}", params={"chunks": "true"}).content
                doc = msgspec.json.decode(raw, type=Document)
                texts += [
                    embedding_text(doc.title, Chunk(c.ordinal, c.text, Location(heading_path=tuple(path)), 0))
                    for c in doc.chunks or []
                    for path in [c.location.heading_path or ()]
                ]
            offset += len(page["documents"])
            if offset >= page["total"] or not page["documents"]:
                break

    # The server is stopped: the raw run has the cores to itself, as the server's embedder had.
    emb = load_settings(environ={}).embedding
    embedder = SentenceTransformerEmbedder(
        Path(emb.model_dir) if emb.model_dir else default_embedding_dir(),
        device=emb.device,
        batch_size=emb.batch_size,
        threads=emb.threads or None,
        name=None if emb.model_dir else MINILM_NAME,
    )
    embedder.embed_documents(texts[:64])  # warm-up, not counted
    raw_s = float("inf")
    for _ in range(args.repeat_raw):
        t = time.perf_counter()
        embedder.embed_documents(texts)
        raw_s = min(raw_s, time.perf_counter() - t)

    print(f"dataset: {args.dataset.name}  documents: {len(corpus)}  chunks: {len(texts)}  failed: {failed}")
    print(
        f"batch API ingest: {api_s:.1f} s  {len(corpus) / api_s:.1f} documents/s  {len(texts) / api_s:.1f} chunks/s"
    )
    print(f"raw embedding of the same {len(texts)} texts: {raw_s:.1f} s  {len(texts) / raw_s:.1f} chunks/s")
    print(f"API ingest throughput / raw embedding throughput: {raw_s / api_s:.3f}  (target >= 0.90)")


if __name__ == "__main__":
    main()
