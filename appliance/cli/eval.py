"""`appliance eval`: eval sets, runs with a progress bar and a scorecard, comparisons and gates.

Each subcommand is added by one registrar in SUBCOMMANDS (`(actions, parents) -> None`): a new
one (`eval drift`, `eval generate`) is a function appended there.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.cli.common import Parents, connect, emit
from appliance.cli.drift import register_drift
from appliance.errors import ApplianceError

if TYPE_CHECKING:
    from appliance.client import ApplianceClient

Registrar = Callable[[argparse._SubParsersAction, Parents], None]


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser("eval", parents=[parents.client], help="evaluation: sets, runs, comparisons, gates")
    actions = p.add_subparsers(dest="eval_command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(actions, parents)


# -- sets ----------------------------------------------------------------------------------------
def _add_sets(actions: argparse._SubParsersAction, parents: Parents) -> None:
    a = actions.add_parser("sets", parents=[parents.client], help="the eval sets on this server")
    a.add_argument("--all-versions", action="store_true")
    a.set_defaults(func=_sets)


def _sets(args: argparse.Namespace) -> int:
    def human(rows: list[dict]) -> None:
        if not rows:
            print("no eval sets (appliance eval import DIR --name NAME)")
            return
        print(
            f"{'NAME':<20} {'VER':>3} {'KIND':<10} {'ITEMS':>6} {'ANS':>5} {'UNANS':>5} {'CORPUS':>7} {'COLLECTION':<16} USED"
        )
        for s in rows:
            print(
                f"{s['name']:<20} {s['version']:>3} {s['kind']:<10} {s['item_count']:>6} {s['answerable']:>5} "
                f"{s['unanswerable']:>5} {s['corpus_documents']:>7} {s['collection'] or '-':<16} "
                f"{'yes' if s['used'] else 'no'}"
            )

    emit(args, connect(args).eval_sets(args.all_versions), human)
    return 0


def _add_import(actions: argparse._SubParsersAction, parents: Parents) -> None:
    a = actions.add_parser(
        "import",
        parents=[parents.client],
        help="import a set: BEIR (corpus.jsonl, queries.jsonl, qrels/test.tsv) or QA (questions.jsonl [+ corpus.jsonl])",
    )
    a.add_argument("dir", help="the set's directory (read here and uploaded)")
    a.add_argument("--name", required=True)
    a.add_argument("--collection", "-c", help="where its corpus goes (default: the set's name)")
    a.add_argument("--description", default="")
    a.add_argument(
        "--server-path", action="store_true", help="DIR is a directory on the server: send its path"
    )
    a.add_argument("--wait", action="store_true", help="wait until the corpus is ingested")
    a.set_defaults(func=_import)


def _import(args: argparse.Namespace) -> int:
    from appliance.evaluate.sets import read_dir

    client = connect(args)
    if args.server_path:
        evalset = client.import_eval_set(
            args.name, path=args.dir, collection=args.collection, description=args.description
        )
    else:
        files = read_dir(Path(args.dir).expanduser())
        evalset = client.import_eval_set(
            args.name, files, collection=args.collection, description=args.description
        )
    if args.wait and evalset["ingest_jobs"]:
        _follow(args, client, "ingest", lambda: _ingest_progress(client, evalset["ingest_jobs"]))

    def human(s: dict) -> None:
        print(
            f"{s['name']} version {s['version']}: {s['kind']}, {s['item_count']} items"
            + (
                f" ({s['answerable']} answerable, {s['unanswerable']} unanswerable)"
                if s["kind"] != "retrieval"
                else ""
            )
        )
        if s["corpus_documents"]:
            print(
                f"corpus: {s['corpus_documents']} documents -> collection {s['collection']} (jobs {', '.join(s['ingest_jobs']) or 'none: already there'})"
            )
        print(
            f"run it with: appliance eval run {s['name']}"
            + ("" if s["collection"] else " --collection COLLECTION")
        )

    emit(args, evalset, human)
    return 0


def _ingest_progress(client: ApplianceClient, job_ids: list[str]) -> tuple[int, int, bool, str]:
    jobs = [client.job(j) for j in job_ids]
    total = sum(j["progress"]["total"] for j in jobs)
    done = sum(j["progress"]["processed"] for j in jobs)
    failed = sum(j["progress"]["failed"] for j in jobs)
    finished = all(j["state"] in ("succeeded", "failed", "cancelled") for j in jobs)
    return done, total, finished, f"{failed} failed" if failed else ""


def _follow(args: argparse.Namespace, client: ApplianceClient, label: str, poll: Callable[[], tuple]) -> None:
    """A progress bar (on a terminal, without --json) until `poll` says finished."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        disable=args.json or not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task(label, total=None, status="")
        while True:
            done, total, finished, status = poll()
            bar.update(task, completed=done, total=total or None, status=status)
            if finished:
                return
            time.sleep(0.5)


def _add_generate(actions: argparse._SubParsersAction, parents: Parents) -> None:
    a = actions.add_parser(
        "generate",
        parents=[parents.client],
        help="write a QA set from a collection with the local LLM (checked questions, known gold sources)",
    )
    a.add_argument("--collection", "-c", required=True)
    a.add_argument("--n", type=int, default=50, help="questions to write (default 50)")
    a.add_argument("--name", help="the set's name (default: <collection>-generated)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--model", help="chat model (default: the served one)")
    a.add_argument("--unanswerable-fraction", type=float, default=0.2)
    a.add_argument("--wait", action="store_true", help="progress bar until the set is written")
    a.set_defaults(func=_generate)


def _job_progress(client: ApplianceClient, job_id: str) -> tuple[int, int, bool, str]:
    job = client.job(job_id)
    finished = job["state"] in ("succeeded", "failed", "cancelled")
    return job["progress"]["processed"], job["progress"]["total"], finished, job["state"]


def _generate(args: argparse.Namespace) -> int:
    client = connect(args)
    job = client.generate_eval_set(
        args.collection, args.n, args.name, args.seed, args.model, args.unanswerable_fraction
    )
    if not args.wait:
        emit(args, job, lambda j: print(f"generating: job {j['id']} (appliance jobs {j['id']})"))
        return 0
    _follow(args, client, "generate", lambda: _job_progress(client, job["id"]))
    job = client.job(job["id"])

    def human(j: dict) -> None:
        if j["state"] != "succeeded":
            print(f"generation {j['state']}: {j.get('error') or ''}")
            return
        s, r = j["summary"]["set"], j["summary"]["report"]
        print(
            f"set {s['name']} version {s['version']}: {r['produced']} of {r['requested']} questions "
            f"({r['answerable']} answerable, {r['unanswerable']} unanswerable) from {r['candidates']} "
            f"candidates in {r['seconds']:.0f} s; rejected: {r['rejected_by_reason']}"
        )

    emit(args, job, human)
    return 0 if job["state"] == "succeeded" else 1


def _add_feedback_set(actions: argparse._SubParsersAction, parents: Parents) -> None:
    a = actions.add_parser(
        "from-feedback",
        parents=[parents.client],
        help="a QA set of the answers users rated down over a collection (regression items)",
    )
    a.add_argument("--collection", "-c", required=True)
    a.add_argument("--name", help="the set's name (default: <collection>-feedback)")
    a.set_defaults(func=_feedback_set)


def _feedback_set(args: argparse.Namespace) -> int:
    evalset = connect(args).feedback_eval_set(args.collection, args.name)
    emit(args, evalset, lambda s: print(f"{s['name']} version {s['version']}: {s['item_count']} items"))
    return 0


# -- runs ----------------------------------------------------------------------------------------
def _add_run(actions: argparse._SubParsersAction, parents: Parents) -> None:
    a = actions.add_parser(
        "run", parents=[parents.client], help="run a set: retrieval metrics, and answers for QA sets"
    )
    a.add_argument("set")
    a.add_argument("--collection", "-c", help="default: where the set's corpus was ingested")
    a.add_argument("--mode", choices=["keyword", "semantic", "hybrid"])
    a.add_argument("--top-k", "-k", type=int, default=100, help="hits retrieved per item (default 100)")
    a.add_argument("--limit", type=int, help="only the first N items")
    a.add_argument("--retrieval-only", action="store_true", help="skip the chat model")
    a.add_argument("--model", help="chat model (default: the served one)")
    a.add_argument(
        "--judge",
        choices=["llm", "lexical"],
        help="also judge each answer against the gold answer (judge_correct): llm = the chat model as a "
        "yes/no judge, lexical = token coverage",
    )
    a.add_argument("--wait", action="store_true", help="show progress, then the scorecard")
    a.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    client = connect(args)
    run = client.start_eval_run(
        args.set,
        args.collection,
        args.mode,
        args.top_k,
        args.limit,
        args.retrieval_only,
        args.model,
        args.judge,
    )
    if not args.wait:
        emit(
            args,
            run,
            lambda r: print(f"run {r['id']} queued as job {r['job_id']}: appliance eval show {r['id']}"),
        )
        return 0

    def poll() -> tuple:
        nonlocal run
        run = client.eval_run(run["id"])
        p = run["progress"]
        failed = int(run["scorecard"].get("failed") or 0)
        return (
            p["processed"],
            p["total"],
            run["state"] in ("succeeded", "failed", "cancelled"),
            f"{failed} failed" if failed else "",
        )

    _follow(args, client, f"eval {args.set}", poll)
    emit(args, run, _print_run)
    return 0 if run["state"] == "succeeded" else 1


def _fmt(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def _print_run(run: dict) -> None:
    card = run["scorecard"]
    cfg = run.get("config") or {}
    model = (cfg.get("chat_model") or {}).get("name", "-")
    print(
        f"run {run['id']}  {run['set_name']} v{run['set_version']} ({run['set_kind']})  {run['state']}"
        f"  collection {run['options']['collection']}  mode {(cfg.get('retrieval') or {}).get('mode', run['options']['mode'])}"
        f"  top_k {run['options']['top_k']}  model {model}"
    )
    if run.get("error"):
        print(f"error: {run['error']}")
    print(f"items {int(card.get('items') or 0)}  failed {int(card.get('failed') or 0)}")
    quality = [k for k in card if "@" in k or k in ("mrr",)]
    answers = [
        k
        for k in (
            "accuracy",
            "token_f1",
            "refusal_accuracy",
            "over_refusal",
            "grounded_rate",
            "citation_precision",
            "citation_recall",
            "unsupported_rate",
            "judge_correct",
        )
        if k in card
    ]
    for group in (quality, answers):
        if group:
            print("  " + "  ".join(f"{k} {_fmt(card[k])}" for k in group))
    for stage in ("retrieval_ms", "rerank_ms", "ttft_ms", "total_ms"):
        if card.get(f"{stage}_p50") is not None:
            print(
                f"  {stage:<13} p50 {_fmt(card[f'{stage}_p50'])}  p95 {_fmt(card[f'{stage}_p95'])}  p99 {_fmt(card[f'{stage}_p99'])}"
            )
    rest = (
        "prompt_tokens_per_query",
        "completion_tokens_per_query",
        "cpu_seconds_per_query",
        "cost_per_query",
    )
    shown = [k for k in rest if card.get(k) is not None]
    if shown:
        print("  " + "  ".join(f"{k} {_fmt(card[k])}" for k in shown))


def _add_runs(actions: argparse._SubParsersAction, parents: Parents) -> None:
    a = actions.add_parser(
        "runs", parents=[parents.client], help="run history: when, what configuration, headline numbers"
    )
    a.add_argument("--set")
    a.add_argument("--limit", type=int, default=20)
    a.set_defaults(func=_runs)


_HEADLINE = (
    "ndcg@10",
    "recall@10",
    "accuracy",
    "token_f1",
    "refusal_accuracy",
    "grounded_rate",
    "total_ms_p95",
)


def _runs(args: argparse.Namespace) -> int:
    def human(rows: list[dict]) -> None:
        if not rows:
            print("no runs")
        for r in rows:
            cfg, card = r.get("config") or {}, r["scorecard"]
            numbers = "  ".join(f"{k} {_fmt(card[k])}" for k in _HEADLINE if card.get(k) is not None)
            print(
                f"{r['id']}  {(r['created_at'] or '')[:19].replace('T', ' ')}  {r['set_name']} v{r['set_version']}  "
                f"{r['state']:<9} {r['progress']['processed']}/{r['progress']['total']}  "
                f"{(cfg.get('retrieval') or {}).get('mode', '-')}/k={r['options']['top_k']}  "
                f"{(cfg.get('chat_model') or {}).get('name', '-')}  {numbers}"
            )

    emit(args, connect(args).eval_runs(args.set, args.limit), human)
    return 0


def _add_show(actions: argparse._SubParsersAction, parents: Parents) -> None:
    a = actions.add_parser("show", parents=[parents.client], help="a run's scorecard and its worst items")
    a.add_argument("run_id")
    a.add_argument("--items", type=int, default=5, help="how many of the worst items to list (default 5)")
    a.add_argument("--metric", help="order the items by this metric, ascending")
    a.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    client = connect(args)
    run = client.eval_run(args.run_id)
    items = client.eval_run_items(args.run_id, "worst", args.metric, args.items) if args.items else []

    def human(data: dict) -> None:
        _print_run(data["run"])
        if data["items"]:
            print("worst items:")
        for o in data["items"]:
            scores = "  ".join(f"{k} {_fmt(v)}" for k, v in o.get("scores", {}).items() if v is not None)
            print(f"  #{o['ordinal']} {o['item_id']} ({o['kind']}) {o['question'][:80]}")
            if o["state"] != "done":
                print(f"     failed: {o.get('error')}")
                continue
            print(f"     {scores}")
            if o.get("answer") is not None:
                print(f"     answer: {' '.join(o['answer'].split())[:160]}")

    emit(args, {"run": run, "items": items}, human)
    return 0


def _add_compare(actions: argparse._SubParsersAction, parents: Parents) -> None:
    a = actions.add_parser(
        "compare", parents=[parents.client], help="run B against run A, paired, with 95%% intervals"
    )
    a.add_argument("run_a")
    a.add_argument("run_b")
    a.set_defaults(func=_compare)


def _compare(args: argparse.Namespace) -> int:
    def human(c: dict) -> None:
        print(
            f"{c['run_b']} vs {c['run_a']}: {c['paired_items']} paired items, {int(c['confidence'] * 100)}% paired bootstrap"
        )
        print(f"{'METRIC':<22} {'A':>10} {'B':>10} {'B-A':>10}  {'INTERVAL':<24} VERDICT")
        for m in c["metrics"]:
            interval = f"[{_fmt(m['low'])}, {_fmt(m['high'])}]" if m["low"] is not None else "-"
            print(
                f"{m['metric']:<22} {_fmt(m['a']):>10} {_fmt(m['b']):>10} {m['difference']:>+10.4f}  {interval:<24} {m['verdict']}"
            )

    emit(args, connect(args).compare_eval_runs(args.run_a, args.run_b), human)
    return 0


# -- gates ---------------------------------------------------------------------------------------
def _add_gates(actions: argparse._SubParsersAction, parents: Parents) -> None:
    a = actions.add_parser("gates", parents=[parents.client], help="the gates")
    a.set_defaults(func=_gates)
    a = actions.add_parser(
        "gate-create",
        parents=[parents.client],
        help="create or replace a gate: thresholds as METRIC=VALUE, e.g. --min ndcg@10=0.3 --max-regression recall@10=0.02",
    )
    a.add_argument("name")
    a.add_argument("--set", required=True)
    for bound in ("min", "max", "min-delta", "max-regression"):
        a.add_argument(f"--{bound}", action="append", default=[], metavar="METRIC=VALUE")
    a.add_argument("--baseline", help="baseline run for --min-delta and --max-regression")
    a.add_argument(
        "--collection", "-c", help="with it, a check without --run runs the set on this collection"
    )
    a.add_argument("--mode", choices=["keyword", "semantic", "hybrid"])
    a.add_argument("--limit", type=int)
    a.add_argument("--retrieval-only", action="store_true")
    a.add_argument("--description", default="")
    a.set_defaults(func=_gate_create)
    a = actions.add_parser(
        "gate-check",
        parents=[parents.client],
        help="pass or fail a run against a gate (exit 1 unless passed)",
    )
    a.add_argument("name")
    a.add_argument("--run", help="the run to check (default: run the gate's set now and wait)")
    a.set_defaults(func=_gate_check)


def _gates(args: argparse.Namespace) -> int:
    def human(rows: list[dict]) -> None:
        if not rows:
            print("no gates")
        for g in rows:
            bounds = "; ".join(
                f"{t['metric']} "
                + ", ".join(f"{b} {t[b]:g}" for b in ("min", "max", "min_delta", "max_regression") if b in t)
                for t in g["thresholds"]
            )
            print(
                f"{g['name']:<18} set {g['set_name']:<16} baseline {g.get('baseline_run') or '-':<22} {bounds}"
            )

    emit(args, connect(args).eval_gates(), human)
    return 0


def _thresholds(args: argparse.Namespace) -> list[dict]:
    by_metric: dict[str, dict] = {}
    for bound in ("min", "max", "min_delta", "max_regression"):
        for spec in getattr(args, bound):
            metric, sep, value = spec.rpartition("=")
            try:
                number = float(value)
            except ValueError:
                number = None
            if not sep or not metric or number is None:
                raise ApplianceError(f"--{bound.replace('_', '-')} {spec!r}: write METRIC=NUMBER")
            by_metric.setdefault(metric, {"metric": metric})[bound] = number
    return list(by_metric.values())


def _gate_create(args: argparse.Namespace) -> int:
    body = {
        "name": args.name,
        "set": args.set,
        "thresholds": _thresholds(args),
        "baseline_run": args.baseline,
        "description": args.description,
        "run_options": {
            "collection": args.collection,
            "mode": args.mode,
            "limit": args.limit,
            "retrieval_only": args.retrieval_only,
        }
        if args.collection
        else None,
    }
    emit(
        args,
        connect(args).create_eval_gate(body),
        lambda g: print(f"gate {g['name']} saved ({len(g['thresholds'])} thresholds)"),
    )
    return 0


def _gate_check(args: argparse.Namespace) -> int:
    report = connect(args).check_eval_gate(args.name, args.run)

    def human(r: dict) -> None:
        print(
            f"gate {r['gate']}: {r['state'].upper()} (run {r['run_id']}"
            + (f", baseline {r['baseline_run']})" if r["baseline_run"] else ")")
        )
        for c in r["checks"]:
            print(f"  {'ok  ' if c['passed'] else 'FAIL'} {c['metric']:<20} {c['bound']:<15} {c['detail']}")

    emit(args, report, human)
    return 0 if report["state"] == "passed" else 1


SUBCOMMANDS: list[Registrar] = [
    _add_sets,
    _add_import,
    _add_generate,
    _add_feedback_set,
    _add_run,
    _add_runs,
    _add_show,
    _add_compare,
    _add_gates,
    register_drift,
]
