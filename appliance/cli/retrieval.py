"""`appliance retrieval`: per-collection fusion calibration (`calibrate`), its result (`fusion`), `reset`."""

from __future__ import annotations

import argparse

from appliance.cli.common import Parents, connect, emit
from appliance.cli.eval import _follow, _job_progress


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser(
        "retrieval", parents=[parents.client], help="tune retrieval: per-collection fusion calibration"
    )
    actions = p.add_subparsers(dest="retrieval_command", required=True, metavar="COMMAND")
    a = actions.add_parser(
        "calibrate",
        parents=[parents.client],
        help="tune a collection's fusion on its generated eval set (a job)",
    )
    a.add_argument("--collection", "-c", required=True)
    a.add_argument("--set", dest="eval_set", help="a generated set over the collection (default: its latest)")
    a.add_argument("--wait", action="store_true", help="progress bar until it is chosen, then the result")
    a.set_defaults(func=_calibrate)
    f = actions.add_parser(
        "fusion", parents=[parents.client], help="a collection's calibrated fusion and its scores"
    )
    f.add_argument("--collection", "-c", required=True)
    f.set_defaults(func=_fusion)
    r = actions.add_parser("reset", parents=[parents.client], help="a collection back to the default fusion")
    r.add_argument("--collection", "-c", required=True)
    r.set_defaults(func=_reset)


def _describe(settings: dict) -> str:
    routed = (
        f", routed (lookups {settings['lookup_semantic_weight']}, questions {settings['question_semantic_weight']})"
        if settings.get("routing")
        else ""
    )
    return f"{settings['method']}, semantic weight {settings['semantic_weight']}{routed}"


def _print_fusion(record: dict) -> None:
    print(f"{record['collection']}: {_describe(record['settings'])}")
    print(
        f"  tuned on {record['eval_set']} ({record['items']} questions) at {record.get('calibrated_at')}, "
        f"when the collection had {record.get('chunks', 0)} chunks"
    )
    default = record["default_score"]
    print(f"  default ({_describe(default['settings'])}): nDCG@10 {default['ndcg_at_10']:.4f}")
    for s in record["scores"][:5]:
        print(f"  {s['ndcg_at_10']:.4f} nDCG@10  {s['recall_at_100']:.4f} R@100  {_describe(s['settings'])}")


def _calibrate(args: argparse.Namespace) -> int:
    client = connect(args)
    job = client.calibrate_fusion(args.collection, args.eval_set)
    if not args.wait:
        emit(args, job, lambda j: print(f"calibrating: job {j['id']} (appliance jobs {j['id']})"))
        return 0
    _follow(args, client, "calibrate", lambda: _job_progress(client, job["id"]))
    job = client.job(job["id"])
    if job["state"] != "succeeded":
        emit(args, job, lambda j: print(f"calibration {j['state']}: {j.get('error') or ''}"))
        return 1
    emit(args, client.collection_fusion(args.collection), _print_fusion)
    return 0


def _fusion(args: argparse.Namespace) -> int:
    emit(args, connect(args).collection_fusion(args.collection), _print_fusion)
    return 0


def _reset(args: argparse.Namespace) -> int:
    def human(r: dict) -> None:
        state = "back to" if r["reset"] else "already on"
        print(f"{r['collection']}: {state} the default fusion ({_describe(r['default'])})")

    emit(args, connect(args).reset_fusion(args.collection), human)
    return 0
