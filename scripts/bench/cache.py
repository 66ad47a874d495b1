"""What the caches save on a repeated question log: hit rates, latency and tokens, caches on vs off.

Starts a server with the chosen chat model, ingests a folder (default: the sample corpus), then
replays the same log of cited-answer requests twice, once with `"cache": false` and once with the
caches on. The log draws from a fixed set of questions with Zipf-like popularity (the few common
questions asked often, the rest rarely), seeded, so both passes ask the same thing in the same
order. Prints per pass: mean and p50/p95 latency, completion tokens generated, and with the caches
on the answer hit rate and the ratios against the pass without them.

    python scripts/bench/cache.py [--model NAME] [--requests 60] [--zipf 1.1] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import bench_server, chat_model_ready, ingest_folder, percentile  # noqa: E402
from rag import QUESTIONS  # noqa: E402


def question_log(n: int, exponent: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** exponent for rank in range(len(QUESTIONS))]
    return rng.choices(QUESTIONS, weights=weights, k=n)


def replay(http, log: list[str], cache: bool) -> dict:
    latencies, tokens, cached = [], 0, 0
    for question in log:
        t = time.perf_counter()
        body = http.post(
            "/api/v1/knowledge/query", json={"query": question, "collections": ["bench"], "cache": cache}
        ).json()
        latencies.append((time.perf_counter() - t) * 1000)
        tokens += body["usage"]["completion_tokens"]
        cached += bool(body.get("cached"))
    return {
        "requests": len(log),
        "mean_ms": round(sum(latencies) / len(latencies), 1),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "completion_tokens": tokens,
        "answer_hits": cached,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="SmolLM2-135M-Instruct", help="chat model name")
    ap.add_argument("--models-dir", default="./var/models")
    ap.add_argument("--folder", type=Path, default=Path(__file__).resolve().parents[2] / "data" / "sample")
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--zipf", type=float, default=1.1, help="popularity exponent of the questions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    env = {
        "APPLIANCE_LLM__MODELS_DIR": str(Path(args.models_dir).absolute()),
        "APPLIANCE_LLM__MODEL": args.model,
    }

    log = question_log(args.requests, args.zipf, args.seed)
    with bench_server(env=env) as http:
        chat_model_ready(http)
        ingest_folder(http, args.folder, "bench")
        off = replay(http, log, cache=False)
        on = replay(http, log, cache=True)
    distinct = len(set(log))
    report = {
        "model": args.model,
        "requests": args.requests,
        "distinct_questions": distinct,
        "cache_off": off,
        "cache_on": on,
        "answer_hit_rate": round(on["answer_hits"] / len(log), 3),
        "best_possible_hit_rate": round(1 - distinct / len(log), 3),
        "mean_latency_ratio": round(on["mean_ms"] / off["mean_ms"], 3),
        "tokens_ratio": round(on["completion_tokens"] / max(1, off["completion_tokens"]), 3),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{args.requests} answers over {distinct} distinct questions (Zipf {args.zipf}, seed {args.seed}), {args.model}"
    )
    print(f"{'pass':<10} {'mean ms':>9} {'p50 ms':>9} {'p95 ms':>9} {'tokens':>8} {'hits':>5}")
    for name, row in (("cache off", off), ("cache on", on)):
        print(
            f"{name:<10} {row['mean_ms']:>9} {row['p50_ms']:>9} {row['p95_ms']:>9} "
            f"{row['completion_tokens']:>8} {row['answer_hits']:>5}"
        )
    print(
        f"answer hit rate {report['answer_hit_rate']} (at most {report['best_possible_hit_rate']}); "
        f"mean latency x{report['mean_latency_ratio']}, tokens generated x{report['tokens_ratio']}"
    )


if __name__ == "__main__":
    main()
