"""Git sources and GitHub webhooks against a live server, with a real repository made in a temp dir."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from appliance.cli import main as cli_main
from tests.conftest import ServerProcess, wait_job

SECRET = "s3cret-for-tests"


def git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "Ada",
        "GIT_AUTHOR_EMAIL": "ada@example.org",
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.org",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, env=env, text=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("repos") / "handbook"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "docs").mkdir()
    (path / "docs" / "onboarding.md").write_text("# Onboarding\n\nNew hires get a laptop on day one.\n")
    (path / "docs" / "security.md").write_text("# Security\n\nRotate your SSH keys every year.\n")
    (path / "src").mkdir()
    (path / "src" / "tool.py").write_text('def rotate_keys():\n    """Rotate the signing keys."""\n')
    (path / "assets").mkdir()
    (path / "assets" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (path / "deploy.pem").write_text("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {
        "APPLIANCE_WEBHOOKS__GITHUB_SECRET": SECRET,
        "APPLIANCE_WEBHOOKS__MAX_BODY_BYTES": "200000",
        "APPLIANCE_DROPFOLDER__ENABLED": "false",
    }
    srv = ServerProcess(tmp_path_factory.mktemp("gitsrc") / "data", env=env).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api(server):
    with server.client() as client:
        yield client


def docs(api, collection: str) -> dict[str, dict]:
    response = api.get("/api/v1/documents", params={"collection": collection, "limit": 500})
    return {d["source_id"]: d for d in response.json()["documents"]} if response.status_code == 200 else {}


def sync(api, name: str) -> dict:
    response = api.post(f"/api/v1/sources/{name}/sync")
    assert response.status_code == 202, response.text
    job = wait_job(api, response.json()["job_id"])
    assert job["state"] == "succeeded", job
    for ingest in job["summary"]["jobs"]:
        assert wait_job(api, ingest)["state"] in ("succeeded", "failed")
    return job


def test_add_and_first_sync(api, repo):
    response = api.post(
        "/api/v1/sources",
        json={
            "name": "handbook",
            "location": str(repo),
            "collection": "eng",
            "branch": "main",
            "schedule": "daily",
            "exclude": ["src/**"],
            "github_repo": "acme/handbook",
        },
    )
    assert response.status_code == 201, response.text
    job = sync(api, "handbook")
    assert job["summary"]["full"] is True
    assert set(docs(api, "eng")) == {"git:handbook:docs/onboarding.md", "git:handbook:docs/security.md"}
    quarantine = {
        q["path"]: q for q in api.get("/api/v1/quarantine", params={"source": "handbook"}).json()["files"]
    }
    assert quarantine["deploy.pem"]["kind"] == "sensitive"
    assert (
        quarantine["assets/logo.png"]["kind"] == "unsupported"
        and "PNG" in quarantine["assets/logo.png"]["reason"]
    )
    listed = {s["name"]: s for s in api.get("/api/v1/sources").json()["sources"]}["handbook"]
    assert listed["documents"] >= 2 and listed["schedule"] == "daily" and listed["state"] == "ok"
    assert listed["cursor"] == git(repo, "rev-parse", "HEAD")


def test_incremental_sync_follows_changes_deletions_and_renames(api, repo):
    (repo / "docs" / "onboarding.md").write_text(
        "# Onboarding\n\nNew hires get a badge and a laptop on day one.\n"
    )
    git(repo, "rm", "-q", "docs/security.md")
    git(repo, "mv", "docs/onboarding.md", "docs/welcome.md")
    (repo / "docs" / "holidays.md").write_text(
        "# Holidays\n\nThe office closes between Christmas and New Year.\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "reorganise")
    job = sync(api, "handbook")
    assert job["summary"]["full"] is False
    current = docs(api, "eng")
    assert set(current) == {"git:handbook:docs/welcome.md", "git:handbook:docs/holidays.md"}
    hits = api.post(
        "/api/v1/knowledge/search", json={"query": "badge laptop", "collections": ["eng"], "mode": "keyword"}
    ).json()["hits"]
    assert hits and hits[0]["source_id"] == "git:handbook:docs/welcome.md"
    # Nothing new: a sync is a no-op.
    again = sync(api, "handbook")
    assert again["summary"]["upserts"] == 0 and again["summary"]["jobs"] == []


def test_add_refuses_bad_repositories(api, tmp_path):
    bad = api.post("/api/v1/sources", json={"name": "nope", "location": str(tmp_path), "collection": "eng"})
    assert bad.status_code == 400 and "not a git repository" in bad.json()["detail"]


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("", "location is required"),  # was the server's working directory (its own checkout)
        ("   ", "location is required"),
        ("docs", "is not an absolute path"),
        ("./appliance", "is not an absolute path"),
        ("~nosuchuser/repo", "home directory of an unknown user"),  # was a 500 (RuntimeError)
    ],
)
def test_add_refuses_empty_relative_and_unknown_user_locations(api, location, reason):
    response = api.post("/api/v1/sources", json={"name": "cwd", "location": location, "collection": "eng"})
    assert response.status_code == 400, response.text
    body = response.json()
    assert reason in body["detail"] and body["errors"][0]["key"] == "location"
    assert api.get("/api/v1/sources/cwd").status_code == 404


def test_add_with_fetch_refuses_a_remote_git_would_not_be_safe_with(api, repo, tmp_path):
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))  # origin is a local path
    body = {"name": "local-origin", "location": str(clone), "collection": "eng", "fetch": True}
    response = api.post("/api/v1/sources", json=body)
    assert response.status_code == 400, response.text
    assert "is a local path: only https:// and ssh:// remotes are fetched" in response.json()["detail"]
    git(clone, "remote", "set-url", "origin", "https://git.example.org/handbook.git")
    response = api.post("/api/v1/sources", json=body)
    assert response.status_code == 400 and "not in settings network.allow" in response.json()["detail"]


def test_cli_lists_sources(server, capsys):
    assert cli_main(["sources", "--url", server.url, "--key", server.key]) == 0
    out = capsys.readouterr().out
    assert "handbook" in out and "git" in out


def signed(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver(api, event: str, payload: dict, signature: str | None = "auto", delivery: str | None = None):
    body = json.dumps(payload).encode()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "Content-Type": "application/json",
        "Authorization": "",
    }
    if signature == "auto":
        headers["X-Hub-Signature-256"] = signed(body)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return api.post("/api/v1/webhooks/github", content=body, headers=headers)


ISSUE = {
    "action": "opened",
    "issue": {
        "number": 42,
        "title": "VPN drops every hour",
        "body": "The VPN disconnects at minute 59.",
        "state": "open",
        "user": {"login": "bob"},
        "labels": [{"name": "bug"}],
        "html_url": "https://github.example/acme/handbook/issues/42",
        "created_at": "2026-11-01T10:00:00Z",
        "updated_at": "2026-11-01T10:00:00Z",
    },
    "repository": {"full_name": "acme/handbook", "name": "handbook"},
}


def test_webhook_signatures(api):
    assert deliver(api, "issues", ISSUE, signature=None).status_code == 401
    assert deliver(api, "issues", ISSUE, signature=signed(b"other body")).status_code == 401
    assert (
        deliver(api, "issues", ISSUE, signature=signed(json.dumps(ISSUE).encode(), "wrong")).status_code
        == 401
    )
    body = json.dumps(ISSUE).encode()
    sha1_only = api.post(
        "/api/v1/webhooks/github",
        content=body,
        headers={
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": "d-sha1",
            "X-Hub-Signature": "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest(),
        },
    )
    assert sha1_only.status_code == 401
    big = {**ISSUE, "padding": "x" * 300_000}
    assert deliver(api, "issues", big).status_code == 413


def test_webhook_issue_events_are_indexed_idempotently(api):
    first = deliver(api, "issues", ISSUE, delivery="delivery-1")
    assert first.status_code == 200 and first.json()["status"] == "indexed", first.text
    wait_job(api, first.json()["job_id"])
    replay = deliver(api, "issues", ISSUE, delivery="delivery-1")
    assert replay.json()["status"] == "duplicate"
    comment = {
        "action": "created",
        "issue": ISSUE["issue"],
        "repository": ISSUE["repository"],
        "comment": {
            "id": 7,
            "body": "Happens on the guest network too.",
            "user": {"login": "eve"},
            "created_at": "2026-11-01T11:00:00Z",
            "updated_at": "2026-11-01T11:00:00Z",
        },
    }
    wait_job(api, deliver(api, "issue_comment", comment).json()["job_id"])
    # The repository is mapped to the git source "handbook", so its issues land in its collection.
    doc = docs(api, "eng")["github:acme/handbook:issue:42"]
    text = " ".join(
        c["text"]
        for c in api.get(f"/api/v1/documents/{doc['id']}", params={"chunks": "true"}).json()["chunks"]
    )
    assert "VPN disconnects" in text and "guest network" in text
    assert doc["metadata"]["state"] == "open"


def test_webhook_push_triggers_a_sync(api, repo):
    (repo / "docs" / "parking.md").write_text("# Parking\n\nVisitors park on level minus two.\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "parking")
    push = {
        "ref": "refs/heads/main",
        "after": git(repo, "rev-parse", "HEAD"),
        "deleted": False,
        "repository": {"full_name": "acme/handbook", "name": "handbook"},
    }
    response = deliver(api, "push", push)
    assert response.json()["status"] == "sync queued", response.text
    job = wait_job(api, response.json()["jobs"][0])
    for ingest in job["summary"]["jobs"]:
        wait_job(api, ingest)
    assert "git:handbook:docs/parking.md" in docs(api, "eng")
    other = deliver(api, "push", {**push, "repository": {"full_name": "acme/other", "name": "other"}})
    assert other.json()["status"] == "ignored"


def test_jobs_can_be_cancelled_and_retried(api):
    api.post("/api/v1/collections", json={"name": "ctl"})
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    batch = [
        {"source_id": "bad", "content_base64": png, "filename": "x.png"},
        {"source_id": "good", "text": "Quarterly planning starts in March."},
    ]
    job_id = api.post("/api/v1/documents/batch", json={"collection": "ctl", "documents": batch}).json()[
        "job_id"
    ]
    job = wait_job(api, job_id)
    assert job["state"] == "succeeded" and job["progress"]["failed"] == 1
    assert api.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 409  # already ended
    retried = api.post(f"/api/v1/jobs/{job_id}/retry")
    assert retried.status_code == 200 and retried.json()["state"] in ("queued", "running", "succeeded")
    again = wait_job(api, job_id)
    assert again["attempts"] == 2 and again["progress"]["failed"] == 1  # still a PNG: fails again, clearly
    assert (
        "PNG"
        in [
            i
            for i in api.get(f"/api/v1/jobs/{job_id}", params={"items": "true"}).json()["items"]
            if i["source_id"] == "bad"
        ][0]["error"]
    )

    many = [
        {"source_id": f"doc-{i}", "text": f"Document number {i} about topic {i % 7}."} for i in range(400)
    ]
    big = api.post("/api/v1/documents/batch", json={"collection": "ctl", "documents": many}).json()["job_id"]
    cancelled = api.post(f"/api/v1/jobs/{big}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    stopped = wait_job(api, big)
    assert stopped["state"] == "cancelled"
    assert stopped["progress"]["processed"] < 400
    resumed = api.post(f"/api/v1/jobs/{big}/retry")
    assert resumed.status_code == 200
    done = wait_job(api, big, timeout=300)
    assert done["state"] == "succeeded" and done["progress"]["processed"] == 400


def test_history_indexes_merge_commits_and_bad_requests_are_refused(api, repo):
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "docs" / "lunch.md").write_text("# Lunch\n\nThe canteen opens at noon.\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "lunch hours")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "feature", "-m", "Merge lunch hours into the handbook")
    created = api.post(
        "/api/v1/sources",
        json={"name": "handbook-history", "location": str(repo), "collection": "history", "history": True},
    )
    assert created.status_code == 201, created.text
    sync(api, "handbook-history")
    merges = [d for sid, d in docs(api, "history").items() if ":merge:" in sid]
    assert [d["title"] for d in merges] == ["Merge lunch hours into the handbook"]
    bad = {"name": "x", "location": str(repo), "collection": "history"}
    assert api.post("/api/v1/sources", json={**bad, "schedule": "sometimes"}).status_code == 400
    assert api.post("/api/v1/sources", json={**bad, "name": "Bad Name"}).status_code == 400
    assert api.post("/api/v1/sources", json={**bad, "branch": "nope"}).status_code == 400
    assert api.post("/api/v1/sources/unknown/sync").status_code == 404
