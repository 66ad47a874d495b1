"""The MCP tools and resources over the REST API: every call goes through an API client with the
caller's key, so scopes, admission, limits and the audit log apply exactly as to any client.

The stdio transport (`appliance mcp`) connects to the server's URL; the HTTP transport mounted on
the API (`/mcp`, api/routes/mcp.py) calls the app in-process, with the key of the request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import ToolAnnotations

from appliance import __version__
from appliance.client import ApiError, AsyncApplianceClient

DOCUMENT_URI = "appliance://documents/{document_id}"
INSTRUCTIONS = (
    "A private knowledge base. `search` finds passages (cite their document_id and source_id); "
    "`answer_with_citations` answers a question from the sources with numbered citations; "
    "`list_collections` shows what the key may search; `get_document` or the resource "
    f"{DOCUMENT_URI} reads a whole document."
)
READ_ONLY = ToolAnnotations(
    readOnlyHint=True, destructiveHint=False, idempotentHint=True, openWorldHint=False
)

# The client for one request: the stdio transport's is fixed, the HTTP transport's carries the key
# of the request the tool call came in.
ClientFor = Callable[[Context], AsyncApplianceClient]


def build_server(client_for: ClientFor) -> MCPServer:
    server = MCPServer(name="appliance", version=__version__, instructions=INSTRUCTIONS)

    @server.tool(annotations=READ_ONLY)
    async def search(
        query: str,
        ctx: Context,
        collections: list[str] | None = None,
        top_k: int = 8,
        mode: Literal["hybrid", "keyword", "semantic"] | None = None,
    ) -> dict[str, Any]:
        """Search the knowledge base: the best-matching passages, each with its document, source and score.

        collections: which to search (default: every collection the key may read)."""
        result = await _call(client_for(ctx), lambda api: api.search(query, collections, top_k, mode))
        return {"hits": [_hit(h) for h in result["hits"]], "mode": result.get("mode")}

    @server.tool(annotations=READ_ONLY)
    async def answer_with_citations(
        question: str, ctx: Context, collections: list[str] | None = None
    ) -> dict[str, Any]:
        """Answer a question from the knowledge base with the local model; the answer cites its
        sources as [n], listed in `citations` with their documents and snippets."""

        async def ask(api: AsyncApplianceClient) -> dict:
            async for event in api.ask(question, collections):
                if event["type"] == "answer":
                    return event
                if event["type"] == "error":
                    raise ToolError(f"{event.get('title', 'error')}: {event.get('detail', '')}")
            raise ToolError("the answer stream ended without an answer")

        answer = await _call(client_for(ctx), ask)
        return {
            "answer": answer["answer"],
            "citations": answer["citations"],
            "model": answer["model"],
            "id": answer.get("id", ""),
        }

    @server.tool(annotations=READ_ONLY)
    async def list_collections(ctx: Context) -> dict[str, Any]:
        """The collections this key may read, with their document and chunk counts."""
        return {"collections": await _call(client_for(ctx), lambda api: api.collections())}

    @server.tool(annotations=READ_ONLY)
    async def get_document(document_id: str, ctx: Context) -> dict[str, Any]:
        """A document's fields and its full text (its chunks in order), by the id a search returned."""
        return _document(await _call(client_for(ctx), lambda api: api.document(document_id, chunks=True)))

    @server.resource(DOCUMENT_URI, name="document", mime_type="text/plain")
    async def document_resource(document_id: str, ctx: Context) -> str:
        """A stored document's text, by id."""
        try:
            async with client_for(ctx) as api:
                doc = await api.document(document_id, chunks=True)
        except ApiError as exc:
            raise ResourceError(f"{exc.title}: {exc.detail}") from None
        return _document(doc)["text"]

    return server


async def _call(client: AsyncApplianceClient, send: Callable[[AsyncApplianceClient], Any]) -> Any:
    """One API call; its error, a refused scope included (404, as for a missing object), becomes
    the tool's error for the assistant to read."""
    try:
        async with client as api:
            return await send(api)
    except ApiError as exc:
        raise ToolError(f"{exc.title} ({exc.status}): {exc.detail}") from None


def _hit(hit: dict) -> dict:
    return {
        k: hit.get(k)
        for k in ("document_id", "collection", "source_id", "title", "uri", "score", "text", "location")
    }


def _document(doc: dict) -> dict:
    chunks = doc.pop("chunks", None) or []
    # Chunks overlap; the text is theirs in order, which is what an assistant can quote.
    return {**doc, "text": "\n\n".join(c["text"] for c in sorted(chunks, key=lambda c: c["ordinal"]))}
