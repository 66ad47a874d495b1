"""Workflows over the wire: the issue's `sleepy` document applied as YAML, run and shown; the `wf`
CLI against a live server; and kill -9 of the server mid-step, mid-fan-out and mid-approval: every
run finishes after restarts, no completed step runs again, the non-idempotent tool's effect is one."""

from __future__ import annotations

import json
import random
import time

import duckdb
import httpx
import pytest

from tests.conftest import ServerProcess
from tests.test_cli import run_cli

SLEEPY = """kind: Workflow
name: sleepy
inputs: {type: object, properties: {msg: {type: string}}, required: [msg]}
steps:
  - id: one
    tool: builtin.sleep
    with: {seconds: 3}
  - id: done
    tool: builtin.echo
    with: {text: "${inputs.msg}"}
outputs: {text: "${steps.done.output.text}"}
"""
CHAOS = """kind: Workflow
name: chaos
inputs: {type: object, properties: {n: {type: integer}}, required: [n]}
steps:
  - {id: warm, tool: builtin.sleep, with: {seconds: 0.3}}
  - id: fan
    foreach: [0, 1, 2, 3, 4, 5]
    as: i
    max_concurrency: 2
    do: {tool: builtin.sleep, with: {seconds: 0.4}}
  - {id: write, tool: builtin.record, with: {key: before, value: "${inputs.n}"}}
  - id: ok
    approval: {schema: {type: object, properties: {go: {type: boolean}}, required: [go]}}
  - {id: after, tool: builtin.record, with: {key: after, value: "${steps.ok.output.go}"}}
  - {id: done, tool: builtin.echo, with: {text: "run ${inputs.n} done"}}
outputs: {text: "${steps.done.output.text}"}
"""
ENDED = ("succeeded", "degraded", "failed", "cancelled")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    # No chat model: these workflows call tools only, and restarts are quicker without one.
    env = {"APPLIANCE_LLM__LOAD_AT_START": "false"}
    server = ServerProcess(tmp_path_factory.mktemp("workflows") / "data", env=env).start()
    yield server
    server.stop()


def _wait(client: httpx.Client, run_id: str, states=ENDED, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/v1/runs/{run_id}").json()
        if run["state"] in states:
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} still {run['state']}")


def test_the_issue_document_applies_as_yaml_runs_and_shows_its_steps(srv):
    with srv.client() as admin:
        applied = admin.post(
            "/api/v1/workflows", content=SLEEPY, headers={"Content-Type": "application/yaml"}
        )
        assert applied.status_code == 201, applied.text
        assert applied.json()[0]["name"] == "sleepy"
        assert [w["name"] for w in admin.get("/api/v1/workflows").json()] == ["sleepy"]
        started = admin.post("/api/v1/workflows/sleepy/runs", json={"input": {"msg": "hello"}})
        assert started.status_code == 202, started.text
        run = _wait(admin, started.json()["run_id"])
        assert run["state"] == "succeeded" and run["outputs"] == {"text": "hello"}
        assert [(s["id"], s["state"], s["attempts"]) for s in run["steps"]] == [
            ("one", "succeeded", 1),
            ("done", "succeeded", 1),
        ]
        broken = admin.post(
            "/api/v1/workflows",
            content=SLEEPY.replace("${inputs.msg}", "${steps.x.output.text}"),
            headers={"Content-Type": "application/yaml"},
        )
        assert broken.status_code == 400
        assert "steps[1].with.text: unknown step 'x'" in broken.json()["detail"]
        assert (
            admin.post("/api/v1/workflows", content="x", headers={"Content-Type": "text/plain"}).status_code
            == 415
        )
        metrics = admin.get("/metrics").text
        assert 'appliance_workflow_runs_total{outcome="succeeded",version=' in metrics


def test_the_wf_cli(srv, tmp_path):
    env = {"APPLIANCE_URL": srv.url, "APPLIANCE_KEY": srv.key}
    doc = tmp_path / "quick.yaml"
    doc.write_text(SLEEPY.replace("sleepy", "quick").replace("seconds: 3", "seconds: 0.1"))
    assert run_cli("wf", "validate", str(doc)).returncode == 0
    applied = run_cli("wf", "apply", str(doc), "--json", env=env)
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)[0]["version"]
    ran = run_cli("wf", "run", "quick", "--input", '{"msg": "via cli"}', "--wait", "--json", env=env)
    assert ran.returncode == 0, ran.stderr
    run = json.loads(ran.stdout)
    assert run["outputs"] == {"text": "via cli"}
    shown = run_cli("wf", "show", run["id"], env=env)
    assert "one" in shown.stdout and "succeeded" in shown.stdout and " ms" in shown.stdout
    listed = json.loads(run_cli("wf", "runs", "--json", env=env).stdout)
    assert run["id"] in [r["id"] for r in listed]


def _completed(run: dict) -> dict[str, tuple]:
    return {s["key"]: (s["attempts"], s["finished_at"]) for s in run["steps"] if s["state"] == "succeeded"}


REMEMBER = """kind: Workflow
name: remember
inputs: {type: object, properties: {q: {type: string}}, required: [q]}
memory: {enabled: true, top_k: 3}
steps:
  - {id: say, tool: builtin.echo, with: {text: "noted ${inputs.q}"}}
outputs: {text: "${steps.say.output.text}"}
"""


def _recalled(run: dict) -> list[dict]:
    """What the run was given: its recall step's output, in its trace."""
    step = next(s for s in run["steps"] if s["key"] == "@memory")
    assert step["kind"] == "memory" and step["state"] == "succeeded"
    return step["output"]


def test_memory_over_the_wire_is_per_key_listed_deleted_and_audited(srv):
    with srv.client() as admin:
        assert (
            admin.post("/api/v1/workflows", content=REMEMBER, headers={"Content-Type": "application/yaml"})
        ).status_code == 201
        assert admin.post("/api/v1/collections", json={"name": "memkb"}).status_code == 201
        keys = {
            n: admin.post(
                "/api/v1/keys", json={"name": f"mem-{n}", "role": "user", "collections": ["memkb"]}
            ).json()
            for n in "ab"
        }
    clients = {n: srv.client(k["key"]) for n, k in keys.items()}
    try:
        for n, c in clients.items():
            started = c.post("/api/v1/workflows/remember/runs", json={"input": {"q": f"harbour of {n}"}})
            assert _wait(c, started.json()["run_id"])["state"] == "succeeded"
        again = clients["a"].post("/api/v1/workflows/remember/runs", json={"input": {"q": "harbour"}})
        recalled = _recalled(_wait(clients["a"], again.json()["run_id"]))
        assert [("harbour of a" in r["summary"], "harbour of b" in r["summary"]) for r in recalled] == [
            (True, False)
        ]  # a's own memory; never b's
        # With the server's embedder, a memory sharing no word with the inputs is recalled by meaning.
        volcano = clients["a"].post(
            "/api/v1/workflows/remember/runs", json={"input": {"q": "volcanoes of iceland"}}
        )
        assert _wait(clients["a"], volcano.json()["run_id"])["state"] == "succeeded"
        lava = clients["a"].post(
            "/api/v1/workflows/remember/runs", json={"input": {"q": "eruptions and lava"}}
        )
        lava_run = _wait(clients["a"], lava.json()["run_id"])
        assert [r["run_id"] for r in _recalled(lava_run)] == [volcano.json()["run_id"]]
        mine = clients["b"].get("/api/v1/workflows/memory").json()
        assert [(m["key_id"], m["workflow"]) for m in mine] == [(keys["b"]["id"], "remember")]
        assert (
            clients["b"].get("/api/v1/workflows/memory", params={"key": keys["a"]["id"]}).status_code == 403
        )
        assert clients["b"].delete("/api/v1/workflows/memory").status_code == 400  # neither workflow nor all
        with srv.client() as admin:
            theirs = admin.get("/api/v1/workflows/memory", params={"key": keys["a"]["id"]}).json()
            assert len(theirs) == 4 and {m["key_id"] for m in theirs} == {keys["a"]["id"]}

        env = {"APPLIANCE_URL": srv.url, "APPLIANCE_KEY": keys["a"]["key"]}
        listed = run_cli("wf", "memory", "list", "--workflow", "remember", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        assert len(json.loads(listed.stdout)) == 4
        bare = run_cli("wf", "memory", "delete", env=env)
        assert bare.returncode != 0 and "--all" in bare.stderr and "Traceback" not in bare.stderr
        deleted = run_cli("wf", "memory", "delete", "--all", "--json", env=env)
        assert deleted.returncode == 0, deleted.stderr
        assert json.loads(deleted.stdout)["deleted"] == 4
        assert clients["a"].get("/api/v1/workflows/memory").json() == []
        assert len(clients["b"].get("/api/v1/workflows/memory").json()) == 1  # b's memory stays
        with srv.client() as admin:
            entries = admin.get("/api/v1/audit", params={"limit": 50}).json()
        audited = [e for e in entries if e["action"] == "workflow.memory.delete"]
        assert audited and audited[0]["target"] == keys["a"]["id"] and audited[0]["detail"]["deleted"] == 4
    finally:
        for c in clients.values():
            c.close()


# Last in the module: it stops the shared server to read its database.
def test_kill_9_mid_fan_out_and_mid_approval_loses_and_repeats_nothing(srv):
    rng = random.Random(16)
    with srv.client() as admin:
        assert (
            admin.post(
                "/api/v1/workflows", content=CHAOS, headers={"Content-Type": "application/yaml"}
            ).status_code
            == 201
        )
        runs = [
            admin.post("/api/v1/workflows/chaos/runs", json={"input": {"n": n}}).json()["run_id"]
            for n in range(3)
        ]
    seen: dict[str, dict[str, tuple]] = {r: {} for r in runs}
    # Kill as soon as a run is mid-fan-out (some of its branches done, not all), after a random wait.
    time.sleep(rng.uniform(0.0, 0.5))
    deadline = time.monotonic() + 60
    with srv.client() as admin:
        while time.monotonic() < deadline:
            views = {r: admin.get(f"/api/v1/runs/{r}").json() for r in runs}
            branches = [k for v in views.values() for k in _completed(v) if k.startswith("fan[")]
            if branches and not any("fan" in _completed(v) for v in views.values()):
                break
            time.sleep(0.05)
    for r, view in views.items():
        seen[r].update(_completed(view))
    assert branches, "no run reached its fan-out"
    srv.kill()
    srv.start()
    # Then with every run waiting for its approval.
    with srv.client() as admin:
        for r in runs:
            assert _wait(admin, r, ("waiting",), 120)["state"] == "waiting"
            seen[r].update(_completed(admin.get(f"/api/v1/runs/{r}").json()))
    srv.kill()
    srv.start()
    with srv.client() as admin:
        for approval in admin.get("/api/v1/approvals").json():
            answered = admin.post(f"/api/v1/approvals/{approval['id']}", json={"answer": {"go": True}})
            assert answered.status_code == 200, answered.text
            again = admin.post(f"/api/v1/approvals/{approval['id']}", json={"answer": {"go": False}})
            assert again.status_code == 409
        finals = {r: _wait(admin, r) for r in runs}
    for n, r in enumerate(runs):
        final = finals[r]
        assert final["state"] == "succeeded", final["error"]
        assert final["outputs"] == {"text": f"run {n} done"}
        now = _completed(final)
        for key, before in seen[r].items():
            assert now[key] == before, f"{r} {key}: completed as {before}, later {now[key]}"
    srv.stop()
    con = duckdb.connect(str(srv.data_dir / "appliance.duckdb"), read_only=True)
    try:
        effects = con.execute(
            "SELECT run_id, step_key, count(*) FROM workflow_effects GROUP BY ALL"
        ).fetchall()
        ledger = con.execute("SELECT run_id, step_key, state FROM workflow_ledger").fetchall()
    finally:
        con.close()
    assert sorted(effects) == sorted((r, k, 1) for r in runs for k in ("write", "after"))
    assert sorted(ledger) == sorted((r, k, "done") for r in runs for k in ("write", "after"))
