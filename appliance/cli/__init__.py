"""The `appliance` command: `serve` runs the server; every other command is a client of its API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from appliance.cli import (
    backup,
    collections,
    console,
    doctor,
    feedback,
    ingest,
    jobs,
    keys,
    mcp,
    models,
    plan,
    query,
    retrieval,
    serve,
    sources,
    status,
    tune,
    wf,
)
from appliance.cli import eval as evaluation
from appliance.cli.common import make_parents
from appliance.errors import ApplianceError

# Command groups, in the order `--help` lists them. Each exposes `register(subparsers, parents)`
# and sets `func(args) -> exit status` on its parsers; an extension adds its module the same way.
COMMANDS: tuple[ModuleType, ...] = (
    serve,
    ingest,
    query,
    keys,
    collections,
    console,
    jobs,
    sources,
    doctor,
    backup,
    feedback,
    evaluation,
    mcp,
    status,
    models,
    wf,
    plan,
    retrieval,
    tune,
)


def build_parser(commands: Sequence[ModuleType] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="A private AI platform in one box.")
    sub = parser.add_subparsers(dest="command", required=True)
    parents = make_parents()
    for group in commands:
        group.register(sub, parents)
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
