"""`appliance console`: the full-screen admin console (Textual), a client of the API."""

from __future__ import annotations

import argparse

from appliance.cli.common import Parents, add_endpoint_flags, endpoint, trust


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser(
        "console", parents=[parents.config], help="the admin console: a full-screen terminal UI"
    )
    add_endpoint_flags(p)
    p.set_defaults(func=_console)


def _console(args: argparse.Namespace) -> int:
    from appliance.tui.app import run_console  # Textual loads only for this command

    return run_console(*endpoint(args), verify=trust(args))
