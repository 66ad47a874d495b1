"""`appliance eval drift`: the latest drift check of each collection, or a check now (`--check`); exits 2
when a collection drifted."""

from __future__ import annotations

import argparse

from appliance.cli.common import Parents, connect, emit
from appliance.errors import InvalidInput


def register_drift(sub: argparse._SubParsersAction, parents: Parents) -> None:
    """Add the `drift` subcommand to `sub` (`appliance eval drift`, through cli/eval.py's SUBCOMMANDS)."""
    p = sub.add_parser(
        "drift",
        parents=[parents.client],
        help="is recent traffic unlike the reference window? (latest checks, or --check now)",
    )
    p.add_argument("--collection", "-c")
    p.add_argument("--check", action="store_true", help="check --collection now (admin key)")
    p.add_argument("--reference-start", help="ISO 8601; with --reference-end, the reference window")
    p.add_argument("--reference-end")
    p.add_argument("--first-n", type=int, help="reference: the first N answers after --after")
    p.add_argument("--after", help="ISO 8601, with --first-n (e.g. when a model was promoted)")
    p.add_argument("--current-start", help="ISO 8601; the current window (default: the last day)")
    p.add_argument("--current-end")
    p.set_defaults(func=_drift)


def _window(**bounds: object) -> dict | None:
    window = {k: v for k, v in bounds.items() if v is not None}
    return window or None


def _drift(args: argparse.Namespace) -> int:
    client = connect(args)
    if args.check:
        if not args.collection:
            raise InvalidInput("--check needs --collection")
        reference = _window(
            start=args.reference_start, end=args.reference_end, first_n=args.first_n, after=args.after
        )
        current = _window(start=args.current_start, end=args.current_end)
        reports = [client.check_drift(args.collection, reference, current)]
    else:
        reports = client.drift(args.collection)

    def human(reports: list[dict]) -> None:
        if not reports:
            print("no drift checks yet (they run daily; `appliance eval drift --check -c NAME` runs one now)")
        for r in reports:
            verdict = "DRIFT" if r["drifted"] else "no drift"
            print(f"{r['collection']}: {verdict}  (checked {r['checked_at'][:19]}, {r['trigger']})")
            ref, cur = r["reference"], r["current"]
            first = f"first {ref['first_n']} after " if ref.get("first_n") else ""
            print(
                f"  reference {first}{(ref.get('start') or 'the start')[:19]} .. {(ref.get('end') or 'now')[:19]}"
                f"  current {(cur.get('start') or '')[:19]} .. {(cur.get('end') or 'now')[:19]}"
            )
            for s in r["signals"]:
                mark = "!" if s["drifted"] else " "
                print(
                    f"  {mark} {s['signal']:<17} {s['test']:<6} n={s['reference_n']}/{s['current_n']}  {s['note']}"
                )

    emit(args, reports, human)
    # Like grep: 2 says "found" (drift), so a cron job or a pipeline can act on it.
    return 2 if any(r["drifted"] for r in reports) else 0
