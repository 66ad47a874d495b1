"""`appliance collections`: every collection with its document and chunk counts."""

from __future__ import annotations

import argparse

from appliance.cli.common import Parents, connect, emit


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser("collections", parents=[parents.client], help="list collections")
    p.set_defaults(func=_collections)


def _collections(args: argparse.Namespace) -> int:
    def human(rows: list[dict]) -> None:
        if not rows:
            print("no collections")
        for r in rows:
            print(f"{r['name']:<24} {r['documents']:>7} docs {r['chunks']:>8} chunks")

    emit(args, connect(args).collections(), human)
    return 0
