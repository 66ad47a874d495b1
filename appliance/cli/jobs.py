"""`appliance jobs`: list jobs, or show, cancel or retry one."""

from __future__ import annotations

import argparse

from appliance.cli.common import Parents, connect, emit
from appliance.errors import ApplianceError


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser("jobs", parents=[parents.client], help="list jobs, or show, cancel or retry one")
    p.add_argument("job_id", nargs="?")
    p.add_argument("--state", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--cancel", action="store_true", help="stop JOB_ID")
    p.add_argument("--retry", action="store_true", help="queue JOB_ID's failed documents again")
    p.set_defaults(func=_jobs)


def _line(j: dict) -> str:
    p = j["progress"]
    return (
        f"{j['id']}  {j['state']:<9} {j['collection'] or '-':<16} {p['processed']}/{p['total']}"
        f" ({p['indexed']} indexed, {p['unchanged']} unchanged, {p['failed']} failed)"
        + (f"  {j['error']}" if j["error"] else "")
    )


def _jobs(args: argparse.Namespace) -> int:
    if (args.cancel or args.retry) and not args.job_id:
        raise ApplianceError("--cancel and --retry need a JOB_ID")
    client = connect(args)
    if args.cancel:
        client.cancel_job(args.job_id)
    elif args.retry:
        client.retry_job(args.job_id)
    if args.job_id:
        emit(args, client.job(args.job_id, items=True), lambda j: print(_line(j)))
        return 0

    def human(rows: list[dict]) -> None:
        if not rows:
            print("no jobs")
        for j in rows:
            print(_line(j))

    emit(args, client.jobs(args.state, args.limit), human)
    return 0
