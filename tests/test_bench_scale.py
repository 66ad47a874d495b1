"""scripts/bench/scale.py on tiny data, so the harness does not rot: synthetic chunks loaded
straight into DuckDB are rebuilt into both indexes by the server's first start, survive a
restart, and every mode answers through the API."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench"


def test_scale_bench_on_tiny_data(tmp_path):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("scale_bench", BENCH / "scale.py")
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)

    report = scale.run(chunks=120, queries=4, clients=[1, 2], data_dir=tmp_path / "data")
    assert report["chunks_served"] == 120  # loaded into DuckDB, rebuilt into the indexes, restarted
    assert report["disk_mib"]["bm25"] > 0 and report["disk_mib"]["vectors"] > 0
    assert set(report["search"]) == {f"{m} x{n}" for m in scale.MODES for n in (1, 2)}
    for label, row in report["search"].items():
        if label.endswith("x1"):  # one client at a time is never turned away
            assert row["rejected_429"] == 0 and 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"], label
        if not label.startswith("keyword"):  # vectors always find neighbours
            assert row["with_hits"] + row["rejected_429"] == 4, label
    assert report["search"]["keyword x1"]["with_hits"] > 0  # the queries use the corpus's words
    assert report["rss_after_start_mib"] > 0 and report["startup_s"] > 0
