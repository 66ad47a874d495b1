"""Benchmark a drift check: answer traces in DuckDB, two windows sampled to `--samples` each, MMD
with its permutation test on the query embeddings and the scalar tests; prints seconds per stage."""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from appliance.config import DriftSettings
from appliance.core.drift import Drift
from appliance.db.connection import Database
from appliance.db.migrations import migrate
from appliance.db.traces import TraceStore
from appliance.observability.metrics import Metrics
from appliance.records import Trace, Usage, Window


def traces(rng: np.random.Generator, n: int, start: datetime, shift: float, dim: int):
    centre = np.zeros(dim, np.float32)
    centre[0] = shift
    for i in range(n):
        v = rng.standard_normal(dim).astype(np.float32) + centre
        yield (
            Trace(
                id=f"ans_{start.date()}_{i}",
                created_at=(start + timedelta(seconds=i)).isoformat(),
                key_id="k",
                conversation_id=None,
                collections=["bench"],
                question="q",
                query="q",
                model="m",
                prompt_version="v",
                answer="a" * int(rng.integers(50, 500)),
                refused=bool(rng.random() < 0.1),
                citations=[],
                retrieved=[],
                sources=[],
                usage=Usage(prompt_tokens=100, completion_tokens=50, total_tokens=150),
                timings={},
                top_similarity=float(rng.uniform(0.2, 0.8)),
                answer_chars=int(rng.integers(50, 500)),
                latency_ms=float(rng.lognormal(7, 0.4)),
            ),
            v / np.linalg.norm(v),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--traces", type=int, default=5000, help="answers per window in the database")
    parser.add_argument("--samples", type=int, default=500, help="drift.max_samples")
    parser.add_argument("--permutations", type=int, default=200)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument(
        "--shift", type=float, default=0.5, help="of the current window's embeddings, on one axis"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(Path(tmp) / "bench.duckdb")
        migrate(db)
        store = TraceStore(db)
        t = time.perf_counter()
        store.insert(list(traces(rng, args.traces, now - timedelta(days=3), 0.0, args.dim)))
        store.insert(list(traces(rng, args.traces, now - timedelta(hours=12), args.shift, args.dim)))
        print(f"stored {2 * args.traces} traces in {time.perf_counter() - t:.1f} s")
        settings = DriftSettings(max_samples=args.samples, permutations=args.permutations)
        drift = Drift(settings, store, Metrics())
        reference = Window(
            start=(now - timedelta(days=4)).isoformat(), end=(now - timedelta(days=1)).isoformat()
        )
        current = Window(start=(now - timedelta(days=1)).isoformat(), end=now.isoformat())
        t = time.perf_counter()
        report = drift.run("bench", reference, current, "manual")
        seconds = time.perf_counter() - t
        for s in report.signals:
            print(
                f"  {s.signal:<17} {s.test:<6} n={s.reference_n}/{s.current_n} drifted={s.drifted}  {s.note}"
            )
        print(f"drift check of {args.samples}+{args.samples} sampled answers: {seconds:.2f} s")
        db.close()


if __name__ == "__main__":
    main()
