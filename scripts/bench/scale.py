"""Search at scale: synthetic chunks loaded straight into DuckDB, indexes built by the server's own
reconcile, then latency per mode through the HTTP API, start-up, resident memory and disk.

    python scripts/bench/scale.py [--chunks 100000] [--queries 100] [--clients 1 16] [--data-dir DIR]

Nothing is embedded: chunk texts are 60 words drawn from a Zipf(1.1) distribution over a
50,000-word synthetic vocabulary (a realistic term-frequency curve for BM25), their embeddings
random unit vectors (Gaussian, normalised, generated inside DuckDB), ten chunks per document, one
collection. The first start finds no index and rebuilds both from DuckDB (what a lost index or a
restore costs: "rebuild"); the second start is a plain start-up with reconcile ("start-up").
Queries are 2-4 vocabulary words of mid frequency; every search has `cache: false`. Admission
control stays on, as a user meets it: searches it turns away (429) are counted, not timed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import percentile  # noqa: E402

from appliance.db.connection import Database  # noqa: E402
from appliance.db.migrations import migrate  # noqa: E402

COLLECTION = "scale"
VOCABULARY = 50_000
WORDS_PER_CHUNK = 60
CHUNKS_PER_DOCUMENT = 10
MODES = ("keyword", "semantic", "hybrid")


def vocabulary(rng: np.random.Generator) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = {"".join(rng.choice(letters, size=rng.integers(4, 10))) for _ in range(VOCABULARY * 2)}
    return sorted(words)[:VOCABULARY]


def zipf_ranks(rng: np.random.Generator, n: int) -> np.ndarray:
    ranks = rng.zipf(1.1, size=n * 2)
    return (ranks[ranks <= VOCABULARY][:n] - 1).astype(np.int64)


def load(data_dir: Path, chunks: int, dimensions: int, seed: int) -> tuple[float, list[str]]:
    """Writes the collection, its documents and chunks into a fresh data dir's DuckDB."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    words = vocabulary(rng)
    data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(data_dir / "appliance.duckdb")
    migrate(db)
    db.write(
        "INSERT INTO collections (name, description) VALUES (?, 'synthetic scale benchmark')", [COLLECTION]
    )
    with tempfile.TemporaryDirectory() as tmp:
        texts = Path(tmp) / "chunks.csv"
        with texts.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["n", "text"])
            for start in range(0, chunks, 10_000):
                count = min(10_000, chunks - start)
                ranks = zipf_ranks(rng, count * WORDS_PER_CHUNK).reshape(count, WORDS_PER_CHUNK)
                out.writerows((start + i, " ".join(words[r] for r in row)) for i, row in enumerate(ranks))
        db.execute(f"SELECT setseed({(seed % 1000) / 1000})")
        db.write(
            f"""INSERT INTO documents (id, collection, source_id, source_kind, title, content_hash, mime_type,
                   size_bytes, metadata, submitted_at)
                SELECT 'doc-' || i, '{COLLECTION}', 'doc-' || i, 'upload', 'Document ' || i,
                       'sha256:' || sha256('doc-' || i), 'text/plain', 0, '{{}}', now()
                FROM range(0, {(chunks + CHUNKS_PER_DOCUMENT - 1) // CHUNKS_PER_DOCUMENT}) t(i)"""
        )
        db.write(
            f"""INSERT INTO chunks (id, document_id, ordinal, text, token_count, embedding)
                WITH raw AS (
                    SELECT n, text, list_transform(range({dimensions}),
                        lambda x: sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random())) AS e
                    FROM read_csv('{texts}', header = true, columns = {{'n': 'BIGINT', 'text': 'VARCHAR'}})
                ),
                normed AS (SELECT n, text, e, sqrt(list_sum(list_transform(e, lambda y: y * y))) AS norm FROM raw)
                SELECT nextval('chunk_ids'), 'doc-' || (n // {CHUNKS_PER_DOCUMENT}), n % {CHUNKS_PER_DOCUMENT},
                       text, {WORDS_PER_CHUNK}, list_transform(e, lambda x: x / norm)::FLOAT[]
                FROM normed ORDER BY n"""
        )
    db.execute("CHECKPOINT")
    db.close()
    # Mid-frequency words: common enough to match, rare enough to discriminate.
    return time.perf_counter() - started, words[100:5000]


@contextmanager
def server(data_dir: Path):
    """`appliance serve` on data_dir; yields (client, pid, seconds until ready)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (data_dir.parent / "server.log").open("ab")
    env = {**os.environ, "APPLIANCE_LLM__LOAD_AT_START": "false"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--data-dir", str(data_dir), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit("server exited:\n" + (data_dir.parent / "server.log").read_text()[-4000:])
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        ready = time.perf_counter() - started
        key = (data_dir / "admin.key").read_text().strip()
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=600) as client:
            yield client, proc.pid, ready
    finally:
        proc.terminate()
        proc.wait(120)
        log.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def disk_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / (1 << 20)


def latencies(
    client: httpx.Client, queries: list[str], mode: str, clients: int
) -> tuple[list[float], int, int]:
    """Latencies of the searches served, how many found something, and how many admission
    control turned away (429: the server sheds load past its queue rather than slowing down)."""

    def one(query: str) -> tuple[float, int, bool]:
        body = {"query": query, "collections": [COLLECTION], "top_k": 10, "mode": mode, "cache": False}
        t = time.perf_counter()
        response = client.post("/api/v1/knowledge/search", json=body)
        if response.status_code == 429:
            return 0.0, 0, True
        response.raise_for_status()
        return (time.perf_counter() - t) * 1000, len(response.json()["hits"]), False

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, queries))
    served = [(ms, hits) for ms, hits, shed in results if not shed]
    return [ms for ms, _ in served], sum(1 for _, hits in served if hits), len(results) - len(served)


def run(chunks: int, queries: int, clients: list[int], data_dir: Path, seed: int = 7) -> dict:
    from appliance.models.catalog import default_embedding_dir
    from appliance.models.embedder import read_model_shape

    dimensions = read_model_shape(default_embedding_dir()).dimensions
    load_s, words = load(data_dir, chunks, dimensions, seed)
    rng = np.random.default_rng(seed + 1)
    texts = [" ".join(rng.choice(words, size=rng.integers(2, 5))) for _ in range(queries)]
    report: dict = {"chunks": chunks, "queries": queries, "load_duckdb_s": round(load_s, 2)}
    with server(data_dir) as (_, pid, ready):
        report["first_start_rebuild_s"] = round(ready, 2)
    report["disk_mib"] = {
        "duckdb": round(disk_mib(data_dir) - disk_mib(data_dir / "index"), 1),
        "bm25": round(disk_mib(data_dir / "index" / "bm25"), 1),
        "vectors": round(disk_mib(data_dir / "index" / "vectors"), 1),
    }
    with server(data_dir) as (client, pid, ready):
        report["startup_s"] = round(ready, 2)
        report["rss_after_start_mib"] = round(rss_mib(pid), 1)
        listed = {c["name"]: c["chunks"] for c in client.get("/api/v1/collections").json()}
        report["chunks_served"] = listed.get(COLLECTION)
        latencies(client, texts[:5], "hybrid", 1)  # warm-up: the query embedder's first call
        report["search"] = {}
        for mode in MODES:
            for n in clients:
                ms, answered, shed = latencies(client, texts, mode, n)
                report["search"][f"{mode} x{n}"] = {
                    "rejected_429": shed,
                    "p50_ms": round(percentile(ms, 50), 1),
                    "p95_ms": round(percentile(ms, 95), 1),
                    "p99_ms": round(percentile(ms, 99), 1),
                    "with_hits": answered,
                }
        report["rss_after_searches_mib"] = round(rss_mib(pid), 1)
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--data-dir", type=Path, help="default: a temporary folder, removed afterwards")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.data_dir:
        report = run(args.chunks, args.queries, args.clients, args.data_dir / "data")
    else:
        with tempfile.TemporaryDirectory(prefix="appliance-scale-") as tmp:
            report = run(args.chunks, args.queries, args.clients, Path(tmp) / "data")
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"chunks: {report['chunks']}  served: {report['chunks_served']}  queries per run: {report['queries']}"
    )
    print(
        f"load into DuckDB: {report['load_duckdb_s']} s   first start (rebuilds both indexes from DuckDB): "
        f"{report['first_start_rebuild_s']} s   start-up (reconcile, indexes present): {report['startup_s']} s"
    )
    print(
        f"resident memory: {report['rss_after_start_mib']} MiB after start, "
        f"{report['rss_after_searches_mib']} MiB after the searches"
    )
    print("disk MiB: " + ", ".join(f"{k} {v}" for k, v in report["disk_mib"].items()))
    print(f"\n{'mode x clients':<16} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'with hits':>10} {'429s':>6}")
    for label, row in report["search"].items():
        print(
            f"{label:<16} {row['p50_ms']:>8} {row['p95_ms']:>8} {row['p99_ms']:>8} {row['with_hits']:>10}"
            f" {row['rejected_429']:>6}"
        )


if __name__ == "__main__":
    main()
