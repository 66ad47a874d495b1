"""Object-level isolation: a user key sees only its collections, on every route."""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import SECRETS

SECRET_A, SECRET_B = SECRETS["alpha"], SECRETS["bravo"]


@pytest.fixture(scope="module")
def world(isolation_world):
    """The shared world (tests/api/conftest.py), as (server, {collection: {doc, job}}, {collection: key})."""
    ids = {c: {"doc": o["document"], "job": o["job"]} for c, o in isolation_world.objects.items()}
    return isolation_world.srv, ids, isolation_world.keys


def _client(srv, key):
    return httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)


def test_user_key_reaches_only_its_collection(world):
    srv, ids, keys = world
    with _client(srv, keys["alpha"]) as a:
        # its own objects work
        assert a.get(f"/api/v1/documents/{ids['alpha']['doc']}").status_code == 200
        assert a.get(f"/api/v1/jobs/{ids['alpha']['job']}").status_code == 200
        # the other collection's objects look like missing ones
        assert a.get(f"/api/v1/documents/{ids['bravo']['doc']}").status_code == 404
        assert a.delete(f"/api/v1/documents/{ids['bravo']['doc']}").status_code == 404
        assert a.get(f"/api/v1/jobs/{ids['bravo']['job']}").status_code == 404
        assert a.get("/api/v1/documents", params={"collection": "bravo"}).status_code == 404
        assert (
            a.post(
                "/api/v1/knowledge/search", json={"query": "launch code", "collections": ["bravo"]}
            ).status_code
            == 404
        )
        assert (
            a.post(
                "/api/v1/knowledge/query", json={"query": "launch code", "collections": ["bravo"]}
            ).status_code
            == 404
        )
        assert a.post("/api/v1/documents", json={"collection": "bravo", "text": "x"}).status_code == 404
        assert a.post("/api/v1/conversations", json={"collections": ["bravo"]}).status_code == 404
        assert [c["name"] for c in a.get("/api/v1/collections").json()] == ["alpha"]
        assert {d["collection"] for d in a.get("/api/v1/documents").json()["documents"]} == {"alpha"}
        assert all(j["collection"] == "alpha" for j in a.get("/api/v1/jobs").json())
        # admin-only routes are refused
        assert a.post("/api/v1/collections", json={"name": "new"}).status_code == 403
        assert a.get("/api/v1/keys").status_code == 403
        assert a.post("/api/v1/keys", json={"name": "x", "role": "admin"}).status_code == 403


def test_no_text_leaks_into_hits_answers_or_citations(world):
    srv, ids, keys = world
    with _client(srv, keys["alpha"]) as a:
        hits = a.post("/api/v1/knowledge/search", json={"query": "bravo launch code OKAPI"}).json()["hits"]
        assert hits and all(h["collection"] == "alpha" and "OKAPI" not in h["text"] for h in hits)
        answer = a.post("/api/v1/knowledge/query", json={"query": "What is the bravo launch code?"}).json()
        assert "OKAPI" not in answer["answer"] and "9902" not in answer["answer"]
        assert all(c["source_id"] == "alpha.md" for c in answer["citations"])


def test_conversations_belong_to_their_key(world):
    srv, ids, keys = world
    with _client(srv, keys["alpha"]) as a, _client(srv, keys["bravo"]) as b:
        conv = a.post("/api/v1/conversations", json={}).json()
        assert b.get(f"/api/v1/conversations/{conv['id']}").status_code == 404
        assert (
            b.post(f"/api/v1/conversations/{conv['id']}/messages", json={"content": "hi"}).status_code == 404
        )
        assert b.delete(f"/api/v1/conversations/{conv['id']}").status_code == 404
        assert conv["id"] not in {c["id"] for c in b.get("/api/v1/conversations").json()}
        assert a.get(f"/api/v1/conversations/{conv['id']}").status_code == 200


def test_revoked_key_stops_working(world):
    srv, _, _ = world
    with srv.client() as admin:
        k = admin.post("/api/v1/keys", json={"name": "temp", "role": "user", "collections": ["alpha"]}).json()
        with _client(srv, k["key"]) as t:
            assert t.get("/api/v1/collections").status_code == 200
            assert admin.delete(f"/api/v1/keys/{k['id']}").json()["revoked_at"]
            assert t.get("/api/v1/collections").status_code == 401
        listed = {r["id"]: r for r in admin.get("/api/v1/keys").json()}
        assert listed[k["id"]]["revoked_at"] and "key" not in listed[k["id"]]
