"""`appliance ingest`: uploads files and folders in batches, optionally waiting with a progress bar."""

from __future__ import annotations

import argparse
import base64
import sys
import time
from pathlib import Path

from appliance.cli.common import Parents, connect, emit
from appliance.errors import ApplianceError

BATCH_BYTES = 8 * 1024 * 1024
BATCH_DOCS = 200


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser("ingest", parents=[parents.client], help="ingest files or folders into a collection")
    p.add_argument("paths", nargs="+")
    p.add_argument("--collection", "-c", required=True)
    p.add_argument("--wait", action="store_true", help="show progress and wait for the summary")
    p.set_defaults(func=_ingest)


def _files(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            found.append(path.resolve())
        elif path.is_dir():
            found.extend(
                p.resolve()
                for p in sorted(path.rglob("*"))
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            raise ApplianceError(f"{raw}: no such file or directory")
    return found


def _ingest(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    client = connect(args)
    files = _files(args.paths)
    if not files:
        print("nothing to ingest", file=sys.stderr)
        return 1
    if args.collection not in {c["name"] for c in client.collections()}:
        client.create_collection(args.collection)
    job_ids: list[str] = []
    batch: list[dict] = []
    size = 0

    def flush() -> None:
        nonlocal batch, size
        if batch:
            job_ids.append(client.submit_batch(args.collection, batch)["job_id"])
        batch, size = [], 0

    for path in files:
        data = path.read_bytes()
        if batch and (size + len(data) > BATCH_BYTES or len(batch) >= BATCH_DOCS):
            flush()
        batch.append(
            {
                "content_base64": base64.b64encode(data).decode(),
                "filename": path.name,
                "source_id": str(path),
                "uri": path.as_uri(),
            }
        )
        size += len(data)
    flush()
    if not args.wait:
        emit(
            args,
            {"jobs": job_ids, "documents": len(files)},
            lambda d: print(f"submitted {len(files)} files as jobs {', '.join(job_ids)}"),
        )
        return 0

    totals = {"indexed": 0, "unchanged": 0, "failed": 0}
    failures: list[tuple[str, str]] = []
    with Progress(
        TextColumn("[bold]ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        disable=args.json or not sys.stderr.isatty(),
        console=None,
    ) as bar:
        task = bar.add_task("ingest", total=len(files), status="")
        pending = list(job_ids)
        finished: dict[str, dict] = {}
        while pending:
            for job_id in list(pending):
                job = client.job(job_id)
                finished[job_id] = job
                if job["state"] in ("succeeded", "failed"):
                    pending.remove(job_id)
            done_now = sum(j["progress"]["processed"] for j in finished.values())
            failed = sum(j["progress"]["failed"] for j in finished.values())
            bar.update(task, completed=done_now, status=f"{failed} failed" if failed else "")
            if pending:
                time.sleep(0.3)
    for job_id, job in finished.items():
        for key in totals:
            totals[key] += job["progress"][key]
        if job["progress"]["failed"]:
            for item in client.job(job_id, items=True).get("items", []):
                if item["state"] == "failed":
                    failures.append((item["source_id"], item["error"]))

    def human(_: dict) -> None:
        print(
            f"{len(files)} files: {totals['indexed']} indexed, {totals['unchanged']} unchanged, {totals['failed']} failed"
        )
        for source, error in failures:
            print(f"  failed: {source}: {error}")

    emit(
        args,
        {
            "jobs": job_ids,
            "documents": len(files),
            **totals,
            "failures": [{"source_id": s, "error": e} for s, e in failures],
        },
        human,
    )
    return 0 if not totals["failed"] else 2
