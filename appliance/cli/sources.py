"""`appliance sources` and `appliance quarantine`: registering, syncing and inspecting sources."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.cli.common import Parents, connect, emit

if TYPE_CHECKING:
    from appliance.client import ApplianceClient


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    client = parents.client
    p = sub.add_parser("sources", parents=[client], help="list, add, sync or remove sources")
    p.set_defaults(func=_list)
    actions = p.add_subparsers(dest="action")
    a = actions.add_parser("list", parents=[client], help="every source with state, lag and counts")
    a.set_defaults(func=_list)
    a = actions.add_parser("add", parents=[client], help="register a local git repository")
    a.add_argument("kind", choices=["git"])
    a.add_argument("location", help="path of a local repository (bare or not)")
    a.add_argument("--collection", "-c", required=True)
    a.add_argument("--name", help="default: the repository's folder name")
    a.add_argument("--branch", default="main")
    a.add_argument("--schedule", default="manual", help="manual, hourly, daily, weekly or 'every N minutes'")
    a.add_argument("--include", action="append", help="glob of paths to index (repeatable), e.g. 'docs/**'")
    a.add_argument("--exclude", action="append", help="glob of paths to skip (repeatable)")
    a.add_argument("--history", action="store_true", help="also index merge commits")
    a.add_argument(
        "--fetch", action="store_true", help="git fetch before each sync (remote inside the air gap)"
    )
    a.add_argument("--github-repo", help="owner/name whose webhook pushes trigger this source")
    a.add_argument("--sync", action="store_true", help="sync at once")
    a.add_argument("--wait", action="store_true", help="with --sync: wait and print the outcome")
    a.set_defaults(func=_add)
    a = actions.add_parser("sync", parents=[client], help="sync a source now")
    a.add_argument("name")
    a.add_argument("--wait", action="store_true", help="wait for the sync and its ingestion")
    a.set_defaults(func=_sync_named)
    a = actions.add_parser("remove", parents=[client], help="unregister a source")
    a.add_argument("name")
    a.add_argument("--delete-documents", action="store_true")
    a.set_defaults(func=_remove)

    p = sub.add_parser("quarantine", parents=[client], help="files a source would not or could not ingest")
    p.add_argument("--collection", "-c")
    p.add_argument("--source")
    p.add_argument("--limit", type=int, default=200)
    p.set_defaults(func=_quarantine)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def _list(args: argparse.Namespace) -> int:
    def human(rows: list[dict]) -> None:
        if not rows:
            print("no sources")
        print(
            f"{'NAME':<18} {'KIND':<10} {'COLLECTION':<14} {'STATE':<12} {'LAST SYNC':<20} {'LAG':>7} "
            f"{'DOCS':>6} {'QUAR':>5}  LAST ERROR"
        )
        for s in rows:
            last = (s["last_sync_at"] or "never")[:19].replace("T", " ")
            print(
                f"{s['name']:<18} {s['kind']:<10} {s['collection']:<14} {s['state']:<12} {last:<20} "
                f"{_age(s['lag_seconds']):>7} {s['documents']:>6} {s['quarantined']:>5}  {s['last_error'] or ''}"
            )

    emit(args, connect(args).sources(), human)
    return 0


def _location(given: str) -> str:
    """The server refuses relative paths (they would mean its own working directory): a relative
    path typed here names a folder on this machine, so send it absolute."""
    path = Path(given).expanduser()
    if given and not path.is_absolute() and path.exists():
        return str(path.resolve())
    return given


def _add(args: argparse.Namespace) -> int:
    client = connect(args)
    body = {
        "kind": args.kind,
        "location": _location(args.location),
        "collection": args.collection,
        "name": args.name or args.location.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git").lower(),
        "branch": args.branch,
        "schedule": args.schedule,
        "include": args.include or [],
        "exclude": args.exclude or [],
        "history": args.history,
        "fetch": args.fetch,
        "github_repo": args.github_repo or "",
    }
    source = client.add_source(body)
    emit(
        args,
        source,
        lambda s: print(
            f"added {s['name']} ({s['kind']}, {s['location']}) -> {s['collection']}; "
            f"sync with: appliance sources sync {s['name']}"
        ),
    )
    return _sync(args, client, source["name"]) if args.sync else 0


def _remove(args: argparse.Namespace) -> int:
    result = connect(args).remove_source(args.name, args.delete_documents)
    emit(
        args,
        result,
        lambda r: print(
            f"removed {r['name']}"
            + (
                " (its documents are being deleted)"
                if r.get("deleted_documents_job")
                else " (its documents stay; --delete-documents removes them)"
            )
        ),
    )
    return 0


def _sync_named(args: argparse.Namespace) -> int:
    return _sync(args, connect(args), args.name)


def _finished(client: ApplianceClient, job_id: str) -> dict:
    job = client.job(job_id)
    while job["state"] in ("queued", "running"):
        time.sleep(0.5)
        job = client.job(job_id)
    return job


def _sync(args: argparse.Namespace, client: ApplianceClient, name: str) -> int:
    result = client.sync_source(name)
    if not args.wait or not result.get("job_id"):
        emit(
            args,
            result,
            lambda r: print(
                f"sync of {name} queued: {r['job_id']}" if r["job_id"] else f"rescan of {name} requested"
            ),
        )
        return 0
    job = _finished(client, result["job_id"])
    # The sync's summary names the ingest jobs it queued; the outcome is theirs too.
    ingest_jobs = [_finished(client, j) for j in (job.get("summary") or {}).get("jobs") or []]

    def human(s: dict) -> None:
        sync = s["sync"]
        if sync["state"] != "succeeded":
            print(f"sync of {name} {sync['state']}: {sync['error']}")
            return
        info = sync.get("summary") or {}
        print(
            f"{name}: commit {str(info.get('commit'))[:12]}, {info.get('upserts', 0)} changed, "
            f"{info.get('deletions', 0)} deleted" + (" (full listing)" if info.get("full") else "")
        )
        for j in s["ingest_jobs"]:
            p = j["progress"]
            print(
                f"  {j['id']} {j['state']}: {p['indexed']} indexed, {p['unchanged']} unchanged, {p['failed']} failed"
            )

    emit(args, {"sync": job, "ingest_jobs": ingest_jobs}, human)
    return 0 if job["state"] == "succeeded" else 1


def _quarantine(args: argparse.Namespace) -> int:
    def human(rows: list[dict]) -> None:
        if not rows:
            print("nothing quarantined")
        for q in rows:
            print(f"{q['source']:<12} {q['kind']:<11} {q['path']}\n{'':<12} {q['reason']}")

    emit(args, connect(args).quarantine(args.collection, args.source, args.limit), human)
    return 0
