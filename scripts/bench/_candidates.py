"""Candidate lists for fusion benchmarks: a BEIR set chunked, embedded and indexed once, cached on disk.

The corpus is chunked by the appliance's chunker (default settings), embedded as ingestion embeds
it (title and section prefixed), written to the real Tantivy and USearch indexes in a temporary
folder, and every query's top-`depth` keyword and semantic candidates are saved with their raw
scores. Vectors and lists are cached under `cache_dir/<set name>/`, so reruns embed nothing.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from appliance.config import ChunkingSettings
from appliance.index.bm25 import TantivyKeywordIndex
from appliance.index.protocols import IndexedChunk
from appliance.index.vectors import USearchVectorIndex
from appliance.ingest.chunking import Chunker
from appliance.ingest.parsers.text import parse
from appliance.ingest.pipeline import embedding_text
from appliance.models.catalog import default_embedding_dir
from appliance.models.embedder import SentenceTransformerEmbedder

COLLECTION = "bench"


def load_beir(dataset: Path) -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    corpus = [json.loads(line) for line in (dataset / "corpus.jsonl").open()]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (dataset / "queries.jsonl").open())}
    qrels: dict[str, dict[str, int]] = {}
    for i, line in enumerate((dataset / "qrels" / "test.tsv").open()):
        parts = line.rstrip("\n").split("\t")
        if i == 0 and not parts[-1].lstrip("-").isdigit():
            continue
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return corpus, {q: t for q, t in queries.items() if q in qrels}, qrels


def candidates(dataset: Path, cache_dir: Path, depth: int = 100, log=print) -> dict:
    """{"keyword": {qid: [[chunk_id, score], ...]}, "semantic": {...}, "doc_of": {chunk_id: doc id}}."""
    out_dir = cache_dir / dataset.name
    lists_file = out_dir / f"candidates-{depth}.json"
    if lists_file.exists():
        return json.loads(lists_file.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus, queries, _ = load_beir(dataset)
    embedder = SentenceTransformerEmbedder(default_embedding_dir())
    defaults = ChunkingSettings()
    chunker = Chunker(embedder.count_tokens, size=defaults.size_tokens, overlap=defaults.overlap_tokens)
    chunks: list[IndexedChunk] = []
    texts: list[str] = []
    for doc in corpus:
        title = doc.get("title") or ""
        for chunk in chunker.chunk(parse(doc["text"], doc["_id"])):
            chunks.append(IndexedChunk(len(chunks) + 1, COLLECTION, doc["_id"], title, chunk.text))
            texts.append(embedding_text(title, chunk))
    vectors_file = out_dir / "vectors.npy"
    if vectors_file.exists():
        vectors = np.load(vectors_file)
    else:
        started = time.perf_counter()
        parts = []
        for i in range(0, len(texts), 256):
            parts.append(embedder.embed_documents(texts[i : i + 256]))
            log(f"  {dataset.name}: embedded {i + len(parts[-1])}/{len(texts)} chunks", file=sys.stderr)
        vectors = np.concatenate(parts)
        np.save(vectors_file, vectors)
        log(
            f"  {dataset.name}: {len(texts)} chunks embedded in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
    result: dict = {"keyword": {}, "semantic": {}, "doc_of": {c.chunk_id: c.document_id for c in chunks}}
    with tempfile.TemporaryDirectory() as tmp:
        keyword = TantivyKeywordIndex(Path(tmp) / "bm25")
        vector_index = USearchVectorIndex(Path(tmp) / "vectors", embedder.dimensions)
        for i in range(0, len(chunks), 2000):
            batch = chunks[i : i + 2000]
            keyword.upsert(batch)
            vector_index.upsert(
                [
                    IndexedChunk(c.chunk_id, c.collection, c.document_id, c.title, c.text, v)
                    for c, v in zip(batch, vectors[i : i + 2000], strict=True)
                ]
            )
        keyword.commit(1)
        vector_index.commit(1)
        for qid, text in queries.items():
            result["keyword"][qid] = [
                [h.chunk_id, h.score] for h in keyword.search(text, [COLLECTION], depth)
            ]
            hits = vector_index.search(embedder.embed_query(text), [COLLECTION], depth)
            result["semantic"][qid] = [[h.chunk_id, h.score] for h in hits]
        keyword.close()
        vector_index.close()
    lists_file.write_text(json.dumps(result))
    return json.loads(lists_file.read_text())  # chunk ids as the JSON keys they are on reruns
