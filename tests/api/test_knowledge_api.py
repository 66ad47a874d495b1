"""The REST API end to end against a live server: documents in, search out, errors, auth."""

from __future__ import annotations

import base64
import io
import zipfile

import httpx
import pytest

from tests.conftest import wait_job

POLICY = """# Travel policy

## Per diems

Employees travelling in Europe receive a per diem of 75 EUR a day for meals.

## Booking

Flights over six hours may be booked in business class.
"""

ROTATION = """# Key rotation

Rotate API keys every 90 days. Create the new key, deploy it, then revoke the old key.
"""


@pytest.fixture(scope="module")
def docs(api):
    assert api.post("/api/v1/collections", json={"name": "docs"}).status_code == 201
    assert api.post("/api/v1/collections", json={"name": "other"}).status_code == 201
    r = api.post(
        "/api/v1/documents/batch",
        params={"wait": "true"},
        json={
            "collection": "docs",
            "documents": [
                {"source_id": "travel.md", "text": POLICY, "metadata": {"team": "finance"}},
                {"source_id": "keys.md", "text": ROTATION, "metadata": {"team": "security"}},
            ],
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["job"]["state"] == "succeeded"
    r = api.post(
        "/api/v1/documents",
        params={"wait": "true"},
        json={
            "collection": "other",
            "source_id": "secret.md",
            "text": "The vault code for per diems is 4711.",
        },
    )
    assert r.status_code == 200, r.text
    return body["document_ids"]


def test_health_probes_need_no_key(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


@pytest.mark.parametrize("path", ["/api/v1/collections", "/api/v1/documents", "/schema/openapi.json"])
def test_every_other_route_needs_a_key(server, path):
    missing = httpx.get(f"{server.url}{path}")
    assert missing.status_code == 401
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert "Bearer" in missing.json()["detail"]
    wrong = httpx.get(f"{server.url}{path}", headers={"Authorization": "Bearer apk_not-a-real-key"})
    assert wrong.status_code == 401


def test_admin_key_file_is_private(server):
    assert (server.data_dir / "admin.key").stat().st_mode & 0o777 == 0o600


def test_search_finds_the_right_chunk_with_location(api, docs):
    for mode in ("keyword", "semantic", "hybrid"):
        r = api.post(
            "/api/v1/knowledge/search",
            json={"query": "how much is the per diem in Europe", "collections": ["docs"], "mode": mode},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        top = body["hits"][0]
        assert top["source_id"] == "travel.md", (mode, body["hits"])
        assert "75 EUR" in top["text"]
        assert top["location"]["heading_path"][-1] == "Per diems"
        assert top["metadata"] == {"team": "finance"}
        assert body["mode"] == mode and body["timings"]["total_ms"] > 0


def test_search_never_crosses_collections(api, docs):
    hits = api.post(
        "/api/v1/knowledge/search", json={"query": "vault code per diems", "collections": ["docs"]}
    ).json()["hits"]
    assert hits and all(h["collection"] == "docs" for h in hits)
    assert all("4711" not in h["text"] for h in hits)


def test_metadata_filter(api, docs):
    r = api.post(
        "/api/v1/knowledge/search",
        json={"query": "keys", "collections": ["docs"], "filters": {"team": "finance"}},
    )
    assert {h["source_id"] for h in r.json()["hits"]} == {"travel.md"}


def test_document_read_list_and_chunks(api, docs):
    doc = api.get(f"/api/v1/documents/{docs[0]}", params={"chunks": "true"}).json()
    assert doc["source_id"] == "travel.md" and doc["collection"] == "docs"
    assert doc["content_hash"].startswith("sha256:")
    assert [c["ordinal"] for c in doc["chunks"]] == list(range(len(doc["chunks"])))
    listing = api.get("/api/v1/documents", params={"collection": "docs"}).json()
    assert listing["total"] == 2 and {d["source_id"] for d in listing["documents"]} == {
        "travel.md",
        "keys.md",
    }


def test_reingest_unchanged_is_a_noop_and_changed_replaces(api, docs):
    before = api.get(f"/api/v1/documents/{docs[1]}", params={"chunks": "true"}).json()
    r = api.post(
        "/api/v1/documents",
        params={"wait": "true"},
        json={"collection": "docs", "source_id": "keys.md", "text": ROTATION},
    )
    job = r.json()["job"]
    assert job["progress"]["unchanged"] == 1 and job["progress"]["indexed"] == 0
    same = api.get(f"/api/v1/documents/{docs[1]}", params={"chunks": "true"}).json()
    assert [c["chunk_id"] for c in same["chunks"]] == [c["chunk_id"] for c in before["chunks"]]

    changed = ROTATION.replace("90 days", "30 days") + "\nHardware tokens replace passwords for admins.\n"
    r = api.post(
        "/api/v1/documents",
        params={"wait": "true"},
        json={"collection": "docs", "source_id": "keys.md", "text": changed},
    )
    assert r.json()["document_ids"] == [docs[1]]
    after = api.get(f"/api/v1/documents/{docs[1]}", params={"chunks": "true"}).json()
    assert not {c["chunk_id"] for c in after["chunks"]} & {c["chunk_id"] for c in before["chunks"]}
    hits = api.post(
        "/api/v1/knowledge/search",
        json={"query": "hardware tokens", "collections": ["docs"], "mode": "keyword"},
    ).json()["hits"]
    assert hits[0]["source_id"] == "keys.md"
    old = api.post(
        "/api/v1/knowledge/search", json={"query": "90 days", "collections": ["docs"], "mode": "keyword"}
    ).json()["hits"]
    assert all("90 days" not in h["text"] for h in old)


def test_delete_removes_from_both_indexes(api):
    r = api.post(
        "/api/v1/documents",
        params={"wait": "true"},
        json={"collection": "other", "source_id": "gone.md", "text": "Zebra crossings are painted weekly."},
    )
    doc_id = r.json()["document_ids"][0]
    for mode in ("keyword", "semantic"):
        hits = api.post(
            "/api/v1/knowledge/search",
            json={"query": "zebra crossings painted", "collections": ["other"], "mode": mode},
        ).json()["hits"]
        assert hits[0]["document_id"] == doc_id
    assert api.delete(f"/api/v1/documents/{doc_id}").status_code == 200
    for mode in ("keyword", "semantic"):
        hits = api.post(
            "/api/v1/knowledge/search",
            json={"query": "zebra crossings painted", "collections": ["other"], "mode": mode},
        ).json()["hits"]
        assert all(h["document_id"] != doc_id for h in hits)
    assert api.get(f"/api/v1/documents/{doc_id}").status_code == 404
    assert api.delete(f"/api/v1/documents/{doc_id}").status_code == 404


def test_multipart_upload_of_a_docx(api):
    docx = pytest.importorskip("docx")
    document = docx.Document()
    document.add_heading("Parking rules", level=1)
    document.add_paragraph("Visitors park on level minus two and register at reception.")
    buf = io.BytesIO()
    document.save(buf)
    r = api.post(
        "/api/v1/documents",
        params={"wait": "true"},
        data={"collection": "docs", "metadata": '{"kind": "rules"}'},
        files={"file": ("parking.docx", buf.getvalue(), "application/octet-stream")},
    )
    assert r.status_code == 200, r.text
    doc = api.get(f"/api/v1/documents/{r.json()['document_ids'][0]}").json()
    assert doc["mime_type"].endswith("wordprocessingml.document") and doc["source_kind"] == "upload"
    hits = api.post(
        "/api/v1/knowledge/search", json={"query": "where do visitors park", "collections": ["docs"]}
    ).json()["hits"]
    assert hits[0]["source_id"] == "parking.docx"


def test_bad_inputs_get_clear_errors_and_the_server_stays_up(api):
    cases = [
        # empty file
        (dict(data={"collection": "docs"}, files={"file": ("empty.txt", b"", "text/plain")}), 400, "empty"),
        # binary renamed .pdf
        (
            dict(
                data={"collection": "docs"},
                files={"file": ("fake.pdf", bytes(range(256)) * 8, "application/pdf")},
            ),
            415,
            "fake.pdf",
        ),
        # unknown collection
        (dict(json={"collection": "nope", "text": "hello"}), 404, "nope"),
        # malformed JSON and wrong types
        (dict(content=b"{not json", headers={"content-type": "application/json"}), 400, "JSON"),
        (dict(json={"collection": "docs", "text": 42}), 400, "text"),
        (dict(json={"collection": "docs", "content_base64": "%%%", "filename": "x.pdf"}), 400, "base64"),
        (dict(json={"collection": "docs"}), 400, "text"),
    ]
    for kwargs, status, needle in cases:
        r = api.post("/api/v1/documents", **kwargs)
        assert r.status_code == status, (kwargs, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert needle.lower() in r.json()["detail"].lower(), r.json()
    # A malformed PDF passes sniffing (it starts like one) and fails in the job, with a reason.
    r = api.post(
        "/api/v1/documents",
        params={"wait": "true"},
        data={"collection": "docs"},
        files={
            "file": (
                "broken.pdf",
                b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\ntrailer garbage",
                "application/pdf",
            )
        },
    )
    assert r.status_code == 422, r.text
    assert "broken.pdf" in r.json()["detail"]
    job = api.get(f"/api/v1/jobs/{r.json()['job_id']}", params={"items": "true"}).json()
    assert job["state"] == "failed" and job["items"][0]["error"]
    # a zip that is no DOCX
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("hello.txt", "hi")
    r = api.post(
        "/api/v1/documents",
        params={"wait": "true"},
        data={"collection": "docs"},
        files={"file": ("notreally.docx", buf.getvalue(), "application/octet-stream")},
    )
    assert r.status_code in (415, 422), r.text
    assert api.get("/healthz").status_code == 200


def test_body_limits(server, tmp_path):
    srv_url = server.url
    huge = {"collection": "docs", "text": "x" * (70 * 1024 * 1024)}
    r = httpx.post(
        f"{srv_url}/api/v1/documents",
        json=huge,
        headers={"Authorization": f"Bearer {server.key}"},
        timeout=120,
    )
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("application/problem+json")
    one_too_big = base64.b64encode(b"a" * (33 * 1024 * 1024)).decode()
    r = httpx.post(
        f"{srv_url}/api/v1/documents",
        json={"collection": "docs", "content_base64": one_too_big, "filename": "a.txt"},
        headers={"Authorization": f"Bearer {server.key}"},
        timeout=120,
    )
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert httpx.get(f"{srv_url}/healthz").status_code == 200


def test_search_validation(api, docs):
    assert api.post("/api/v1/knowledge/search", json={"query": "x", "mode": "fuzzy"}).status_code == 400
    assert api.post("/api/v1/knowledge/search", json={"query": "   "}).status_code == 400
    assert api.post("/api/v1/knowledge/search", json={"query": "x", "top_k": 0}).status_code == 400
    assert (
        api.post("/api/v1/knowledge/search", json={"query": "x", "collections": ["missing"]}).status_code
        == 404
    )
    assert api.post("/api/v1/knowledge/search", json={"query": "x", "rerank": True}).status_code == 400
    hostile = api.post(
        "/api/v1/knowledge/search", json={"query": 'title:"(unbalanced AND OR [', "mode": "keyword"}
    )
    assert hostile.status_code == 200


def test_collections(api, docs):
    rows = {c["name"]: c for c in api.get("/api/v1/collections").json()}
    assert rows["docs"]["documents"] >= 2 and rows["docs"]["chunks"] >= 2
    assert api.post("/api/v1/collections", json={"name": "docs"}).status_code == 409
    bad = api.post("/api/v1/collections", json={"name": "Bad Name!"})
    assert bad.status_code == 400 and "collection name" in bad.json()["detail"]


def test_jobs_listing_and_unknown(api, docs):
    jobs = api.get("/api/v1/jobs").json()
    assert jobs and all({"id", "state", "progress"} <= set(j) for j in jobs)
    assert api.get("/api/v1/jobs/job_missing").status_code == 404


def test_openapi_schema_documents_the_routes(api):
    spec = api.get("/schema/openapi.json").json()
    for path in (
        "/api/v1/documents",
        "/api/v1/documents/batch",
        "/api/v1/knowledge/search",
        "/api/v1/collections",
        "/api/v1/jobs/{job_id}",
        "/healthz",
        "/readyz",
    ):
        assert path in spec["paths"], path
    body = spec["paths"]["/api/v1/documents"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)


def _answer_schema(spec: dict, path: str, method: str) -> dict:
    """The schema of an operation's success answer, with a component reference resolved."""
    operation = spec["paths"][path][method]
    status = next(s for s in operation["responses"] if s.startswith("2"))
    schema = operation["responses"][status]["content"]["application/json"]["schema"]
    if "items" in schema:
        schema = schema["items"]
    return spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]


@pytest.mark.parametrize(
    "path, method, fields",
    [
        ("/api/v1/jobs/{job_id}", "get", {"id", "state", "progress", "items"}),
        ("/api/v1/jobs", "get", {"id", "kind", "collection", "source"}),
        ("/api/v1/documents/{document_id}", "get", {"id", "content_hash", "chunks"}),
        ("/api/v1/documents", "get", {"documents", "total", "limit", "offset"}),
        ("/api/v1/collections", "get", {"name", "documents", "chunks"}),
        ("/api/v1/knowledge/search", "post", {"hits", "timings", "mode"}),
        ("/api/v1/knowledge/query", "post", {"answer", "citations", "invalid_citations", "usage"}),
        ("/api/v1/conversations/{conversation_id}", "get", {"id", "title", "messages"}),
        ("/api/v1/sources", "get", {"sources"}),
        ("/api/v1/sources/{name}", "get", {"name", "kind", "state", "last_error"}),
        ("/api/v1/quarantine", "get", {"files"}),
        ("/api/v1/keys", "get", {"id", "role", "collections", "revoked_at"}),
        ("/api/v1/keys", "post", {"id", "key", "role"}),
    ],
)
def test_openapi_schema_documents_each_answer(api, path, method, fields):
    """Every answer is a record (appliance/records.py), so the document names its fields."""
    properties = _answer_schema(api.get("/schema/openapi.json").json(), path, method)["properties"]
    assert fields <= set(properties), sorted(set(fields) - set(properties))


def test_openapi_key_listing_never_shows_a_secret(api):
    spec = api.get("/schema/openapi.json").json()
    assert "key" not in _answer_schema(spec, "/api/v1/keys", "get")["properties"]


def test_submit_returns_202_and_job_progress(api):
    r = api.post(
        "/api/v1/documents/batch",
        json={
            "collection": "other",
            "documents": [
                {"source_id": f"n{i}", "text": f"Note number {i} about topic {i % 3}."} for i in range(40)
            ],
        },
    )
    assert r.status_code == 202
    body = r.json()
    assert len(body["document_ids"]) == 40
    job = wait_job(api, body["job_id"])
    assert (
        job["state"] == "succeeded"
        and job["progress"]["indexed"] == 40
        and job["progress"]["fraction"] == 1.0
    )
