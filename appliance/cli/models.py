"""`appliance models`: the model registry: list, import, promote, rollback, history (and a family's gate)."""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.cli.common import Parents, connect, emit


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser(
        "models", parents=[parents.client], help="model registry: versions, aliases, promotion, rollback"
    )
    actions = p.add_subparsers(dest="models_command", required=True, metavar="COMMAND")

    a = actions.add_parser("list", parents=[parents.client], help="families, versions, aliases")
    a.set_defaults(func=_list)

    a = actions.add_parser(
        "import",
        parents=[parents.client],
        help="register a GGUF file on the server: verify, probe, tag (a failed check: rejected)",
    )
    a.add_argument("path", help="the GGUF file, as the server sees it (made absolute here)")
    a.add_argument("--name", help="the family (default: from the file's header)")
    a.set_defaults(func=_import)

    a = actions.add_parser(
        "promote",
        parents=[parents.client],
        help="point an alias at a version (staging/production pass the family's eval gate)",
    )
    a.add_argument("name")
    a.add_argument("version", type=int)
    a.add_argument("--to", dest="alias", required=True, help="the alias: production, staging, default, ...")
    a.add_argument("--reason", default="")
    a.add_argument("--run", help="a finished eval run of this version for the gate (default: the gate runs)")
    a.set_defaults(func=_promote)

    a = actions.add_parser(
        "rollback", parents=[parents.client], help="move an alias back to its previous version"
    )
    a.add_argument("name")
    a.add_argument("--alias", default="production")
    a.add_argument("--reason", default="")
    a.set_defaults(func=_rollback)

    a = actions.add_parser(
        "history", parents=[parents.client], help="every alias move of a family, oldest first"
    )
    a.add_argument("name")
    a.set_defaults(func=_history)

    a = actions.add_parser(
        "gate", parents=[parents.client], help="the eval gate promotions to staging/production must pass"
    )
    a.add_argument("name")
    a.add_argument("gate", nargs="?", help="an eval gate's name (appliance eval gate-create)")
    a.add_argument("--none", action="store_true", help="promotions of this family become ungated")
    a.set_defaults(func=_gate)


def _version_line(v: dict) -> str:
    aliases = f"  <- {', '.join(v['aliases'])}" if v["aliases"] else ""
    why = f"  ({v['reason']})" if v.get("reason") else ""
    return f"  v{v['version']:<3} {v['state']:<10} {' '.join(v['tags'])}{aliases}{why}"


def _list(args: argparse.Namespace) -> int:
    def human(families: list[dict]) -> None:
        if not families:
            print("no models registered")
        for f in families:
            gate = f"gate {f['gate']}" if f.get("gate") else "ungated"
            print(f"{f['name']}  [{f['kind']}, {gate}]")
            for v in f["versions"]:
                print(_version_line(v))

    emit(args, connect(args).registry_models(), human)
    return 0


def _import(args: argparse.Namespace) -> int:
    version = connect(args).import_model(str(Path(args.path).expanduser().absolute()), args.name)

    def human(v: dict) -> None:
        print(f"{v['name']} v{v['version']}: {v['state']}" + (f" ({v['reason']})" if v.get("reason") else ""))
        print(f"  sha256 {v['sha256']}  {v['size_bytes']} bytes  {v['format']} {v['quantisation'] or ''}")
        print(f"  tags: {' '.join(v['tags']) or '-'}")

    emit(args, version, human)
    # Like a failed check elsewhere: a rejected file is registered, and the command says it failed.
    return 2 if version["state"] == "rejected" else 0


def _print_move(m: dict) -> None:
    was = f"v{m['previous_version']}" if m["previous_version"] is not None else "-"
    now = f"v{m['version']}" if m["version"] is not None else "(removed)"
    gate = f"gate {m['gate']} run {m['eval_report_id']}" if m["gated"] else "ungated"
    print(
        f"{m['at'][:19]}  {m['alias']:<12} {was:>5} -> {now:<9} {m['action']:<8} {gate:<30} "
        f"by {m['actor']}" + (f": {m['reason']}" if m["reason"] else "")
    )


def _promote(args: argparse.Namespace) -> int:
    move = connect(args).promote_model(args.name, args.version, args.alias, args.reason, args.run)
    emit(args, move, _print_move)
    return 0


def _rollback(args: argparse.Namespace) -> int:
    move = connect(args).rollback_model(args.name, args.alias, args.reason)
    emit(args, move, _print_move)
    return 0


def _history(args: argparse.Namespace) -> int:
    def human(moves: list[dict]) -> None:
        if not moves:
            print("no alias has moved yet")
        for m in moves:
            _print_move(m)

    emit(args, connect(args).registry_history(args.name), human)
    return 0


def _gate(args: argparse.Namespace) -> int:
    if not args.none and not args.gate:
        raise SystemExit("give a gate's name, or --none")
    family = connect(args).set_model_gate(args.name, None if args.none else args.gate)
    emit(args, family, lambda f: print(f"{f['name']}: {'gate ' + f['gate'] if f['gate'] else 'ungated'}"))
    return 0
