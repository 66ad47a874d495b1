"""`appliance wf`: validate documents here, and apply, run, list, show, approve and cancel on the server."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from appliance.cli.common import Parents, connect, emit
from appliance.errors import ApplianceError, InvalidInput
from appliance.workflows.text import step_tree

ENDED = ("succeeded", "degraded", "failed", "cancelled")


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser(
        "wf",
        parents=[parents.client],
        help="governed workflows: validate, apply, run, runs, show, approve, cancel, memory",
    )
    actions = p.add_subparsers(dest="wf_command", required=True, metavar="COMMAND")

    a = actions.add_parser(
        "validate", parents=[parents.client], help="check documents here (exit 1 at a fault)"
    )
    a.add_argument("files", nargs="+", type=Path, metavar="FILE")
    a.set_defaults(func=_validate)

    a = actions.add_parser("apply", parents=[parents.client], help="register new versions of documents")
    a.add_argument("files", nargs="+", type=Path, metavar="FILE")
    a.set_defaults(func=_apply)

    a = actions.add_parser("run", parents=[parents.client], help="run a workflow as this key")
    a.add_argument("name")
    a.add_argument("--input", default="{}", help="the run's input, a JSON object")
    a.add_argument("--wait", action="store_true", help="wait until the run ends or waits for an approval")
    a.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits at most")
    a.set_defaults(func=_run)

    a = actions.add_parser("runs", parents=[parents.client], help="list runs")
    a.add_argument("--state", choices=["queued", "running", "waiting", *ENDED])
    a.add_argument("--limit", type=int, default=20)
    a.set_defaults(func=_runs)

    a = actions.add_parser(
        "show", parents=[parents.client], help="a run's step tree with timings and outcomes"
    )
    a.add_argument("run_id", metavar="RUN_ID")
    a.set_defaults(func=_show)

    a = actions.add_parser("approvals", parents=[parents.client], help="list approvals (default: pending)")
    a.add_argument("--state", choices=["pending", "answered", "expired"], default="pending")
    a.set_defaults(func=_approvals)

    a = actions.add_parser("approve", parents=[parents.client], help="answer an approval")
    a.add_argument("approval_id", metavar="APPROVAL_ID")
    a.add_argument("--answer", required=True, help="the answer, JSON in the approval's schema")
    a.set_defaults(func=_approve)

    a = actions.add_parser("cancel", parents=[parents.client], help="cancel a run")
    a.add_argument("run_id", metavar="RUN_ID")
    a.set_defaults(func=_cancel)

    a = actions.add_parser(
        "memory", parents=[parents.client], help="this key's long-term workflow memories: list or delete"
    )
    a.add_argument("action", choices=["list", "delete"], help="list this key's memories, or delete them")
    a.add_argument("--workflow", help="only this workflow's memories")
    a.add_argument("--all", action="store_true", help="delete: every memory of the key")
    a.add_argument("--for-key", dest="for_key", metavar="KEY_ID", help="another key's id (an admin key only)")
    a.set_defaults(func=_memory)


def _read(files: list[Path]) -> dict[str, str]:
    out = {}
    for path in files:
        try:
            out[str(path)] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ApplianceError(f"{path}: cannot read: {exc}") from None
    return out


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"{what} is not JSON: {exc}") from None


def _validate(args: argparse.Namespace) -> int:
    from appliance.workflows.documents import DocumentError
    from appliance.workflows.library import validate_files

    try:
        docs = validate_files(_read(args.files).items())
    except DocumentError as exc:
        if args.json:
            print(
                json.dumps(
                    {"valid": False, "file": exc.source, "path": exc.path, "error": exc.message}, indent=2
                )
            )
        else:
            print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    rows = [{"kind": d.kind, "name": d.name, "version": d.version, "file": d.source} for d in docs]
    emit(
        args,
        {"valid": True, "documents": rows},
        lambda r: [
            print(f"ok  {d['kind']:<8} {d['name']}  {d['version']}  {d['file']}") for d in r["documents"]
        ],
    )
    return 0


def _apply(args: argparse.Namespace) -> int:
    applied = connect(args).apply_workflow_files(_read(args.files))

    def human(rows: list[dict]) -> None:
        for d in rows:
            print(f"{'new ' if d['created'] else 'same'}  {d['kind']:<8} {d['name']}  {d['version']}")

    emit(args, applied, human)
    return 0


def _run(args: argparse.Namespace) -> int:
    inputs = _json_arg(args.input, "--input")
    client = connect(args)
    started = client.start_workflow_run(args.name, inputs)
    run = started["run"]
    if args.wait:
        deadline = time.monotonic() + args.timeout
        while run["state"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.25)
            run = client.workflow_run(started["run_id"])
    emit(args, run, lambda r: _print_run(r, steps=args.wait))
    return 1 if run["state"] == "failed" else 0


def _runs(args: argparse.Namespace) -> int:
    def human(rows: list[dict]) -> None:
        if not rows:
            print("no runs")
        for r in rows:
            print(
                f"{r['id']}  {r['state']:<9} {r['workflow']}@{r['version'][:8]}  {r['created_at']}"
                + (f"  {r['error']}" if r["error"] else "")
            )

    emit(args, connect(args).workflow_runs(args.state, args.limit), human)
    return 0


def _show(args: argparse.Namespace) -> int:
    emit(args, connect(args).workflow_run(args.run_id), _print_run)
    return 0


def _print_run(run: dict, steps: bool = True) -> None:
    usage = run.get("usage") or {}
    print(
        f"run {run['id']}  {run['workflow']}@{run['version']}  {run['state']}"
        + ("  (degraded)" if run["degraded"] else "")
    )
    spent = ", ".join(f"{k} {v:g}" for k, v in usage.items() if isinstance(v, int | float))
    if spent:
        print(f"  used: {spent}")
    if run.get("error"):
        print(f"  error: {run['error']}")
    if steps:
        for line in step_tree(run.get("steps") or []):
            print(line)
    if run.get("outputs") is not None:
        print("  outputs: " + json.dumps(run["outputs"], ensure_ascii=False)[:2000])


def _approvals(args: argparse.Namespace) -> int:
    def human(rows: list[dict]) -> None:
        if not rows:
            print("no approvals")
        for a in rows:
            print(f"{a['id']}  {a['state']:<8} run {a['run_id']} step {a['step']}: {a['prompt']}")

    emit(args, connect(args).approvals(args.state), human)
    return 0


def _approve(args: argparse.Namespace) -> int:
    answered = connect(args).answer_approval(args.approval_id, _json_arg(args.answer, "--answer"))
    emit(args, answered, lambda a: print(f"{a['id']}  {a['state']}  answer {json.dumps(a['answer'])}"))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    emit(args, connect(args).cancel_workflow_run(args.run_id), _print_run)
    return 0


def _memory(args: argparse.Namespace) -> int:
    client = connect(args)
    if args.action == "delete":
        if args.workflow is None and not args.all:
            raise InvalidInput("name --workflow W, or say --all to delete every memory of the key")
        done = client.delete_workflow_memories(args.workflow, args.for_key, args.all)
        emit(args, done, lambda d: print(f"deleted {d['deleted']} memories of key {d['key_id']}"))
        return 0

    def human(rows: list[dict]) -> None:
        if not rows:
            print("no memories")
        for m in rows:
            print(f"{m['id']}  {m['workflow']}  run {m['run_id']}  {m['created_at']}")
            print("  " + m["summary"].replace("\n", "\n  ")[:400])

    emit(args, client.workflow_memories(args.workflow, args.for_key), human)
    return 0
