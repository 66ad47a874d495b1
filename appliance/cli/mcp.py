"""`appliance mcp`: the knowledge base as an MCP server over stdio, for an assistant on this machine."""

from __future__ import annotations

import argparse

from appliance.cli.common import Parents, endpoint, trust


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser(
        "mcp",
        parents=[parents.client],
        help="serve search and cited answers to a desktop or IDE assistant (MCP over stdio)",
        description="Speak the Model Context Protocol on stdin/stdout, calling the server's API with "
        "the key given (--key, $APPLIANCE_KEY, else <data dir>/admin.key): the assistant reaches "
        "exactly the collections that key may read. Tools: search, answer_with_citations, "
        "list_collections, get_document; resources: appliance://documents/{id}. (--json changes "
        "nothing: MCP is JSON already.)",
    )
    p.set_defaults(func=_mcp)


def _mcp(args: argparse.Namespace) -> int:
    from appliance.client import AsyncApplianceClient
    from appliance.mcp.server import build_server  # the MCP SDK loads only for this command

    url, key = endpoint(args)
    verify = trust(args)
    server = build_server(lambda _ctx: AsyncApplianceClient(url, key, timeout=120.0, verify=verify))
    server.run("stdio")
    return 0
