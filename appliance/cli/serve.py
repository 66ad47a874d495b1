"""`appliance serve`: runs the server in this process."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from appliance.cli.common import Parents


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser("serve", parents=[parents.config], help="run the server")
    p.add_argument("--data-dir")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--sample-dir", help="ingest this folder into collection 'sample' at start-up")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from appliance.config import load_settings
    from appliance.server import serve

    overrides: dict = {}
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.host or args.port:
        overrides["server"] = {k: v for k, v in (("host", args.host), ("port", args.port)) if v}
    if args.sample_dir:
        overrides["sample_dir"] = args.sample_dir
    # The config file travels with backups; the server finds APPLIANCE_CONFIG itself.
    code = serve(load_settings(args.config, overrides), Path(args.config) if args.config else None)
    # Everything durable was closed by serve(). Leave without the interpreter's teardown, where
    # native libraries (torch, llama.cpp, their thread pools) spend ~7 s freeing memory the
    # process gives back anyway: a stop stays well inside systemd's TimeoutStopSec.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
