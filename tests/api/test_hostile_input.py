"""Hostile and careless input answers a clear 400 (problem details, or OpenAI's envelope on /v1),
never a 500: each case here was a 500, or an accepted bad name, in an outside probe (issue 21).

In-process: the real Appliance over a temp dir, served by its real ASGI app through Litestar's
test client, so routing, the request door, the error handlers and the stores are all real.
"""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from appliance.api.app import create_app
from appliance.config import load_settings
from appliance.core import Appliance

DEPTHS = (1_000, 100_000)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    data = tmp_path_factory.mktemp("hostile") / "data"
    settings = load_settings(
        overrides={"data_dir": str(data), "llm": {"load_at_start": False}, "dropfolder": {"enabled": False}},
        environ={},
    )
    appliance = Appliance(settings)
    appliance.start()
    try:
        with TestClient(create_app(appliance)) as test_client:
            test_client.headers["Authorization"] = f"Bearer {appliance.admin_key_path.read_text().strip()}"
            assert test_client.post("/api/v1/collections", json={"name": "docs"}).status_code == 201
            yield test_client
    finally:
        appliance.close()


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _json(client: TestClient, path: str, raw: str | bytes):
    return client.post(path, content=raw, headers={"content-type": "application/json"})


def _problem(response, *words: str) -> dict:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 400 and all(w in body["detail"] for w in words), body
    return body


def _openai_error(response, *words: str) -> dict:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and all(w in error["message"] for w in words), error
    return error


@pytest.mark.parametrize("value", [True, 5, {"text": "x"}])
def test_embeddings_input_of_the_wrong_type_is_a_400_naming_input(client, value):
    error = _openai_error(client.post("/v1/embeddings", json={"model": "default", "input": value}))
    assert error["param"] == "input"


@pytest.mark.parametrize("path", ["/api/v1/documents", "/api/v1/audit"])
def test_an_offset_past_any_bigint_is_a_400_naming_it(client, path):
    body = _problem(client.get(path, params={"offset": "99999999999999999999"}), "offset")
    assert body["errors"][0]["key"] == "offset"
    assert client.get(path, params={"offset": "5"}).status_code == 200


@pytest.mark.parametrize("depth", DEPTHS)
def test_deeply_nested_json_is_a_400_wherever_it_comes_in(client, depth):
    nested = _nested(depth)
    _problem(
        _json(client, "/api/v1/documents", f'{{"collection":"docs","text":"x","metadata":{{"a":{nested}}}}}'),
        "nested",
        "limits.max_json_depth",
    )
    _problem(
        _json(
            client,
            "/api/v1/documents/batch",
            f'{{"collection":"docs","documents":[{{"text":"x","metadata":{nested}}}]}}',
        ),
        "nested",
    )
    _problem(
        _json(client, "/api/v1/knowledge/search", f'{{"query":"heron","filters":{{"a":{nested}}}}}'), "nested"
    )
    upload = client.post(
        "/api/v1/documents",
        data={"collection": "docs", "metadata": f'{{"a":{nested}}}'},
        files={"file": ("notes.txt", b"some notes", "text/plain")},
    )
    _problem(upload, "metadata", "nested")
    chat = f'{{"model":"default","messages":[{{"role":"user","content":[{{"type":"text","text":"hi","x":{nested}}}]}}]}}'
    _openai_error(_json(client, "/v1/chat/completions", chat), "nested")


def test_nesting_within_the_bound_passes_the_door(client):
    # (The bound itself, as a unit: tests/test_json_input.py.)
    found = client.post(
        "/api/v1/knowledge/search",
        json={"query": "heron", "mode": "keyword", "filters": {"a": [[[["deep", {"b": [1, 2]}]]]]}},
    )
    assert found.status_code == 200, found.text


def test_invalid_utf8_in_a_json_body_is_a_400(client):
    _problem(_json(client, "/api/v1/knowledge/search", b'{"query":"\xff\xfe heron"}'), "UTF-8")
    _problem(_json(client, "/api/v1/documents", b'{"collection":"docs","text":"\xc3\x28"}'), "UTF-8")
    chat = b'{"model":"default","messages":[{"role":"user","content":"\xff"}]}'
    _openai_error(_json(client, "/v1/chat/completions", chat), "UTF-8")
    upload = client.post(
        "/api/v1/documents",
        data={"collection": "docs"},
        files={"file": ("x.txt", b"x", "text/plain"), "metadata": (None, b'{"a":"\xff"}')},
    )
    _problem(upload, "UTF-8")


def test_a_search_filter_with_an_empty_key_is_a_400(client):
    # (What every other key means: tests/db/test_catalog_filters.py.)
    _problem(
        client.post("/api/v1/knowledge/search", json={"query": "heron", "filters": {"": "x"}}), "filters"
    )


@pytest.mark.parametrize("name", ["abc\n", "abc\r\n", "a" * 65, "Abc", ""])
def test_a_collection_name_outside_the_rule_is_refused(client, name):
    _problem(client.post("/api/v1/collections", json={"name": name}), "collection name")
    assert name not in {c["name"] for c in client.get("/api/v1/collections").json()}


@pytest.mark.parametrize("name", ["ok\n", "a" * 80, "../up", ".hidden"])
def test_a_backup_name_outside_the_rule_is_refused(client, name):
    _problem(client.post("/api/v1/admin/backup", json={"name": name}), "backup name")


def test_key_limits_beyond_their_column_are_a_400(client):
    created = client.post(
        "/api/v1/keys", json={"name": "big", "role": "user", "collections": ["docs"], "rpm": 2**31}
    )
    _problem(created, "rpm")


def test_a_document_body_is_still_checked_after_the_door(client):
    # create_document decodes its JSON body through the request door, then checks its shape.
    _problem(_json(client, "/api/v1/documents", b'{"collection": '), "not valid JSON")
    _problem(client.post("/api/v1/documents", json={"collection": "docs", "text": 5}), "malformed document")
