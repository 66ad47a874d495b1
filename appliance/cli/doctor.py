"""`appliance doctor`: checks the installation; `--verify-chunks [--repair]` has the server re-chunk and compare."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict

from appliance.cli.common import Parents, connect, emit, settings
from appliance.errors import ApplianceError


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser(
        "doctor",
        parents=[parents.client],
        help="check the installation: versions, models, disk, permissions, indexes, GPU, network",
    )
    p.add_argument(
        "--verify-chunks",
        action="store_true",
        help="also re-chunk every stored document from its source and report those whose stored "
        "chunks do not match (the running server does the work)",
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="with --verify-chunks: re-ingest damaged documents from their sources",
    )
    p.add_argument("--collection", help="with --verify-chunks: only this collection")
    p.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from appliance.ops.doctor import FAIL, render, run_checks

    if args.repair and not args.verify_chunks:
        raise ApplianceError("--repair goes with --verify-chunks")
    if args.verify_chunks:
        return _verify_chunks(args)
    checks = run_checks(settings(args), args.url, args.key)
    emit(args, [asdict(c) for c in checks], lambda _: print(render(checks)))
    return 1 if any(c.status == FAIL for c in checks) else 0


def _verify_chunks(args: argparse.Namespace) -> int:
    """Exit 0: nothing damaged; 1: damaged or mismatched documents (repaired or not)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    client = connect(args)
    job = client.verify_chunks(args.collection, args.repair)
    with Progress(
        TextColumn("[bold]verify"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=args.json or not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task("verify", total=None)
        while job["state"] in ("queued", "running"):
            time.sleep(0.5)
            job = client.job(job["id"])
            bar.update(task, total=job["progress"]["total"] or None, completed=job["progress"]["processed"])
    if job["state"] != "succeeded":
        raise ApplianceError(f"chunk verification {job['id']} {job['state']}: {job['error']}")
    report = job["summary"]
    counts = report["counts"]
    lines = [
        f"checked {report['checked']} documents: {counts['ok']} ok, {counts['damaged']} damaged, "
        f"{counts['mismatched']} mismatched, {counts['at_risk']} at risk, {counts['unverifiable']} unverifiable"
    ]
    for doc in report["documents"]:
        lines.append(f"  {doc['verdict']:<12} {doc['collection']}/{doc['source_id']}: {doc['reason']}")
    if report["listed"] < sum(v for k, v in counts.items() if k != "ok"):
        lines.append(f"  (first {report['listed']} listed; --json has the same list)")
    if report.get("repair_jobs"):
        lines.append(
            f"repairing: re-ingest jobs {', '.join(report['repair_jobs'])} (follow with `appliance jobs ID`)"
        )
    elif counts["damaged"] or counts["mismatched"]:
        lines.append("run again with --repair to re-ingest the damaged documents from their sources")
    if counts["at_risk"]:
        lines.append(
            "at-risk documents have no source copy on the server: submit them again to replace their chunks"
        )
    emit(args, {"job_id": job["id"], **report}, lambda _: print("\n".join(lines)))
    return 1 if counts["damaged"] or counts["mismatched"] else 0
