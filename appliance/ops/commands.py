"""The `appliance doctor`, `backup` and `restore` commands (added to the CLI's parser by cli.py)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import httpx

from appliance.errors import ApplianceError


def add_commands(sub, client_parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("doctor", parents=[client_parent],
                       help="check the installation: versions, models, disk, permissions, indexes, GPU, network")
    p.add_argument("--verify-chunks", action="store_true",
                   help="also re-chunk every stored document from its source and report those whose stored "
                        "chunks do not match (the running server does the work)")
    p.add_argument("--repair", action="store_true",
                   help="with --verify-chunks: re-ingest damaged documents from their sources")
    p.add_argument("--collection", help="with --verify-chunks: only this collection")
    p.set_defaults(func=doctor)

    p = sub.add_parser("backup", parents=[client_parent],
                       help="snapshot catalogue, indexes and config while the server runs (or --offline when stopped)")
    p.add_argument("dest", help="a new folder for the snapshot")
    p.add_argument("--offline", action="store_true",
                   help="the server is stopped: copy the data directory's files directly")
    p.set_defaults(func=backup)

    p = sub.add_parser("restore", parents=[client_parent],
                       help="put a snapshot back into the data directory (the server must be stopped)")
    p.add_argument("src", help="a folder written by `appliance backup`")
    p.set_defaults(func=restore)


def _settings(args: argparse.Namespace):
    from appliance.config import load_settings

    return load_settings(args.config)


def _config_path(args: argparse.Namespace) -> Path | None:
    import os

    raw = args.config or os.environ.get("APPLIANCE_CONFIG")
    return Path(raw).expanduser() if raw else None


def doctor(args: argparse.Namespace) -> int:
    from appliance.ops.doctor import FAIL, render, run_checks

    if args.repair and not args.verify_chunks:
        raise ApplianceError("--repair goes with --verify-chunks")
    if args.verify_chunks:
        return _verify_chunks(args)
    checks = run_checks(_settings(args), args.url, args.key)
    print(render(checks, args.json))
    return 1 if any(c.status == FAIL for c in checks) else 0


def _verify_chunks(args: argparse.Namespace) -> int:
    """Exit 0: nothing damaged; 1: damaged or mismatched documents (repaired or not)."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from appliance.client import ApplianceClient, resolve_endpoint

    settings = None if (args.url and args.key) else _settings(args)
    client = ApplianceClient(*resolve_endpoint(settings, args.url, args.key))
    job = client.verify_chunks(args.collection, args.repair)
    with Progress(TextColumn("[bold]verify"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=args.json or not sys.stderr.isatty()) as bar:
        task = bar.add_task("verify", total=None)
        while job["state"] in ("queued", "running"):
            time.sleep(0.5)
            job = client.job(job["id"])
            bar.update(task, total=job["progress"]["total"] or None, completed=job["progress"]["processed"])
    if job["state"] != "succeeded":
        raise ApplianceError(f"chunk verification {job['id']} {job['state']}: {job['error']}")
    report = job["summary"]
    counts = report["counts"]
    lines = [f"checked {report['checked']} documents: {counts['ok']} ok, {counts['damaged']} damaged, "
             f"{counts['mismatched']} mismatched, {counts['at_risk']} at risk, {counts['unverifiable']} unverifiable"]
    for doc in report["documents"]:
        lines.append(f"  {doc['verdict']:<12} {doc['collection']}/{doc['source_id']}: {doc['reason']}")
    if report["listed"] < sum(v for k, v in counts.items() if k != "ok"):
        lines.append(f"  (first {report['listed']} listed; --json has the same list)")
    if report.get("repair_jobs"):
        lines.append(f"repairing: re-ingest jobs {', '.join(report['repair_jobs'])} (follow with `appliance jobs ID`)")
    elif counts["damaged"] or counts["mismatched"]:
        lines.append("run again with --repair to re-ingest the damaged documents from their sources")
    if counts["at_risk"]:
        lines.append("at-risk documents have no source copy on the server: submit them again to replace their chunks")
    _print(args, {"job_id": job["id"], **report}, "\n".join(lines))
    return 1 if counts["damaged"] or counts["mismatched"] else 0


def backup(args: argparse.Namespace) -> int:
    from appliance.ops.backup import snapshot_stopped

    dest = Path(args.dest).expanduser().absolute()
    if dest.exists():
        raise ApplianceError(f"{dest} already exists; choose a new destination")
    if args.offline:
        result = snapshot_stopped(_settings(args), dest, _config_path(args))
    else:
        result = _backup_online(args, dest)
    _print(args, result, f"backup written to {result['path']}: {result['files']} files, "
                         f"{result['bytes'] / 1024**2:.1f} MiB, {result['counts'].get('documents', '?')} documents, "
                         f"{result['counts'].get('chunks', '?')} chunks")
    return 0


def _backup_online(args: argparse.Namespace, dest: Path) -> dict:
    from appliance.client import ApiError, resolve_endpoint

    settings = None if (args.url and args.key) else _settings(args)
    url, key = resolve_endpoint(settings, args.url, args.key)
    try:
        # The server writes the snapshot (it alone has DuckDB open) into its data directory.
        response = httpx.post(f"{url}/api/v1/admin/backup", json={}, headers={"Authorization": f"Bearer {key}"},
                              timeout=None)
    except httpx.ConnectError:
        raise ApiError(0, "Server unreachable", f"nothing answers at {url}; if the service is stopped, "
                       "use `appliance backup --offline DEST`") from None
    if response.status_code >= 400:
        body = response.json() if response.headers.get("content-type", "").endswith("json") else {}
        raise ApiError(response.status_code, body.get("title", "Error"), body.get("detail", response.text))
    result = response.json()
    written = Path(result["path"])
    if written != dest:
        try:
            shutil.move(str(written), str(dest))
        except OSError as exc:
            raise ApplianceError(f"the snapshot is at {written} but could not be moved to {dest}: {exc}") from None
        result["path"] = str(dest)
    return result


def restore(args: argparse.Namespace) -> int:
    from appliance.ops.backup import restore as restore_snapshot

    result = restore_snapshot(_settings(args), Path(args.src))
    lines = [f"restored {result['restored']} (taken {result['created']}, appliance {result['appliance_version']}) "
             f"into {result['data_dir']}"]
    if result["moved_aside"]:
        lines.append(f"  the previous files are kept in {result['moved_aside']}")
    if result["config"]:
        lines.append(f"  the backup's config is at {result['config']} (the current one was left as it is)")
    lines.append("  start the service: sudo systemctl start appliance")
    _print(args, result, "\n".join(lines))
    return 0


def _print(args: argparse.Namespace, data: dict, human: str) -> None:
    print(json.dumps(data, indent=2, default=str) if args.json else human, file=sys.stdout)
