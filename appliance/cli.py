"""The `appliance` command: `serve` runs the server; every other command is a client of its API."""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path

from appliance.errors import ApplianceError

BATCH_BYTES = 8 * 1024 * 1024
BATCH_DOCS = 200


def _serve(args: argparse.Namespace) -> int:
    from appliance.config import load_settings
    from appliance.server import serve

    overrides: dict = {}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.host or args.port:
        overrides["server"] = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
    if args.sample_dir:
        overrides["sample_dir"] = args.sample_dir
    return serve(load_settings(args.config, overrides))


def _client(args: argparse.Namespace):
    from appliance.client import ApplianceClient, resolve_endpoint
    from appliance.config import load_settings

    settings = None
    if not (args.url and args.key):
        settings = load_settings(args.config)
    url, key = resolve_endpoint(settings, args.url, args.key)
    return ApplianceClient(url, key)


def _files(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_file():
            found.append(path.resolve())
        elif path.is_dir():
            found.extend(
                p.resolve() for p in sorted(path.rglob("*"))
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            raise ApplianceError(f"{raw}: no such file or directory")
    return found


def _ingest(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    client = _client(args)
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
        batch.append({"content_base64": base64.b64encode(data).decode(), "filename": path.name,
                      "source_id": str(path), "uri": path.as_uri()})
        size += len(data)
    flush()
    if not args.wait:
        _emit(args, {"jobs": job_ids, "documents": len(files)}, lambda d: print(f"submitted {len(files)} files as jobs {', '.join(job_ids)}"))
        return 0

    totals = {"indexed": 0, "unchanged": 0, "failed": 0}
    failures: list[tuple[str, str]] = []
    with Progress(TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                  TimeElapsedColumn(), disable=args.json or not sys.stderr.isatty(), console=None) as bar:
        task = bar.add_task("ingest", total=len(files), status="")
        pending = list(job_ids)
        finished: dict[str, dict] = {}
        while pending:
            done_now = 0
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
        print(f"{len(files)} files: {totals['indexed']} indexed, {totals['unchanged']} unchanged, {totals['failed']} failed")
        for source, error in failures:
            print(f"  failed: {source}: {error}")

    _emit(args, {"jobs": job_ids, "documents": len(files), **totals,
                 "failures": [{"source_id": s, "error": e} for s, e in failures]}, human)
    return 0 if not totals["failed"] else 2


def _search(args: argparse.Namespace) -> int:
    client = _client(args)
    result = client.search(args.query, [args.collection] if args.collection else None, args.top_k, args.mode)

    def human(res: dict) -> None:
        if not res["hits"]:
            print("no results")
        for rank, hit in enumerate(res["hits"], start=1):
            loc = hit["location"]
            where = ", ".join(f"{k}={'/'.join(v) if isinstance(v, list) else v}" for k, v in loc.items())
            print(f"{rank:>2}. [{hit['score']:.3f}] {hit['title']}  ({hit['source_id']}{'; ' + where if where else ''})")
            snippet = " ".join(hit["text"].split())
            print(f"    {snippet[:200]}{'…' if len(snippet) > 200 else ''}")
        print(f"({res['mode']}, {res['timings'].get('total_ms', 0):.0f} ms)")

    _emit(args, result, human)
    return 0


def _ask(args: argparse.Namespace) -> int:
    client = _client(args)
    final: dict = {}
    for event in client.ask(args.question, [args.collection] if args.collection else None, args.top_k, args.model):
        if event["type"] == "token" and not args.json:
            print(event["text"], end="", flush=True)
        elif event["type"] == "answer":
            final = event
    if args.json:
        print(json.dumps(final, indent=2))
        return 0
    print()
    if final.get("invalid_citations"):
        print(f"(removed citations to sources that were not given: {final['invalid_citations']})")
    for c in final.get("citations", []):
        loc = c["location"]
        where = ", ".join(f"{k}={'/'.join(v) if isinstance(v, list) else v}" for k, v in loc.items())
        print(f"[{c['n']}] {c['title']} ({c['source_id']}{'; ' + where if where else ''})")
    t = final.get("timings", {})
    print(f"({final.get('model')}; retrieval {t.get('retrieval_ms', 0):.0f} ms, first token "
          f"{t.get('first_token_ms') or 0:.0f} ms, total {t.get('total_ms', 0):.0f} ms)")
    return 0


def _keys(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.action == "create":
        collections = [c for c in (args.collections or "").split(",") if c] or None
        key = client.create_key(args.name, args.role, collections, args.rpm, args.tpm)
        if args.json:
            print(json.dumps({"id": key["id"], "key": key["key"]}))
        else:
            print(f"created {key['id']} ({key['role']}); the key is shown once:\n{key['key']}")
    elif args.action == "list":
        rows = client.keys()
        _emit(args, rows, lambda rs: [print(
            f"{r['id']}  {r['name']:<20} {r['role']:<6} {','.join(r['collections'] or ['*']):<24} "
            f"rpm={r['rpm'] or '-'} tpm={r['tpm'] or '-'}{'  REVOKED' if r['revoked_at'] else ''}") for r in rs])
    else:
        _emit(args, client.revoke_key(args.key_id), lambda r: print(f"revoked {r['id']} ({r['name']})"))
    return 0


def _collections(args: argparse.Namespace) -> int:
    rows = _client(args).collections()
    _emit(args, rows, lambda rs: [print(f"{r['name']:<24} {r['documents']:>7} docs {r['chunks']:>8} chunks") for r in rs]
          or (not rs and print("no collections")))
    return 0


def _jobs(args: argparse.Namespace) -> int:
    client = _client(args)
    if (args.cancel or args.retry) and not args.job_id:
        raise ApplianceError("--cancel and --retry need a JOB_ID")
    if args.cancel:
        client.cancel_job(args.job_id)
    elif args.retry:
        client.retry_job(args.job_id)
    rows = [client.job(args.job_id, items=True)] if args.job_id else client.jobs(args.state, args.limit)

    def human(rs: list[dict]) -> None:
        if not rs:
            print("no jobs")
        for j in rs:
            p = j["progress"]
            print(f"{j['id']}  {j['state']:<9} {j['collection'] or '-':<16} {p['processed']}/{p['total']}"
                  f" ({p['indexed']} indexed, {p['unchanged']} unchanged, {p['failed']} failed)"
                  + (f"  {j['error']}" if j["error"] else ""))

    _emit(args, rows[0] if args.job_id else rows, lambda r: human([r] if args.job_id else r))
    return 0


def _console(args: argparse.Namespace) -> int:
    from appliance.client import resolve_endpoint
    from appliance.config import load_settings
    from appliance.tui.app import run_console  # Textual loads only for this command

    settings = None if (args.url and args.key) else load_settings(args.config)
    url, key = resolve_endpoint(settings, args.url, args.key)
    return run_console(url, key)


def _emit(args: argparse.Namespace, data, human) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        human(data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="A private AI platform in one box.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="settings file (TOML); default $APPLIANCE_CONFIG")
    client = argparse.ArgumentParser(add_help=False, parents=[common])
    client.add_argument("--url", help="server URL (default $APPLIANCE_URL, else from the config)")
    client.add_argument("--key", help="API key (default $APPLIANCE_KEY, else <data dir>/admin.key)")
    client.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", parents=[common], help="run the server")
    p.add_argument("--data-dir")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--sample-dir", help="ingest this folder into collection 'sample' at start-up")
    p.set_defaults(func=_serve)

    p = sub.add_parser("ingest", parents=[client], help="ingest files or folders into a collection")
    p.add_argument("paths", nargs="+")
    p.add_argument("--collection", "-c", required=True)
    p.add_argument("--wait", action="store_true", help="show progress and wait for the summary")
    p.set_defaults(func=_ingest)

    p = sub.add_parser("search", parents=[client], help="search the knowledge base")
    p.add_argument("query")
    p.add_argument("--collection", "-c")
    p.add_argument("--mode", choices=["keyword", "semantic", "hybrid"])
    p.add_argument("--top-k", "-k", type=int, default=10)
    p.set_defaults(func=_search)

    p = sub.add_parser("ask", parents=[client], help="ask a question; the answer streams with citations")
    p.add_argument("question")
    p.add_argument("--collection", "-c")
    p.add_argument("--top-k", "-k", type=int)
    p.add_argument("--model")
    p.set_defaults(func=_ask)

    p = sub.add_parser("keys", parents=[client], help="create, list or revoke API keys")
    keys = p.add_subparsers(dest="action", required=True)
    k = keys.add_parser("create", parents=[client])
    k.add_argument("--name", required=True)
    k.add_argument("--role", choices=["admin", "user"], default="user")
    k.add_argument("--collections", help="comma-separated; required for user keys")
    k.add_argument("--rpm", type=int, help="requests per minute")
    k.add_argument("--tpm", type=int, help="model tokens per minute")
    k.set_defaults(func=_keys)
    k = keys.add_parser("list", parents=[client])
    k.set_defaults(func=_keys)
    k = keys.add_parser("revoke", parents=[client])
    k.add_argument("key_id")
    k.set_defaults(func=_keys)

    p = sub.add_parser("collections", parents=[client], help="list collections")
    p.set_defaults(func=_collections)

    p = sub.add_parser("console", parents=[common], help="the admin console: a full-screen terminal UI")
    p.add_argument("--url", help="server URL (default $APPLIANCE_URL, else from the config)")
    p.add_argument("--key", help="API key (default $APPLIANCE_KEY, else <data dir>/admin.key)")
    p.set_defaults(func=_console)

    p = sub.add_parser("jobs", parents=[client], help="list jobs, or show, cancel or retry one")
    p.add_argument("job_id", nargs="?")
    p.add_argument("--state", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--cancel", action="store_true", help="stop JOB_ID")
    p.add_argument("--retry", action="store_true", help="queue JOB_ID's failed documents again")
    p.set_defaults(func=_jobs)

    from appliance import cli_sources

    cli_sources.add_commands(sub, client, lambda handler: lambda args: handler(args, _client(args), _emit))

    from appliance.ops import commands as ops_commands

    ops_commands.add_commands(sub, client)
    return parser


def main(argv: list[str] | None = None) -> int:
    from appliance.client import ApiError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ApiError as exc:
        print(f"error: {exc.title}: {exc.detail}", file=sys.stderr)
        return 1
    except ApplianceError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
