"""Benchmark the USearch vector index: upsert throughput, search latency, save cost, i8 versus f16."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from appliance.index.protocols import IndexedChunk
from appliance.index.vectors import USearchVectorIndex


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def run(dtype: str, data: np.ndarray, queries: np.ndarray, truth: np.ndarray, args, root: Path) -> dict:
    path = root / dtype
    ix = USearchVectorIndex(path, data.shape[1], dtype=dtype)
    t0 = time.perf_counter()
    for start in range(0, len(data), args.batch):
        part = data[start : start + args.batch]
        ix.upsert([IndexedChunk(start + i + 1, "bench", "d", "", "", v) for i, v in enumerate(part)])
    upsert_s = time.perf_counter() - t0

    latencies, found = [], []
    for q in queries:
        t = time.perf_counter()
        hits = ix.search(q, ["bench"], args.k)
        latencies.append(time.perf_counter() - t)
        found.append([h.chunk_id - 1 for h in hits])
    recall_1 = np.mean([bool(f) and f[0] == t[0] for f, t in zip(found, truth, strict=True)])
    recall_k = np.mean([len(set(f) & set(t)) / args.k for f, t in zip(found, truth, strict=True)])

    t = time.perf_counter()
    ix.commit(1)
    commit_s = time.perf_counter() - t
    t = time.perf_counter()
    ix.commit(1)
    clean_commit_s = time.perf_counter() - t
    size = sum(p.stat().st_size for p in path.glob("*.usearch"))
    ix.close()
    t = time.perf_counter()
    reopened = USearchVectorIndex(path, data.shape[1], dtype=dtype)
    load_s = time.perf_counter() - t
    assert reopened.count() == len(data) and reopened.applied_seq() == 1
    reopened.close()
    lat = np.array(latencies) * 1e3
    return {
        "upsert/s": len(data) / upsert_s,
        "p50 ms": float(np.percentile(lat, 50)),
        "p95 ms": float(np.percentile(lat, 95)),
        "recall@1": float(recall_1),
        # On random data every neighbour after the first is nearly equidistant: a worst case.
        f"recall@{args.k}": float(recall_k),
        "commit s": commit_s,
        "clean commit ms": clean_commit_s * 1e3,
        "load s": load_s,
        "file MB": size / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=50_000, help="vectors to index")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=2000, help="chunks per upsert call, like an outbox batch")
    ap.add_argument("--dtypes", default="i8,f16")
    ap.add_argument("--dir", type=Path, default=None, help="where to write index files (default: a temp dir)")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    data = unit_rows(rng, args.n, args.dim)
    # Queries near stored points, as real queries sit near their answers; random ones would
    # make every neighbour equidistant and recall meaningless.
    picks = rng.choice(args.n, size=args.queries, replace=False)
    queries = data[picks] + 0.5 * unit_rows(rng, args.queries, args.dim)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.argsort(-(queries @ data.T), axis=1)[:, : args.k]

    root = Path(tempfile.mkdtemp(prefix="bench-vectors-", dir=args.dir))
    print(
        f"N={args.n} dim={args.dim} queries={args.queries} k={args.k} batch={args.batch} cpus={os.cpu_count()}"
    )
    results = {}
    try:
        for dtype in args.dtypes.split(","):
            results[dtype] = run(dtype, data, queries, truth, args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    metrics = list(next(iter(results.values())))
    print(
        f"{'metric':<16}" + "".join(f"{d:>12}" for d in results) + ("    i8/f16" if len(results) == 2 else "")
    )
    for m in metrics:
        row = f"{m:<16}" + "".join(f"{r[m]:>12.4g}" for r in results.values())
        if {"i8", "f16"} <= results.keys() and results["f16"][m]:
            row += f"{results['i8'][m] / results['f16'][m]:>10.2f}"
        print(row)


if __name__ == "__main__":
    main()
