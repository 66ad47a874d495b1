"""`appliance status`: one screen for a quick look over SSH: health, models, collections, ingestion
lag, traffic and the last errors; exits 2 when the server is not ready or a component is down."""

from __future__ import annotations

import argparse
from typing import Any

from appliance.cli.common import Parents, connect, emit

LAST = 5  # errors and failed jobs shown


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser(
        "status",
        parents=[parents.client],
        help="one screen: health, models, collections, ingestion lag, last errors",
        description="A quick look at the server. With an admin key: every component, the models, "
        "traffic, disk and memory, and the last errors; with a user key: readiness and its "
        "collections. Exit status 0 when ready and nothing is down, 2 otherwise.",
    )
    p.set_defaults(func=_status)


def _status(args: argparse.Namespace) -> int:
    from appliance.client import ApiError

    client = connect(args)
    ready = client.ready()
    report: dict[str, Any] = {"url": client.url, "ready": ready, "admin": True}
    try:
        report["stats"] = client.stats()
        report["models"] = client.models()
        report["errors"] = client.logs(level="error", limit=LAST)["lines"]
    except ApiError as exc:
        if exc.status != 403:
            raise
        report.update(admin=False, stats=None, models=None, errors=None)
        report["collections"] = client.collections()
    report["failed_jobs"] = client.jobs(state="failed", limit=LAST)
    emit(args, report, _print)
    return 0 if healthy(report) else 2


def healthy(report: dict) -> bool:
    components = (report["stats"] or {}).get("components", [])
    return bool(report["ready"].get("ready")) and all(c["status"] != "down" for c in components)


def _print(report: dict) -> None:
    ready, stats = report["ready"], report["stats"]
    state = "ready" if ready.get("ready") else ready.get("status", "starting")
    head = (
        f"appliance {stats['version']}  up {_duration(stats['uptime_seconds'])}  " if stats else "appliance  "
    )
    print(f"{head}{state}  {report['url']}")
    if stats:
        print("\ncomponents")
        for c in stats["components"]:
            print(f"  {c['status']:<8} {c['name']:<14} {c.get('detail', '')}")
    _models(report, ready)
    collections = stats["collections"] if stats else report["collections"]
    print(f"\ncollections ({len(collections)})")
    for c in collections:
        print(f"  {c['name']:<20} {c['documents']:>7} documents {c['chunks']:>9} chunks")
    if stats:
        lags = {s: v for s, v in stats["ingestion_lag_seconds"].items() if v >= 1}
        print(
            "\ningestion lag  " + (", ".join(f"{s} {_duration(v)}" for s, v in lags.items()) or "caught up")
        )
        t, q, disk, mem = stats["traffic"], stats["queue"], stats["disk"], stats["memory"]
        print(
            f"traffic        {t['queries_per_min']} queries/min, {t['tokens_per_second']} tokens/s; "
            f"generation queue {q['llm_waiting']} waiting, {q['llm_in_use']}/{q['llm_slots']} slots busy; "
            f"{q['jobs_active']} jobs running"
        )
        rss = f", memory {_bytes(mem['rss_bytes'])}" if mem.get("rss_bytes") else ""
        print(f"disk           {_bytes(disk['free_bytes'])} free of {_bytes(disk['total_bytes'])}{rss}")
        print(f"\nlast errors ({len(report['errors'])})" if report["errors"] else "\nlast errors    none")
        for line in report["errors"]:
            print(f"  {line['ts'][:19]}  {line['logger']}  {line['msg'][:120]}")
    else:
        print("\n(components, models, lag and errors need an admin key)")
    jobs = report["failed_jobs"]
    print(f"\nfailed jobs ({len(jobs)})" if jobs else "failed jobs    none")
    for j in jobs:
        print(f"  {j['id']}  {j['kind']:<7} {j.get('collection') or '':<16} {(j.get('error') or '')[:90]}")


def _models(report: dict, ready: dict) -> None:
    models = report["models"]
    chat = models["chat"] if models else ready.get("chat_model", {})
    print("\nmodels")
    detail = chat.get("model") or chat.get("name") or chat.get("error") or ""
    print(f"  chat       {chat.get('state', '?'):<9} {detail}")
    if models:
        emb = models["embedding"]
        print(f"  embedding  {emb['state']:<9} {emb['name']} ({emb['dimensions']}-d)")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _bytes(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{n} B"
