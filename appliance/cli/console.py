"""`appliance console`: the full-screen admin console (Textual), a client of the API; `--web` serves it to browsers."""

from __future__ import annotations

import argparse

from appliance.cli.common import Parents, add_endpoint_flags, endpoint, settings, trust

WEB_PORT = 8765


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser(
        "console", parents=[parents.config], help="the admin console: a full-screen terminal UI"
    )
    add_endpoint_flags(p)
    web = p.add_argument_group(
        "in a browser",
        "--web serves the console over HTTP (textual-serve; nothing is loaded from outside). Each "
        "browser signs in with an API key, which its console acts with. No TLS: off loopback, put "
        "it behind a TLS reverse proxy.",
    )
    web.add_argument(
        "--web", action="store_true", help="serve the console to browsers instead of this terminal"
    )
    web.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)"
    )
    web.add_argument("--port", type=int, default=WEB_PORT, help=f"port to listen on (default {WEB_PORT})")
    web.add_argument(
        "--session-idle",
        type=float,
        default=30.0,
        metavar="MINUTES",
        help="a browser session with no console open ends after this long unseen (default 30)",
    )
    web.add_argument(
        "--session-max",
        type=float,
        default=12.0,
        metavar="HOURS",
        help="a browser session ends this long after sign-in, its console closed (default 12)",
    )
    web.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other than loopback (keys then cross the network in clear unless a TLS proxy fronts it)",
    )
    p.set_defaults(func=_console)


def _console(args: argparse.Namespace) -> int:
    if args.web:
        return _web(args)
    from appliance.tui.app import run_console  # Textual loads only for this command

    return run_console(*endpoint(args), verify=trust(args))


def _web(args: argparse.Namespace) -> int:
    from appliance.client import resolve_endpoint
    from appliance.errors import InvalidInput
    from appliance.tui.web import is_loopback, serve_web_console
    from appliance.tui.web_sessions import WebSessions

    if not is_loopback(args.host) and not args.allow_remote:
        raise InvalidInput(
            f"--host {args.host} is not a loopback address: browsers would send API keys to it "
            "without TLS; pass --allow-remote if a TLS proxy fronts it"
        )
    if not 0 < args.port < 65536:
        raise InvalidInput(f"--port {args.port} is not a TCP port")
    if not (args.session_idle > 0 and args.session_max > 0):
        raise InvalidInput("--session-idle and --session-max must be positive")
    sessions = WebSessions(idle_seconds=args.session_idle * 60, max_seconds=args.session_max * 3600)
    # Only the server's address: every browser session brings its own key (this one is not used).
    url, _ = resolve_endpoint(None if args.url else settings(args), args.url, key="(each session's own)")
    forwarded = [
        *(["--config", str(args.config)] if args.config else []),
        *(["--url", args.url] if args.url else []),
    ]
    return serve_web_console(
        url, forwarded, verify=trust(args), host=args.host, port=args.port, sessions=sessions
    )
