"""The workflows service in a real appliance (DuckDB, Huey, the `workflow` job kind): the issue's
`sleepy` document run end to end, runs and approvals seen only by their key, approvals answered once,
in their schema, out of order across a restart."""

from __future__ import annotations

import pytest

from appliance.config import load_settings
from appliance.core import Appliance
from appliance.errors import Conflict, Forbidden, InvalidInput, NotFound
from appliance.workflows.documents import parse

SLEEPY = """
kind: Workflow
name: sleepy
inputs: {type: object, properties: {msg: {type: string}}, required: [msg]}
steps:
  - id: one
    tool: builtin.sleep
    with: {seconds: 0.05}
  - id: done
    tool: builtin.echo
    with: {text: "${inputs.msg}"}
outputs: {text: "${steps.done.output.text}"}
"""
THREE_APPROVALS = """
kind: Workflow
name: three
steps:
  - id: gates
    parallel:
      - {id: g1, tool: builtin.echo, with: {text: a}}
      - {id: g2, tool: builtin.echo, with: {text: b}}
  - id: first
    approval: {schema: {type: object, properties: {n: {type: integer}}, required: [n]}}
  - id: second
    approval: {approvers: [admin], schema: {type: object, properties: {n: {type: integer}}, required: [n]}}
  - id: third
    approval: {schema: {type: integer}}
  - id: write
    tool: builtin.record
    with: {key: sum, value: ["${steps.first.output.n}", "${steps.second.output.n}", "${steps.third.output}"]}
outputs: {values: "${steps.write.output.recorded}", n: ["${steps.first.output.n}", "${steps.second.output.n}", "${steps.third.output}"]}
"""


def _appliance(data) -> Appliance:
    settings = load_settings(overrides={"data_dir": str(data), "llm": {"load_at_start": False}}, environ={})
    app = Appliance(settings)
    app.start()
    return app


@pytest.fixture
def app(tmp_path):
    appliance = _appliance(tmp_path / "data")
    yield appliance
    appliance.close()


def _user(app: Appliance, name: str):
    admin = app.access.system_scope()
    if "c1" not in app.catalog.all_collection_names():
        app.knowledge.create_collection(admin, "c1")
    key = app.access.create_key(admin, name, "user", ["c1"], None, None)
    return app.access.scope(app.keys.authenticate(key.key))


def test_the_sleepy_workflow_runs_and_shows_its_steps(app):
    admin = app.access.system_scope()
    applied = app.workflows.apply_text(admin, SLEEPY, "sleepy.yaml")
    assert [(a["kind"], a["name"], a["created"]) for a in applied] == [("Workflow", "sleepy", True)]
    assert app.workflows.apply_text(admin, SLEEPY)[0]["created"] is False  # same hash, nothing new
    user = _user(app, "u1")
    run = app.workflows.start(user, "sleepy", {"msg": "hello"})
    done = app.workflows.wait(user, run.id, 60)
    assert done.state == "succeeded", done.error
    assert done.outputs == {"text": "hello"}
    assert [(s.id, s.state, s.attempts) for s in done.steps] == [
        ("one", "succeeded", 1),
        ("done", "succeeded", 1),
    ]
    assert done.pins == {
        "Workflow/sleepy": applied[0]["version"],
        "Tool/builtin.sleep": "builtin",
        "Tool/builtin.echo": "builtin",
    }
    assert app.jobs.store.get(done.job_id).kind == "workflow"
    with pytest.raises(InvalidInput, match="input: 'msg' is a required property"):
        app.workflows.start(user, "sleepy", {})
    with pytest.raises(Forbidden):
        app.workflows.apply_text(user, SLEEPY)


def test_a_run_is_pinned_to_the_versions_it_started_with(app):
    admin = app.access.system_scope()
    app.workflows.apply_text(admin, SLEEPY.replace("0.05", "0.5"))
    run = app.workflows.start(admin, "sleepy", {"msg": "old"})
    app.workflows.apply_text(admin, SLEEPY.replace("${inputs.msg}", "changed"))
    done = app.workflows.wait(admin, run.id, 60)
    assert done.outputs == {"text": "old"}
    assert len(app.workflows.get_workflow(admin, "sleepy")) == 2


def test_a_user_key_sees_only_its_own_runs_and_approvals(app):
    admin = app.access.system_scope()
    app.workflows.apply(admin, parse(THREE_APPROVALS))
    alice, bob = _user(app, "alice"), _user(app, "bob")
    run = app.workflows.start(alice, "three", {})
    waited = app.workflows.wait(alice, run.id, 60)
    assert waited.state == "waiting"
    (approval,) = app.workflows.list_approvals(alice)
    assert app.workflows.list_approvals(bob) == [] and app.workflows.list_runs(bob) == []
    for call in (
        lambda: app.workflows.get_run(bob, run.id),
        lambda: app.workflows.cancel(bob, run.id),
        lambda: app.workflows.get_approval(bob, approval.id),
        lambda: app.workflows.answer(bob, approval.id, {"n": 1}),
    ):
        with pytest.raises(NotFound):
            call()
    with pytest.raises(InvalidInput, match="answer.n: 'x' is not of type 'integer'"):
        app.workflows.answer(alice, approval.id, {"n": "x"})
    app.workflows.answer(alice, approval.id, {"n": 1})
    with pytest.raises(Conflict):
        app.workflows.answer(alice, approval.id, {"n": 2})
    app.workflows.wait(alice, run.id, 60)
    (second,) = app.workflows.list_approvals(alice)
    with pytest.raises(Forbidden):  # for admins only: visible to the run's owner, not answerable
        app.workflows.answer(alice, second.id, {"n": 2})
    cancelled = app.workflows.cancel(alice, run.id)
    assert cancelled.state == "cancelled"
    assert app.workflows.get_approval(alice, second.id).state == "cancelled"
    with pytest.raises(Conflict):
        app.workflows.answer(admin, second.id, {"n": 2})
    with pytest.raises(Conflict):
        app.workflows.cancel(alice, run.id)


def test_an_approval_naming_a_key_is_listed_and_answered_by_it(app):
    admin = app.access.system_scope()
    alice, bob = _user(app, "alice"), _user(app, "bob")
    app.workflows.apply_text(
        admin,
        f"kind: Workflow\nname: ask-bob\nsteps:\n  - {{id: ok, approval: {{approvers: [{bob.key_id}]}}}}\n",
    )
    run = app.workflows.start(alice, "ask-bob", {})
    assert app.workflows.wait(alice, run.id, 60).state == "waiting"
    (approval,) = app.workflows.list_approvals(bob)
    with pytest.raises(Forbidden):
        app.workflows.answer(alice, approval.id, True)
    app.workflows.answer(bob, approval.id, True)
    assert app.workflows.wait(alice, run.id, 60).state == "succeeded"
    with pytest.raises(NotFound):
        app.workflows.get_run(bob, run.id)  # bob answers the question, he does not see the run


def test_approvals_answered_out_of_order_across_a_restart(tmp_path):
    data = tmp_path / "data"
    first = _appliance(data)
    try:
        admin = first.access.system_scope()
        first.workflows.apply(admin, parse(THREE_APPROVALS))
        runs = [first.workflows.start(admin, "three", {}).id for _ in range(3)]
        for run_id in runs:
            assert first.workflows.wait(admin, run_id, 60).state == "waiting"
        pending = {a.run_id: a for a in first.workflows.list_approvals(admin)}
        # Answer the last run's first approval before the restart; the others after it.
        first.workflows.answer(admin, pending[runs[2]].id, {"n": 30})
    finally:
        first.close()
    second = _appliance(data)
    try:
        admin = second.access.system_scope()
        for run_id, n in ((runs[1], 20), (runs[0], 10)):
            approval = next(a for a in second.workflows.list_approvals(admin) if a.run_id == run_id)
            second.workflows.answer(admin, approval.id, {"n": n})

        def answer_all_for(run_id: str, step: str, value) -> None:
            for _ in range(600):
                found = [
                    a for a in second.workflows.list_approvals(admin) if a.run_id == run_id and a.step == step
                ]
                if found:
                    second.workflows.answer(admin, found[0].id, value)
                    return
                second.workflows.wait(admin, run_id, 0.1)
            raise AssertionError(f"no approval {step} for {run_id}")

        for run_id, base in ((runs[2], 30), (runs[0], 10), (runs[1], 20)):
            answer_all_for(run_id, "second", {"n": base + 1})
        for run_id, base in ((runs[1], 20), (runs[2], 30), (runs[0], 10)):
            answer_all_for(run_id, "third", base + 2)
        for run_id, base in zip(runs, (10, 20, 30), strict=True):
            done = second.workflows.wait(admin, run_id, 60)
            assert done.state == "succeeded", done.error
            assert done.outputs == {"values": "sum", "n": [base, base + 1, base + 2]}
            assert len(second.workflows.store.effects(run_id)) == 1
            assert [s.attempts for s in done.steps if s.id in ("g1", "g2")] == [1, 1]
    finally:
        second.close()


def test_a_sandbox_escape_is_in_the_audit_log_as_the_runs_key(app):
    admin = app.access.system_scope()
    app.workflows.apply(
        admin,
        parse(
            """
kind: Tool
name: py.leak
type: python
code: |
  import socket
  def main(args):
      socket.create_connection(("127.0.0.1", 9), timeout=1)
      return {}
---
kind: Workflow
name: leaky
steps: [{id: call, tool: py.leak, with: {}}]
"""
        ),
    )
    app.knowledge.create_collection(admin, "notes")
    key = app.access.create_key(admin, "runner", "user", ["notes"], None, None)
    user = app.access.scope(app.keys.authenticate(key.key))
    run = app.workflows.start(user, "leaky", {})
    done = app.workflows.wait(user, run.id, 60)
    assert done.state == "failed" and "refused: network access (socket." in done.error
    (entry,) = app.audit.recent(action="workflow.sandbox")
    assert entry["outcome"] == "denied" and entry["target"] == "py.leak"
    assert entry["key_id"] == key.id
    assert entry["detail"]["run_id"] == run.id and entry["detail"]["kind"] == "blocked"
    assert entry["detail"]["blocked"][0].startswith("network access (socket.")
