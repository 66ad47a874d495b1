"""What every command group shares: the parent parsers, the client of the configured server, the one output printer."""

from __future__ import annotations

import argparse
import json
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.client import ApplianceClient
    from appliance.config import Settings


@dataclass(frozen=True)
class Parents:
    """The parent parsers a command group builds its commands on: `config` gives --config (every
    command), `client` adds --url, --key and --json (the commands that talk to the server)."""

    config: argparse.ArgumentParser
    client: argparse.ArgumentParser


def make_parents() -> Parents:
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", help="settings file (TOML); default $APPLIANCE_CONFIG")
    client = argparse.ArgumentParser(add_help=False, parents=[config])
    add_endpoint_flags(client)
    client.add_argument("--json", action="store_true", help="machine-readable output")
    return Parents(config, client)


def add_endpoint_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="server URL (default $APPLIANCE_URL, else from the config)")
    parser.add_argument("--key", help="API key (default $APPLIANCE_KEY, else <data dir>/admin.key)")


def settings(args: argparse.Namespace) -> Settings:
    from appliance.config import load_settings

    return load_settings(args.config)


def endpoint(args: argparse.Namespace) -> tuple[str, str]:
    """URL and key from the flags, the environment or the config (read only when needed)."""
    from appliance.client import resolve_endpoint

    return resolve_endpoint(None if (args.url and args.key) else settings(args), args.url, args.key)


def trust(args: argparse.Namespace) -> ssl.SSLContext | bool:
    """The server's certificate is checked against the config's server.tls_cert when the address
    came from that config too (self-signed on this machine); else against the usual CAs."""
    from appliance.client import server_trust

    if args.url or os.environ.get("APPLIANCE_URL"):
        return True
    return server_trust(settings(args))


def connect(args: argparse.Namespace) -> ApplianceClient:
    from appliance.client import ApplianceClient

    return ApplianceClient(*endpoint(args), verify=trust(args))


def emit(args: argparse.Namespace, data: Any, human: Callable[[Any], object]) -> None:
    """Every command's output: `data` as JSON with --json, else `human(data)` prints it for a person."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        human(data)
