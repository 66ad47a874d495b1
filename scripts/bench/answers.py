"""Answer and retrieval quality through the evaluation API: a thin wrapper over `appliance eval run`.

Starts a throwaway server (or uses --url/--key), imports the set (its corpus is ingested), runs it
as an `eval` job and prints the scorecard and the time the run took.

    python scripts/bench/answers.py data/evalsets/clapnq-dev [--limit N] [--mode hybrid] [--retrieval-only]
    python scripts/bench/answers.py data/evalsets/msmarco-subset        # a retrieval set: retrieval metrics only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
from _server import bench_server, wait_job  # noqa: E402

from appliance.client import calls  # noqa: E402
from appliance.evaluate.sets import read_dir  # noqa: E402


def send(client: httpx.Client, call: calls.Call):
    response = client.request(call.method, call.path, **{**call.options(), "timeout": 3600})
    if response.status_code >= 400:
        raise SystemExit(f"{call.method} {call.path}: {response.status_code} {response.text}")
    return call.result(response.json())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--name", help="eval set name (default: the folder's name)")
    ap.add_argument(
        "--collection", help="where the corpus goes and the run searches (default: the set's name)"
    )
    ap.add_argument("--url")
    ap.add_argument("--key")
    ap.add_argument("--mode", choices=["keyword", "semantic", "hybrid"])
    ap.add_argument("--top-k", type=int, default=100)
    ap.add_argument("--limit", type=int, help="only the first N items")
    ap.add_argument("--retrieval-only", action="store_true")
    ap.add_argument("--json", action="store_true", help="print the run record as JSON")
    args = ap.parse_args()
    name = args.name or args.dataset.name.lower().replace(".", "-")

    with bench_server(args.url, args.key) as client:
        started = time.perf_counter()
        evalset = send(
            client, calls.import_eval_set(name, read_dir(args.dataset), collection=args.collection)
        )
        for job in evalset["ingest_jobs"]:
            wait_job(client, job)
        ingest_s = time.perf_counter() - started
        print(
            f"set {name} v{evalset['version']}: {evalset['kind']}, {evalset['item_count']} items, "
            f"corpus {evalset['corpus_documents']} documents ingested in {ingest_s:.1f} s",
            file=sys.stderr,
        )
        started = time.perf_counter()
        run = send(
            client,
            calls.start_eval_run(
                name, args.collection, args.mode, args.top_k, args.limit, args.retrieval_only
            ),
        )
        last = -1
        while run["state"] not in ("succeeded", "failed", "cancelled"):
            time.sleep(1.0)
            run = send(client, calls.eval_run(run["id"]))
            if run["progress"]["processed"] != last:
                last = run["progress"]["processed"]
                print(f"  {last}/{run['progress']['total']} items", file=sys.stderr)
        run_s = time.perf_counter() - started
        if args.json:
            print(json.dumps(run, indent=2))
            return
        cfg = run["config"]
        print(
            f"run {run['id']} {run['state']} in {run_s:.1f} s  mode {cfg['retrieval']['mode']}  top_k {run['options']['top_k']}"
            f"  model {(cfg.get('chat_model') or {}).get('name', '-')}  prompt {cfg['prompt_version']}"
        )
        if run.get("error"):
            print(f"error: {run['error']}")
        for metric, value in run["scorecard"].items():
            if value is not None:
                print(f"  {metric:<28} {value:.4f}" if abs(value) < 100 else f"  {metric:<28} {value:.1f}")


if __name__ == "__main__":
    main()
