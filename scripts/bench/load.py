"""Load and soak: concurrent clients over search, embeddings and short chat completions.

Load (default): `--clients` clients in a closed loop for `--seconds`: each sends its next request as
soon as the previous one was answered, cycling over the routes; after a 429 it waits what
Retry-After says (capped at 5 s), as a polite client does. Soak (`--soak MINUTES --rate R`): an
open loop at R requests per second spread over the routes, the server's memory sampled each minute.

Against a server it starts (a temp data dir, the sample corpus of data/sample, the small test model
unless --model says otherwise), or a running one (--url, --key, and --pid to see its memory).
Reports per route: requests, answers per second, latency p50/p95/p99 of the 2xx answers, non-2xx
by status and any 429 without Retry-After (must be 0); the server's resident memory and open file
descriptors before and after; and whether it still answers afterwards.

    python scripts/bench/load.py [--clients 64] [--seconds 60] [--max-tokens 8] [--no-admission]
        [--env KEY=VALUE ...] [--url URL --key KEY --pid PID] [--json]
    python scripts/bench/load.py --soak 30 --rate 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _server import REPO, bench_server, percentile  # noqa: E402

QUERIES = (
    "how do I rotate a security key",
    "what is the travel policy for flights",
    "incident response first steps",
    "where are the offices",
    "how many retries before giving up",
    "onboarding checklist for new staff",
)
ROUTES = ("search", "embeddings", "chat")


def _request(route: str, i: int, max_tokens: int) -> tuple[str, dict]:
    query = QUERIES[i % len(QUERIES)]
    if route == "search":
        # The cache off: the queries repeat, and this measures the server's work under load.
        return "/api/v1/knowledge/search", {"query": query, "top_k": 5, "cache": False}
    if route == "embeddings":
        return "/v1/embeddings", {"model": "embedding", "input": query}
    return "/v1/chat/completions", {
        "model": "default",
        "messages": [{"role": "user", "content": f"In one line: {query}?"}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


class Results:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)  # 2xx only
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.no_retry_after: Counter = Counter()

    def record(self, route: str, status: str, seconds: float, response: httpx.Response | None) -> None:
        self.statuses[route][status] += 1
        if status.startswith("2"):
            self.latency[route].append(seconds)
        if status == "429" and response is not None and "retry-after" not in response.headers:
            self.no_retry_after[route] += 1

    def table(self, seconds: float) -> list[dict]:
        rows = []
        for route in ROUTES:
            counts = self.statuses.get(route, Counter())
            lat = self.latency.get(route, [])
            rows.append(
                {
                    "route": route,
                    "requests": sum(counts.values()),
                    "ok_per_s": round(len(lat) / seconds, 2),
                    "p50_ms": round(percentile(lat, 50) * 1000, 1) if lat else None,
                    "p95_ms": round(percentile(lat, 95) * 1000, 1) if lat else None,
                    "p99_ms": round(percentile(lat, 99) * 1000, 1) if lat else None,
                    "non_2xx": {s: n for s, n in sorted(counts.items()) if not s.startswith("2")},
                    "429_without_retry_after": self.no_retry_after.get(route, 0),
                }
            )
        return rows


async def _one(http: httpx.AsyncClient, results: Results, route: str, i: int, max_tokens: int) -> float:
    """One request; returns how long a polite client waits before its next one."""
    path, body = _request(route, i, max_tokens)
    start = time.monotonic()
    response = None
    try:
        response = await http.post(path, json=body)
        status = str(response.status_code)
    except httpx.HTTPError as exc:
        status = f"error:{type(exc).__name__}"
    results.record(route, status, time.monotonic() - start, response)
    if status == "429" and response is not None:
        try:
            return min(5.0, float(response.headers.get("retry-after", "1")))
        except ValueError:
            return 1.0
    return 0.0


async def closed_loop(url: str, key: str, clients: int, seconds: float, max_tokens: int) -> Results:
    results = Results()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300, limits=limits) as http:
        deadline = time.monotonic() + seconds

        async def client(n: int) -> None:
            i = n
            while time.monotonic() < deadline:
                pause = await _one(http, results, ROUTES[i % len(ROUTES)], i, max_tokens)
                i += 1
                if pause:
                    await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))

        await asyncio.gather(*(client(n) for n in range(clients)))
    return results


async def open_loop(
    url: str, key: str, rate: float, minutes: float, max_tokens: int, pid: int | None
) -> tuple[Results, list[dict]]:
    results = Results()
    samples = []
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300, limits=limits) as http:
        start = time.monotonic()
        end = start + minutes * 60
        in_flight: set[asyncio.Task] = set()
        next_sample = start
        i = 0
        while (now := time.monotonic()) < end:
            if now >= next_sample:
                samples.append({"minute": round((now - start) / 60, 1), **_process(pid)})
                next_sample += 60
            if len(in_flight) < 256:  # beyond that the server is not keeping up: count it, don't pile on
                task = asyncio.create_task(_one(http, results, ROUTES[i % len(ROUTES)], i, max_tokens))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            else:
                results.record(ROUTES[i % len(ROUTES)], "client:skipped", 0.0, None)
            i += 1
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        await asyncio.gather(*in_flight)
        samples.append({"minute": round((time.monotonic() - start) / 60, 1), **_process(pid)})
    return results, samples


def _process(pid: int | None) -> dict:
    """The server's resident memory (MiB) and open file descriptors, from /proc."""
    if pid is None:
        return {"rss_mib": None, "fds": None}
    rss = None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = round(int(line.split()[1]) / 1024, 1)
    return {"rss_mib": rss, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def _ready(http: httpx.Client, timeout: float = 600) -> None:
    """The chat model loaded and the sample corpus searchable."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = http.get("/readyz")
        if ready.status_code == 200 and ready.json()["chat_model"]["state"] in ("loaded", "failed"):
            hits = http.post("/api/v1/knowledge/search", json={"query": QUERIES[0], "top_k": 1})
            if hits.status_code == 200 and hits.json()["hits"]:
                return
        time.sleep(0.5)
    raise SystemExit("the server did not become ready (model loaded, sample corpus searchable)")


def _answers_afterwards(http: httpx.Client) -> dict:
    out = {"healthz": http.get("/healthz").status_code}
    for route in ROUTES:
        path, body = _request(route, 0, 4)
        out[route] = http.post(path, json=body).status_code
    return out


def _print(report: dict) -> None:
    print(f"\n{report['mode']}: {report['config']}")
    print(f"{'route':<11} {'requests':>8} {'ok/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}  non-2xx")
    for row in report["routes"]:
        cells = [
            f"{row[k]:>8}" if row[k] is not None else f"{'-':>8}" for k in ("p50_ms", "p95_ms", "p99_ms")
        ]
        print(
            f"{row['route']:<11} {row['requests']:>8} {row['ok_per_s']:>7} {' '.join(cells)}  "
            f"{row['non_2xx'] or '-'}  (429 without Retry-After: {row['429_without_retry_after']})"
        )
    print(f"server before: {report['before']}  after: {report['after']}")
    for sample in report.get("samples", []):
        print(f"  minute {sample['minute']}: rss {sample['rss_mib']} MiB, fds {sample['fds']}")
    print(f"answers afterwards: {report['afterwards']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--max-tokens", type=int, default=8, help="of each chat completion")
    ap.add_argument(
        "--soak", type=float, metavar="MINUTES", help="a steady-rate soak instead of the load run"
    )
    ap.add_argument("--rate", type=float, default=5.0, help="requests per second in the soak")
    ap.add_argument("--no-admission", action="store_true", help="admission off: the behaviour before it")
    ap.add_argument("--model", default="SmolLM2-135M-Instruct", help="chat model of the server started here")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="server setting")
    ap.add_argument("--url", help="a running server instead of starting one")
    ap.add_argument("--key", help="its admin key")
    ap.add_argument("--pid", type=int, help="its process id (memory and file descriptors)")
    ap.add_argument("--label", default="", help="a name for this run in the report (e.g. the commit)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    env = {
        "APPLIANCE_SAMPLE_DIR": str(REPO / "data" / "sample"),
        "APPLIANCE_LLM__MODEL": args.model,
        "APPLIANCE_LLM__CONTEXT_LENGTH": "2048",
        "APPLIANCE_LOG_LEVEL": "warning",
    }
    if args.no_admission:
        env["APPLIANCE_ADMISSION__ENABLED"] = "false"
    env.update(dict(item.split("=", 1) for item in args.env))
    with bench_server(args.url, args.key, env=env) as http:
        pid = args.pid or getattr(http, "server_pid", None)
        url, key = str(http.base_url).rstrip("/"), http.headers["Authorization"].removeprefix("Bearer ")
        _ready(http)
        for route in ROUTES:  # warm-up: first calls load what they need
            path, body = _request(route, 0, args.max_tokens)
            http.post(path, json=body)
        before = _process(pid)
        started = time.monotonic()
        samples: list[dict] = []
        if args.soak:
            results, samples = asyncio.run(open_loop(url, key, args.rate, args.soak, args.max_tokens, pid))
            mode, config = "soak", f"{args.rate} requests/s for {args.soak} min"
        else:
            results = asyncio.run(closed_loop(url, key, args.clients, args.seconds, args.max_tokens))
            mode, config = "load", f"{args.clients} clients for {args.seconds:.0f} s"
        elapsed = time.monotonic() - started
        config += f", max_tokens {args.max_tokens}, admission {'off' if args.no_admission else 'on'}"
        if args.env:
            config += ", " + " ".join(args.env)
        if args.label:
            config = f"[{args.label}] {config}"
        report = {
            "mode": mode,
            "config": config,
            "elapsed_s": round(elapsed, 1),
            "cpus": os.cpu_count(),
            "routes": results.table(elapsed),
            "before": before,
            "after": _process(pid),
            "samples": samples,
            "afterwards": _answers_afterwards(http),
            "admission": _admission_metrics(http),
        }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report)
        print(f"admission (server's counters): {report['admission']}")


def _admission_metrics(http: httpx.Client) -> dict:
    out: dict = {}
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(("admission_admitted_total", "admission_rejected_total")):
            name, value = line.rsplit(" ", 1)
            out[name.removesuffix("}").replace("_total{work=", ":").replace('"', "")] = int(float(value))
    return out


if __name__ == "__main__":
    main()
