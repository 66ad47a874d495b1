"""`appliance models`: the model registry: list, import, promote, canary, shadow, rollback, history, gate."""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.cli.common import Parents, connect, emit
from appliance.errors import InvalidInput


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
    a.add_argument("path", nargs="?", help="the GGUF file, as the server sees it (made absolute here)")
    a.add_argument("--name", help="the family (default: from the file's header, or the remote model's id)")
    remote = a.add_argument_group(
        "a remote model",
        "served by an OpenAI-compatible server (vLLM, KServe, another appliance) whose host is in "
        "settings network.allow; given instead of PATH",
    )
    remote.add_argument(
        "--remote", metavar="URL", help="the server's API base, e.g. https://gpu.internal:8000/v1"
    )
    remote.add_argument("--model", help="the model's id on that server (its /v1/models)")
    remote.add_argument(
        "--api-key-file", help="a file on the appliance's server holding the remote's API key"
    )
    remote.add_argument("--api-key-env", help="or an environment variable of the server process holding it")
    remote.add_argument("--capacity", type=int, help="requests sent to it at the same time (default 4)")
    remote.add_argument(
        "--context-length", type=int, help="its context (default: what it reports, else 8192)"
    )
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
        "canary",
        parents=[parents.client],
        help="send a growing share of production traffic to a version, analysed at each step",
    )
    a.add_argument("name")
    a.add_argument("version", type=int)
    a.add_argument(
        "--steps", default="5,25,50,100", help="percent of production traffic per step, ending at 100"
    )
    a.add_argument("--min-samples", type=int, help="candidate requests per step before its analysis")
    a.add_argument("--reason", default="")
    a.set_defaults(func=_canary)

    a = actions.add_parser(
        "shadow",
        parents=[parents.client],
        help="mirror production requests to a version off the hot path; without VERSION: its agreement report",
    )
    a.add_argument("name")
    a.add_argument("version", type=int, nargs="?")
    a.add_argument("--share", type=float, default=1.0, help="share of production requests mirrored (0..1]")
    a.add_argument("--stop", action="store_true", help="stop mirroring")
    a.add_argument("--recent", type=int, default=5, help="paired outputs shown in the report")
    a.set_defaults(func=_shadow)

    a = actions.add_parser(
        "rollback",
        parents=[parents.client],
        help="move an alias back to its previous version (--alias canary: stop the running canary)",
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
            if f.get("canary"):
                print("  " + _canary_line(f["canary"]))
            if f.get("shadow"):
                s = f["shadow"]
                print(f"  shadow: v{s['version']} mirrors {s['share']:.0%} of production")

    emit(args, connect(args).registry_models(), human)
    return 0


def _import(args: argparse.Namespace) -> int:
    remote_options = (args.model, args.api_key_file, args.api_key_env, args.capacity, args.context_length)
    if args.remote:
        if args.path:
            raise InvalidInput("give PATH or --remote URL, not both")
        if not args.model:
            raise InvalidInput("--remote needs --model (the model's id on that server)")
        version = connect(args).import_remote_model(
            args.remote,
            args.model,
            args.name,
            api_key_file=str(Path(args.api_key_file).expanduser().absolute()) if args.api_key_file else None,
            api_key_env=args.api_key_env,
            capacity=args.capacity,
            context_length=args.context_length,
        )
    elif not args.path:
        raise InvalidInput("give PATH (a GGUF file) or --remote URL --model ID")
    elif any(o is not None for o in remote_options):
        raise InvalidInput("--model, --api-key-*, --capacity and --context-length go with --remote")
    else:
        version = connect(args).import_model(str(Path(args.path).expanduser().absolute()), args.name)

    def human(v: dict) -> None:
        print(f"{v['name']} v{v['version']}: {v['state']}" + (f" ({v['reason']})" if v.get("reason") else ""))
        if v.get("remote"):
            r = v["remote"]
            print(
                f"  remote {r['model']} at {v['path']}  capacity {r['capacity']}  context {v['context_length']}"
            )
        else:
            print(f"  sha256 {v['sha256']}  {v['size_bytes']} bytes  {v['format']} {v['quantisation'] or ''}")
        print(f"  tags: {' '.join(v['tags']) or '-'}")

    emit(args, version, human)
    # Like a failed check elsewhere: a rejected file is registered, and the command says it failed.
    return 2 if version["state"] == "rejected" else 0


def _canary_line(c: dict) -> str:
    steps = ",".join(str(x) for x in c["steps"])
    if c["state"] == "running":
        t = c.get("traffic") or {}
        n = (t.get("candidate") or {}).get("requests", 0)
        return (
            f"canary {c['id']}: v{c['candidate_version']} vs v{c['stable_version']} at {c['weight']}% "
            f"(step {c['step'] + 1}/{len(c['steps'])} of {steps}; {n}/{c['min_samples']} requests)"
        )
    return f"last canary {c['id']}: v{c['candidate_version']} {c['state'].replace('_', ' ')}: {c['reason']}"


def _canary(args: argparse.Namespace) -> int:
    from appliance.models.rollout import parse_steps

    steps = parse_steps(args.steps)  # a bad schedule is refused here, with the server's words
    canary = connect(args).start_canary(args.name, args.version, steps, args.min_samples, args.reason)
    emit(args, canary, lambda c: print(_canary_line(c)))
    return 0


def _shadow(args: argparse.Namespace) -> int:
    client = connect(args)
    if args.stop or args.version is not None:
        state = client.set_shadow(args.name, None if args.stop else args.version, args.share)

        def human(s: dict | None) -> None:
            if s is None:
                print(f"{args.name}: shadow stopped")
            else:
                print(f"{s['name']}: v{s['version']} mirrors {s['share']:.0%} of production requests")

        emit(args, state, human)
        return 0

    def report(r: dict) -> None:
        if r["version"] is None:
            print(f"{r['name']}: no shadow yet")
            return
        live = "on" if r["shadow"] else "stopped"
        print(f"{r['name']} shadow v{r['version']} ({live}): {r['pairs']} pairs, {r['errors']} errors")

        def num(v, fmt="{:.3f}") -> str:
            return "-" if v is None else fmt.format(v)

        print(
            f"  similarity mean {num(r['mean_similarity'])} median {num(r['median_similarity'])}; "
            f"agreement {num(r['agreement_rate'], '{:.0%}')}; citation overlap {num(r['mean_citation_overlap'])}"
        )
        print(
            f"  p95 production {num(r['p95_production_ms'], '{:.0f} ms')}, "
            f"shadow {num(r['p95_shadow_ms'], '{:.0f} ms')}"
        )
        if r["shadow"]:
            q = r["shadow"]["queue"]
            print(f"  queue {q['depth']}/{q['capacity']}, {q['done']} done, {q['dropped']} dropped")
        for p in r["recent"]:
            sim = num(p["similarity"], "{:.2f}")
            print(f"  [{sim}] {p['prompt'][:60]!r}: {(p['shadow_output'] or p['error'] or '')[:60]!r}")

    emit(args, client.shadow_report(args.name, args.recent), report)
    return 0


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
