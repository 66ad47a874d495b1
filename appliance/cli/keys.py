"""`appliance keys create|list|revoke`: API keys (the secret is shown once)."""

from __future__ import annotations

import argparse

from appliance.cli.common import Parents, connect, emit


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser("keys", parents=[parents.client], help="create, list or revoke API keys")
    actions = p.add_subparsers(dest="action", required=True)
    k = actions.add_parser("create", parents=[parents.client])
    k.add_argument("--name", required=True)
    k.add_argument("--role", choices=["admin", "user"], default="user")
    k.add_argument("--collections", help="comma-separated; required for user keys")
    k.add_argument("--rpm", type=int, help="requests per minute")
    k.add_argument("--tpm", type=int, help="model tokens per minute")
    k.set_defaults(func=_create)
    k = actions.add_parser("list", parents=[parents.client])
    k.set_defaults(func=_list)
    k = actions.add_parser("revoke", parents=[parents.client])
    k.add_argument("key_id")
    k.set_defaults(func=_revoke)


def _create(args: argparse.Namespace) -> int:
    collections = [c for c in (args.collections or "").split(",") if c] or None
    key = connect(args).create_key(args.name, args.role, collections, args.rpm, args.tpm)
    emit(
        args,
        {"id": key["id"], "key": key["key"]},
        lambda _: print(f"created {key['id']} ({key['role']}); the key is shown once:\n{key['key']}"),
    )
    return 0


def _list(args: argparse.Namespace) -> int:
    def human(rows: list[dict]) -> None:
        for r in rows:
            print(
                f"{r['id']}  {r['name']:<20} {r['role']:<6} {','.join(r['collections'] or ['*']):<24} "
                f"rpm={r['rpm'] or '-'} tpm={r['tpm'] or '-'}{'  REVOKED' if r['revoked_at'] else ''}"
            )

    emit(args, connect(args).keys(), human)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    emit(args, connect(args).revoke_key(args.key_id), lambda r: print(f"revoked {r['id']} ({r['name']})"))
    return 0
