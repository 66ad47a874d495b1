"""Fixtures shared by the API tests: one live server with two collections, two user keys and an
object of every kind in each, for the isolation tests (test_isolation.py, test_isolation_sweep.py)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TEST_MODEL_ENV, ServerProcess

SECRETS = {"alpha": "The alpha launch code is ZEBRA-4471.", "bravo": "The bravo launch code is OKAPI-9902."}


@dataclass
class IsolationWorld:
    srv: ServerProcess
    keys: dict[str, str]  # collection -> the secret of its user key
    objects: dict[str, dict[str, str]]  # collection -> kind (document, job, ...) -> id or name


def _git(repo: Path, *args: str) -> None:
    env = {
        "GIT_AUTHOR_NAME": "Ada",
        "GIT_AUTHOR_EMAIL": "ada@example.org",
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.org",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


@pytest.fixture(scope="package")
def isolation_world(tmp_path_factory) -> IsolationWorld:
    """alpha and bravo, each with a document holding its secret, that document's job, a git source
    (never synced), a user key reaching only it, and a conversation and an answer of that key."""
    tmp = tmp_path_factory.mktemp("isolation")
    # The sweep sends every route without a key and with a wrong one, from one client: above the
    # failed-authentication allowance it would (rightly) be answered 429 instead of 401.
    env = {**TEST_MODEL_ENV, "APPLIANCE_LIMITS__FAILED_AUTH_PER_MINUTE": "100000"}
    srv = ServerProcess(tmp / "data", env=env).start(require_llm=True)
    keys: dict[str, str] = {}
    objects: dict[str, dict[str, str]] = {}
    with srv.client() as admin:
        for coll, secret in SECRETS.items():
            assert admin.post("/api/v1/collections", json={"name": coll}).status_code == 201
            stored = admin.post(
                "/api/v1/documents",
                params={"wait": "true"},
                json={"collection": coll, "source_id": f"{coll}.md", "text": secret},
            )
            assert stored.status_code == 200, stored.text
            repo = tmp / f"repo-{coll}"
            repo.mkdir()
            _git(repo, "init", "-q", "-b", "main")
            (repo / "notes.md").write_text("# Notes\n\nNothing here yet.\n")
            _git(repo, "add", "-A")
            _git(repo, "commit", "-q", "-m", "first")
            source = admin.post(
                "/api/v1/sources", json={"name": f"src-{coll}", "location": str(repo), "collection": coll}
            )
            assert source.status_code == 201, source.text
            key = admin.post(
                "/api/v1/keys", json={"name": f"user-{coll}", "role": "user", "collections": [coll]}
            )
            assert key.status_code == 201, key.text
            keys[coll] = key.json()["key"]
            objects[coll] = {
                "collection": coll,
                "document": stored.json()["document_ids"][0],
                "job": stored.json()["job_id"],
                "source": f"src-{coll}",
                "key": key.json()["id"],
            }
    for coll, key in keys.items():
        with srv.client(key) as owner:
            objects[coll]["conversation"] = owner.post("/api/v1/conversations", json={}).json()["id"]
            answer = owner.post(
                "/api/v1/knowledge/query",
                json={"query": f"What is the {coll} launch code?", "collections": [coll]},
            )
            assert answer.status_code == 200, answer.text
            objects[coll]["answer"] = answer.json()["id"]
            # Eval runs are admin-only (a user key gets 403 whatever the id): no run is needed,
            # only an id of the right shape.
            objects[coll]["run"] = f"run_{coll}0000000000"
            # Model aliases are not per collection; a user key is refused (403) before one is read.
            objects[coll]["alias"] = f"alias-{coll}"
            objects[coll]["collection"] = coll  # routes named by a collection (retrieval fusion)
    # A workflow run of each key, waiting for its approval (GET /api/v1/runs/{id}, /approvals/{id}).
    with srv.client() as admin:
        applied = admin.post(
            "/api/v1/workflows",
            content="kind: Workflow\nname: isolation\nsteps:\n  - {id: ok, approval: {prompt: Proceed}}\n",
            headers={"Content-Type": "application/yaml"},
        )
        assert applied.status_code == 201, applied.text
    for coll, key in keys.items():
        with srv.client(key) as owner:
            started = owner.post("/api/v1/workflows/isolation/runs", json={"input": {}, "wait": 30})
            assert started.status_code == 202 and started.json()["state"] == "waiting", started.text
            objects[coll]["workflow_run"] = started.json()["run_id"]
            (approval,) = owner.get("/api/v1/approvals").json()
            objects[coll]["approval"] = approval["id"]
    yield IsolationWorld(srv, keys, objects)
    srv.stop()
