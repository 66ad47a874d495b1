"""The MCP server, driven by the MCP SDK's own client: over HTTP at /mcp on a live server, and over
stdio from `appliance mcp`; each under the key it was given."""

from __future__ import annotations

import asyncio
import sys

import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import REPO

TOOLS = {"search", "answer_with_citations", "list_collections", "get_document"}


def over_http(url: str, key: str) -> Client:
    auth = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120)
    return Client(streamable_http_client(f"{url}/mcp", http_client=auth))


def result(call) -> dict:
    assert not call.is_error, call.content
    return call.structured_content


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def alpha(isolation_world):
    return isolation_world.srv.url, isolation_world.keys["alpha"], isolation_world.objects


def test_tools_are_listed_with_their_schemas(alpha):
    url, key, _ = alpha

    async def go():
        async with over_http(url, key) as client:
            return (await client.list_tools()).tools, (
                await client.list_resource_templates()
            ).resource_templates

    tools, templates = run(go())
    assert {t.name for t in tools} == TOOLS
    search = next(t for t in tools if t.name == "search")
    assert search.input_schema["required"] == ["query"] and search.annotations.read_only_hint
    assert [t.uri_template for t in templates] == ["appliance://documents/{document_id}"]


def test_search_collections_and_documents_under_the_key(alpha):
    url, key, objects = alpha
    doc_id = objects["alpha"]["document"]

    async def go():
        async with over_http(url, key) as client:
            collections = result(await client.call_tool("list_collections", {}))
            hits = result(await client.call_tool("search", {"query": "launch code", "top_k": 5}))
            document = result(await client.call_tool("get_document", {"document_id": doc_id}))
            resource = await client.read_resource(f"appliance://documents/{doc_id}")
            return collections, hits, document, resource

    collections, hits, document, resource = run(go())
    assert [c["name"] for c in collections["collections"]] == ["alpha"]
    assert hits["hits"] and {h["collection"] for h in hits["hits"]} == {"alpha"}
    assert "ZEBRA-4471" in hits["hits"][0]["text"]
    assert document["id"] == doc_id and "ZEBRA-4471" in document["text"]
    assert "ZEBRA-4471" in resource.contents[0].text


def test_tool_calls_are_audited_as_the_calls_they_make(isolation_world, alpha):
    url, key, objects = alpha

    async def go():
        async with over_http(url, key) as client:
            result(await client.call_tool("search", {"query": "audited launch code"}))

    run(go())
    with isolation_world.srv.client() as admin:
        entries = admin.get("/api/v1/audit", params={"key_id": objects["alpha"]["key"], "limit": 20}).json()
    actions = [e["action"] for e in entries]
    assert "POST /mcp" in actions and "POST /api/v1/knowledge/search" in actions


def test_a_cited_answer_is_the_appliance_answer(isolation_world, alpha):
    url, key, _ = alpha

    async def go():
        async with over_http(url, key) as client:
            return result(
                await client.call_tool(
                    "answer_with_citations",
                    {"question": "What is the alpha launch code?", "collections": ["alpha"]},
                )
            )

    answer = run(go())
    assert answer["answer"] and answer["model"]
    for citation in answer["citations"]:
        assert f"[{citation['n']}]" in answer["answer"] and citation["source_id"] == "alpha.md"
    # The answer came through the real answer path: its trace is the key's, with the same text.
    with isolation_world.srv.client(key) as owner:
        trace = owner.get(f"/api/v1/answers/{answer['id']}")
    assert trace.status_code == 200, trace.text
    made = trace.json()
    assert made["answer"] == answer["answer"] and made["collections"] == ["alpha"]
    assert [c["n"] for c in made["citations"]] == [c["n"] for c in answer["citations"]]


def test_another_collection_is_refused_like_a_missing_one(alpha):
    url, key, objects = alpha
    bravo_doc = objects["bravo"]["document"]

    async def go():
        async with over_http(url, key) as client:
            search = await client.call_tool("search", {"query": "launch code", "collections": ["bravo"]})
            document = await client.call_tool("get_document", {"document_id": bravo_doc})
            try:
                await client.read_resource(f"appliance://documents/{bravo_doc}")
            except Exception as exc:  # the SDK raises the server's JSON-RPC error
                resource_error = str(exc)
            else:
                resource_error = ""
            return search, document, resource_error

    search, document, resource_error = run(go())
    assert search.is_error and "(404)" in search.content[0].text
    assert document.is_error and "(404)" in document.content[0].text
    assert "OKAPI" not in search.content[0].text + document.content[0].text
    assert "404" in resource_error or "not found" in resource_error.lower()


def test_the_http_transport_needs_a_key(isolation_world):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    srv = isolation_world.srv
    assert httpx.post(f"{srv.url}/mcp", json=body).status_code == 401
    wrong = httpx.post(f"{srv.url}/mcp", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_stdio_serves_the_key_it_was_given(isolation_world):
    srv = isolation_world.srv
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "appliance", "mcp", "--url", srv.url, "--key", isolation_world.keys["bravo"]],
        cwd=str(REPO),
    )

    async def go():
        async with Client(params) as client:
            tools = (await client.list_tools()).tools
            hits = result(await client.call_tool("search", {"query": "launch code"}))
            refused = await client.call_tool("search", {"query": "launch code", "collections": ["alpha"]})
            return tools, hits, refused

    tools, hits, refused = run(go())
    assert {t.name for t in tools} == TOOLS
    assert {h["collection"] for h in hits["hits"]} == {"bravo"} and "OKAPI-9902" in hits["hits"][0]["text"]
    assert refused.is_error and "(404)" in refused.content[0].text
