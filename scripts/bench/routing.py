"""Routing accuracy of `model: auto` on a labelled prompt set, and the router's overhead per request.

The prompts (data/routing/prompts.jsonl: text, route, split) cover three routes: code, documents
(questions about the organisation's own documents) and general. The router's examples live in
appliance/models/routes.toml and are not among the prompts; its thresholds are calibrated on those
examples alone. The `dev` split was looked at while writing the examples; the `test` split never
was: the accuracy that counts is the test split's. The overhead is the whole decision as a request
pays it (rules, the query embedding with the packaged MiniLM on CPU, the match), after a warm-up.

    python scripts/bench/routing.py [--prompts data/routing/prompts.jsonl] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from appliance.models.catalog import MINILM_NAME, default_embedding_dir  # noqa: E402
from appliance.models.embedder import SentenceTransformerEmbedder  # noqa: E402
from appliance.models.manifest import list_models  # noqa: E402
from appliance.models.pool import ModelPool  # noqa: E402
from appliance.models.router import AutoRouter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=Path, default=ROOT / "data" / "routing" / "prompts.jsonl")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes over the prompts")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rows = [json.loads(line) for line in args.prompts.read_text().splitlines() if line.strip()]
    embedder = SentenceTransformerEmbedder(default_embedding_dir(), device="cpu", name=MINILM_NAME)
    embedder.warm()

    def no_load(*_):
        raise AssertionError("the router never loads a model")

    pool = ModelPool(1024, no_load, no_load, lambda *_: 0.0)
    router = AutoRouter(embedder, lambda: list_models(None), pool)
    t = time.perf_counter()
    semantic = router.semantic
    semantic._ready()  # embeds the examples and calibrates the thresholds
    calibrate_s = time.perf_counter() - t

    results: dict[str, dict] = {}
    for split in ("dev", "test"):
        items = [r for r in rows if r["split"] == split]
        confusion: Counter = Counter()
        for r in items:
            got = router.decide("auto", r["text"], False, default="default").route
            confusion[(r["route"], got)] += 1
        routes = sorted({r["route"] for r in rows})
        right = sum(confusion[(x, x)] for x in routes)
        results[split] = {
            "n": len(items),
            "accuracy": round(right / len(items), 4),
            "recall": {
                x: round(confusion[(x, x)] / max(1, sum(v for (a, _), v in confusion.items() if a == x)), 4)
                for x in routes
            },
            "confusion": {f"{a}->{b}": v for (a, b), v in sorted(confusion.items()) if a != b},
        }

    # Wall time, and the process's CPU time: on a shared, oversubscribed machine the wall time
    # counts the waits for a core, which the CPU time leaves out.
    timings, cpu = [], []
    for _ in range(args.repeat):
        for r in rows:
            start, start_cpu = time.perf_counter(), time.process_time()
            router.decide("auto", r["text"], False, default="default")
            timings.append((time.perf_counter() - start) * 1000)
            cpu.append((time.process_time() - start_cpu) * 1000)
    vectors = [embedder.embed_query(r["text"]) for r in rows[:50]]
    match = []
    for v in vectors * args.repeat:
        start = time.perf_counter()
        semantic.classify("", v)
        match.append((time.perf_counter() - start) * 1000)

    report = {
        "prompts": len(rows),
        "routes": [r.name for r in semantic.routes],
        "fallback": semantic.fallback,
        "thresholds": semantic.thresholds,
        "calibration_s": round(calibrate_s, 2),
        "dev": results["dev"],
        "test_held_out": results["test"],
        "overhead_ms": {
            "p50": round(float(np.percentile(timings, 50)), 2),
            "p95": round(float(np.percentile(timings, 95)), 2),
            "max": round(float(np.max(timings)), 2),
            "n": len(timings),
        },
        "overhead_cpu_ms": {
            "p50": round(float(np.percentile(cpu, 50)), 2),
            "p95": round(float(np.percentile(cpu, 95)), 2),
        },
        "match_only_ms_p95": round(float(np.percentile(match, 95)), 3),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"prompts {report['prompts']} over routes {', '.join(report['routes'])} (fallback {report['fallback']})"
    )
    print(f"thresholds {report['thresholds']} (calibrated in {report['calibration_s']} s)")
    for split in ("dev", "test_held_out"):
        r = report[split]
        print(
            f"{split:14s} n={r['n']:3d} accuracy {r['accuracy']:.3f}  recall {r['recall']}  errors {r['confusion']}"
        )
    o = report["overhead_ms"]
    print(
        f"router overhead per request: p50 {o['p50']} ms, p95 {o['p95']} ms, max {o['max']} ms (n={o['n']})"
    )
    c = report["overhead_cpu_ms"]
    print(f"router CPU time per request (all threads): p50 {c['p50']} ms, p95 {c['p95']} ms")
    print(f"match alone (embedding given): p95 {report['match_only_ms_p95']} ms")


if __name__ == "__main__":
    main()
