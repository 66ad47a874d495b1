"""`appliance collections`: every collection with its document and chunk counts; `collections embedder`:
a collection's embedder, changed blue-green behind a retrieval gate, confirmed or rolled back."""

from __future__ import annotations

import argparse

from appliance.cli.common import Parents, connect, emit
from appliance.cli.eval import _follow, _job_progress


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser("collections", parents=[parents.client], help="list collections; their embedders")
    p.set_defaults(func=_collections)
    actions = p.add_subparsers(dest="collections_command", metavar="COMMAND")
    e = actions.add_parser(
        "embedder",
        parents=[parents.client],
        help="show or change a collection's embedder (re-embedded beside the live vectors, gated, switched)",
    )
    e.add_argument("collection")
    what = e.add_mutually_exclusive_group()
    what.add_argument(
        "--model", help="registry reference of an embedding model: NAME, NAME@VERSION or an alias"
    )
    what.add_argument(
        "--confirm", action="store_true", help="keep the new embedder; drop the previous vectors"
    )
    what.add_argument("--rollback", action="store_true", help="back to the embedder before the last switch")
    e.add_argument(
        "--min-gain",
        type=float,
        default=0.0,
        help="the new nDCG@10 must reach the live one's plus this (default 0: at least as good)",
    )
    e.add_argument("--ungated", action="store_true", help="switch without comparing retrieval")
    e.add_argument("--wait", action="store_true", help="follow the job until it switches or is refused")
    e.set_defaults(func=_embedder)


def _collections(args: argparse.Namespace) -> int:
    def human(rows: list[dict]) -> None:
        if not rows:
            print("no collections")
        for r in rows:
            print(f"{r['name']:<24} {r['documents']:>7} docs {r['chunks']:>8} chunks")

    emit(args, connect(args).collections(), human)
    return 0


def _print_embedder(r: dict) -> None:
    live = r["live"]
    print(f"{r['collection']}: {live['resolved']} ({live['dimensions']}-d, generation {live['generation']})")
    if r.get("previous"):
        prev = r["previous"]
        print(
            f"  switched {r.get('switched_at')} from {prev['resolved']}, kept until confirmed: "
            f"`appliance collections embedder {r['collection']} --confirm` or `--rollback`"
        )
    if r.get("gate"):
        print(f"  gate: {r['gate']['reason']}")


def _embedder(args: argparse.Namespace) -> int:
    client = connect(args)
    if args.confirm:
        emit(args, client.confirm_embedder(args.collection), _print_embedder)
        return 0
    if args.rollback:
        emit(args, client.rollback_embedder(args.collection), _print_embedder)
        return 0
    if not args.model:
        emit(args, client.collection_embedder(args.collection), _print_embedder)
        return 0
    job = client.switch_embedder(args.collection, args.model, args.min_gain, args.ungated)
    if not args.wait:
        emit(args, job, lambda j: print(f"re-embedding: job {j['id']} (appliance jobs {j['id']})"))
        return 0
    _follow(args, client, "re-embed", lambda: _job_progress(client, job["id"]))
    job = client.job(job["id"])

    def human(j: dict) -> None:
        gate = (j.get("summary") or {}).get("gate")
        if j["state"] == "succeeded":
            print(f"{args.collection}: switched to {j['summary']['switched_to']}; {gate['reason']}")
            print(f"  confirm with `appliance collections embedder {args.collection} --confirm` or roll back")
        else:
            print(f"re-embedding {j['state']}: {j.get('error') or ''}")

    emit(args, job, human)
    return 0 if job["state"] == "succeeded" else 1
