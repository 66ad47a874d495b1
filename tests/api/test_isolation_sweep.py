"""The isolation sweep: every operation of /schema/openapi.json, tried across collections and keys.

Two user keys, each on its own collection with a document, a job, a conversation and a git
source (the world of tests/api/conftest.py, shared with test_isolation.py). Every operation that names an object in its path (an id or a name) is called by each
key with the other key's object, and every operation that takes a collection (query or body) is
called with the other key's collection: the answer is the answer for a missing object (404, or
403 where the operation is admin-only, the same for a name that exists nowhere), and never holds
the other collection's text. Every operation answers 401 without a key, except the probes and
the HMAC-checked webhook.

Operations join by being in the schema: a path parameter this file cannot fill, or a body it
cannot build, fails the sweep with what to add, so a new route is never skipped silently.
tests/api/test_isolation.py checks the same rule through search hits, answers and listings.
"""

from __future__ import annotations

import httpx
import pytest

from tests.api.conftest import SECRETS
from tests.conftest import ServerProcess

OTHER = {"alpha": "bravo", "bravo": "alpha"}
# Answered without a key: the probes, and the webhook, which is authenticated by its HMAC signature.
OPEN = {"GET /healthz", "GET /readyz", "POST /api/v1/webhooks/github"}
# Path parameter -> which of the owner's objects fills it. Add a line here for a new one.
FILLERS = {
    "document_id": "document",
    "job_id": "job",
    "conversation_id": "conversation",
    "name": "source",
    "key_id": "key",
    "answer_id": "answer",
    "run_id": "run",
    "alias": "alias",
    "workflow_run_id": "workflow_run",
    "approval_id": "approval",
    "collection": "collection",
    "config_id": "run",  # the planner's (admin-only, no collection): any id; a user key gets 403 either way
    "validation_id": "run",  # the planner's too
}
# Bodies for operations whose smallest schema-valid body would be refused before the
# collection is looked at; other operations get their required fields with placeholder values.
BODIES = {
    "POST /api/v1/documents": {"text": "a new document"},
    "POST /api/v1/documents/batch": {"documents": [{"text": "a new document"}]},
    "POST /api/v1/knowledge/search": {"query": "launch code"},
    "POST /api/v1/knowledge/query": {"query": "What is the launch code?"},
    "POST /api/v1/conversations/{conversation_id}/messages": {"content": "What is the launch code?"},
    "POST /api/v1/sources": {"name": "another", "location": "/nonexistent"},
}
MISSING = {
    "document": "00000000-0000-0000-0000-000000000000",
    "job": "job_00000000000000000000",
    "conversation": "conv_missing",
    "source": "missing-source",
    "key": "key_missing",
    "answer": "ans_00000000000000000000",
    "run": "run_0000000000000000",
    "alias": "missing-alias",
    "workflow_run": "wfr_00000000000000000000",
    "approval": "apr_00000000000000000000",
    "collection": "missing-collection",
}


@pytest.fixture(scope="module")
def world(isolation_world):
    srv = isolation_world.srv
    with srv.client() as admin:
        schema = admin.get("/schema/openapi.json").json()
    return srv, schema, isolation_world.objects, isolation_world.keys


def _client(srv: ServerProcess, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=srv.url, headers=headers, timeout=60)


def _operations(schema: dict):
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield method.upper(), path, op


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _placeholder(schema: dict, node: dict):
    node = _resolve(schema, node)
    for option in node.get("oneOf", node.get("anyOf", [])):
        if _resolve(schema, option).get("type") != "null":
            return _placeholder(schema, option)
    if "enum" in node:
        return node["enum"][0]
    kind = node.get("type")
    kind = next((k for k in kind if k != "null"), None) if isinstance(kind, list) else kind
    if kind == "object":
        return {
            name: _placeholder(schema, prop)
            for name, prop in node.get("properties", {}).items()
            if name in node.get("required", [])
        }
    return {"string": "x", "integer": 1, "number": 1, "boolean": False, "array": []}.get(kind)


def _body(schema: dict, label: str, op: dict) -> dict | None:
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    body = _placeholder(schema, content["application/json"]["schema"])
    return {**body, **BODIES.get(label, {})} if isinstance(body, dict) else body


def _json_fields(schema: dict, op: dict) -> set[str]:
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    return set(_resolve(schema, content["schema"]).get("properties", {})) if content else set()


def _path(path: str, fill: dict[str, str]) -> str:
    for name, value in fill.items():
        path = path.replace("{" + name + "}", value)
    return path


def _fill(path: str, objects: dict[str, str]) -> dict[str, str]:
    params = [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]
    unknown = [p for p in params if p not in FILLERS]
    assert not unknown, f"{path}: add a filler for path parameter(s) {unknown} to FILLERS in {__file__}"
    return {p: objects[FILLERS[p]] for p in params}


def _refused_alike(foreign: httpx.Response, missing: httpx.Response, where: str, secret: str) -> str | None:
    """None when the foreign object was answered exactly like a missing one."""
    if secret in foreign.text:
        return f"{where}: {foreign.status_code} holds the other collection's text"
    if foreign.status_code not in (403, 404):
        return f"{where}: {foreign.status_code} (expected 404, or 403 if admin-only): {foreign.text[:200]}"
    if foreign.status_code != missing.status_code:
        return f"{where}: {foreign.status_code} for the other key's object, {missing.status_code} for a missing one"
    return None


def test_objects_of_another_collection_look_missing_on_every_route(world):
    srv, schema, objects, keys = world
    problems, tried = [], 0
    for caller, key in keys.items():
        other = objects[OTHER[caller]]
        secret = SECRETS[OTHER[caller]]
        with _client(srv, key) as client:
            for method, path, op in _operations(schema):
                if "{" not in path:
                    continue
                label = f"{method} {path}"
                foreign = _fill(path, other)
                missing = {p: MISSING[FILLERS[p]] for p in foreign}
                body = _body(schema, label, op)
                answers = [
                    client.request(method, _path(path, fill), json=body) for fill in (foreign, missing)
                ]
                tried += 1
                problem = _refused_alike(*answers, f"{label} by {caller}'s key", secret)
                if problem:
                    problems.append(problem)
    assert tried >= 2 * 10, tried
    assert not problems, "\n".join(problems)
    # The foreign deletes, cancels and syncs changed nothing: each owner still has its objects.
    for coll, key in keys.items():
        with _client(srv, key) as owner:
            assert owner.get(f"/api/v1/documents/{objects[coll]['document']}").status_code == 200
            assert owner.get(f"/api/v1/conversations/{objects[coll]['conversation']}").status_code == 200
            assert owner.get(f"/api/v1/jobs/{objects[coll]['job']}").json()["state"] == "succeeded"
            assert owner.get(f"/api/v1/sources/{objects[coll]['source']}").status_code == 200
            assert owner.get(f"/api/v1/runs/{objects[coll]['workflow_run']}").json()["state"] == "waiting"
            assert owner.get(f"/api/v1/approvals/{objects[coll]['approval']}").json()["state"] == "pending"


def test_collections_of_another_key_look_missing_on_every_route(world):
    srv, schema, objects, keys = world
    problems, tried = [], 0
    for caller, key in keys.items():
        other, secret = OTHER[caller], SECRETS[OTHER[caller]]
        with _client(srv, key) as client:
            for method, path, op in _operations(schema):
                label = f"{method} {path}"
                own = _path(path, _fill(path, objects[caller]))
                query = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
                fields = _json_fields(schema, op)
                for where, name in (("query", "collection"), ("body", "collection"), ("body", "collections")):
                    if name not in (query if where == "query" else fields):
                        continue
                    answers = []
                    for coll in (other, "no-such-collection"):
                        value = [coll] if name == "collections" else coll
                        body = _body(schema, label, op)
                        if where == "body":
                            body = {**(body or {}), name: value}
                        params = {name: value} if where == "query" else None
                        answers.append(client.request(method, own, params=params, json=body))
                    tried += 1
                    problem = _refused_alike(
                        *answers, f"{label} {where} {name}={other} by {caller}'s key", secret
                    )
                    if problem:
                        problems.append(problem)
    assert tried >= 2 * 8, tried
    assert not problems, "\n".join(problems)


def test_every_route_but_the_probes_and_the_webhook_needs_a_key(world):
    srv, schema, objects, _ = world
    operations = list(_operations(schema))
    assert {f"{m} {p}" for m, p, _ in operations} >= OPEN, "an open route left the schema: update OPEN"
    problems = []
    with _client(srv, None) as anonymous:
        for method, path, op in operations:
            label = f"{method} {path}"
            if label in OPEN:
                continue
            url = _path(path, _fill(path, objects["alpha"]))
            answer = anonymous.request(method, url, json=_body(schema, label, op))
            if answer.status_code != 401 or SECRETS["alpha"] in answer.text:
                problems.append(f"{label}: {answer.status_code} without a key")
            bad = anonymous.request(
                method, url, json=_body(schema, label, op), headers={"Authorization": "Bearer apk_wrong"}
            )
            if bad.status_code != 401:
                problems.append(f"{label}: {bad.status_code} with a wrong key")
        # The schema itself is a route too.
        if anonymous.get("/schema/openapi.json").status_code != 401:
            problems.append("GET /schema/openapi.json answers without a key")
        for label in OPEN - {"POST /api/v1/webhooks/github"}:
            assert anonymous.get(label.split()[1]).status_code == 200, label
    assert not problems, "\n".join(problems)
