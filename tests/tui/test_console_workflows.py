"""The console's Workflows screen against the API of an in-process appliance (echo runtime, no model):
the graph of a workflow, a run started from a form generated from its inputs schema, its step tree,
an approval answered from the queue, and an API error in the banner; and the pure pieces (the form
from a schema, the graph) on their own."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, Select

from appliance.tui import schema_form
from appliance.tui.app import SCREENS, ConsoleApp, tab_key
from appliance.tui.widgets import Banner
from appliance.workflows.documents import parse
from appliance.workflows.text import graph_lines
from tests.inprocess import InProcessServer, echo_appliance
from tests.tui.conftest import until

SIZE = (160, 48)
GATED = """
kind: Workflow
name: gated
description: echo, ask, then write once
inputs:
  type: object
  properties:
    msg: {type: string, minLength: 3}
    times: {type: integer}
    loud: {type: boolean}
  required: [msg]
steps:
  - id: said
    tool: builtin.echo
    with: {text: "${inputs.msg}"}
  - id: ask
    approval:
      prompt: "Write ${inputs.msg}?"
      schema: {type: object, properties: {approved: {type: boolean}}, required: [approved]}
  - id: write
    when: "${steps.ask.output.approved}"
    tool: builtin.record
    with: {key: note, value: "${steps.said.output.text}"}
outputs: {text: "${steps.said.output.text}", written: "${steps.write.output.first}"}
"""
FANNED = """
kind: Workflow
name: fanned
steps:
  - id: each
    foreach: [a, b]
    max_concurrency: 2
    do: {tool: builtin.echo, with: {text: "${item}"}}
  - id: again
    loop: {max_loops: 3, until: {eq: ["${loop.index}", 1]}, do: {tool: builtin.echo, with: {text: x}}}
outputs: {items: "${steps.each.output}"}
"""


def rows(app: ConsoleApp, selector: str) -> list[list[str]]:
    table = app.query_one(selector, DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def text_of(app: ConsoleApp, selector: str) -> str:
    return str(app.query_one(selector).render())


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    app = echo_appliance(tmp_path_factory.mktemp("console-wf") / "data")
    app.workflows.apply(app.access.system_scope(), parse(GATED + "---\n" + FANNED))
    server = InProcessServer(app).start()
    yield server
    server.stop()
    app.close()


def test_the_workflows_tab_is_the_tenth_on_key_0():
    assert SCREENS[9][0] == "workflows" and tab_key(10) == "0" and tab_key(1) == "1"


@pytest.mark.anyio
async def test_a_run_from_the_form_its_trace_and_its_approval_from_the_queue(srv):
    app = ConsoleApp(srv.url, srv.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("0")
        await until(pilot, lambda: len(rows(app, "#wf-list")) == 2, what="the workflows")
        assert [r[0] for r in rows(app, "#wf-list")] == ["fanned", "gated"]
        await until(pilot, lambda: "each: foreach" in text_of(app, "#wf-graph"), what="the graph")
        table = app.query_one("#wf-list", DataTable)
        table.focus()
        await pilot.press("down")
        await until(
            pilot, lambda: "ask: approval by owner" in text_of(app, "#wf-graph"), what="gated's graph"
        )
        graph = text_of(app, "#wf-graph")
        assert (
            "inputs: msg*, times, loud" in graph
            and "write: tool builtin.record  ← ask, said  when ${steps.ask.output.approved}" in graph
        )
        assert "no runs yet" in text_of(app, "#wf-trace")

        # r: a form from the inputs schema; a text, a number and a boolean choice.
        await pilot.press("r")
        await until(pilot, lambda: app.screen.query_one("#field-msg", Input), what="the run form")
        form = app.screen
        form.query_one("#field-msg", Input).value = "hello there"
        form.query_one("#field-times", Input).value = "2"
        assert form.query_one("#field-loud", Select).value == "true"
        await pilot.click("#ok")
        await until(pilot, lambda: len(rows(app, "#wf-runs")) == 1, what="the new run")
        # The run waits for its approval; the trace shows the finished echo and the waiting step.
        await until(pilot, lambda: rows(app, "#wf-runs")[0][1] == "waiting", what="the waiting run")
        await until(pilot, lambda: "said" in text_of(app, "#wf-trace"), what="the trace")
        trace = text_of(app, "#wf-trace")
        assert " waiting " in trace.splitlines()[0] + " " and "ask" in trace
        run_id = rows(app, "#wf-runs")[0][0]
        run = srv.app.workflows.get_run(srv.app.access.system_scope(), run_id)
        assert run.inputs == {"msg": "hello there", "times": 2, "loud": True}

        # The approval is in the queue; a approves it (its schema's boolean set to true).
        await until(pilot, lambda: len(rows(app, "#wf-approvals")) == 1, what="the approval")
        assert rows(app, "#wf-approvals")[0][1:4] == [run_id, "ask", "Write hello there?"]
        app.query_one("#wf-approvals", DataTable).focus()
        await pilot.press("a")
        await until(pilot, lambda: rows(app, "#wf-runs")[0][1] == "succeeded", what="the finished run")
        await until(pilot, lambda: "outputs:" in text_of(app, "#wf-trace"), what="the outputs")
        assert not rows(app, "#wf-approvals")
        trace = text_of(app, "#wf-trace")
        assert '"written": true' in trace and "write" in trace and "ms" in trace
        done = srv.app.workflows.get_run(srv.app.access.system_scope(), run_id)
        assert done.state == "succeeded" and srv.app.workflows.store.ledger(run_id)
        assert str(app.query_one(Banner).render()) == ""

        # The server's own check (minLength) refuses an input: the banner says so, no traceback.
        await pilot.press("r")
        await until(pilot, lambda: app.screen.query_one("#field-msg", Input), what="the run form again")
        app.screen.query_one("#field-msg", Input).value = "hi"
        await pilot.click("#ok")
        banner = app.query_one(Banner)
        await until(pilot, lambda: "workflows:" in str(banner.render()), what="the error")
        assert "input.msg" in str(banner.render()) and banner.has_class("-error")
        assert len(rows(app, "#wf-runs")) == 1


@pytest.mark.anyio
async def test_a_rejected_approval_skips_the_write(srv):
    admin = srv.app.access.scope(srv.app.keys.authenticate(srv.key))  # the console's key: the owner
    run = srv.app.workflows.start(admin, "gated", {"msg": "keep it"})
    assert srv.app.workflows.wait(admin, run.id, 30).state == "waiting"
    app = ConsoleApp(srv.url, srv.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("0")
        await until(pilot, lambda: run.id in [r[1] for r in rows(app, "#wf-approvals")], what="the approval")
        table = app.query_one("#wf-approvals", DataTable)
        table.focus()
        table.move_cursor(row=[r[1] for r in rows(app, "#wf-approvals")].index(run.id))
        await pilot.press("d")
        await until(
            pilot,
            lambda: srv.app.workflows.get_run(admin, run.id).state == "succeeded",
            what="the run to end",
        )
    done = srv.app.workflows.get_run(admin, run.id)
    assert next(s for s in done.steps if s.id == "write").state == "skipped"
    assert done.outputs == {"text": "keep it", "written": None}


def test_a_form_from_a_schema_converts_what_was_typed():
    schema = {
        "type": "object",
        "properties": {
            "q": {"type": "string", "description": "the question"},
            "n": {"type": "integer", "default": 3},
            "x": {"type": "number"},
            "mode": {"enum": ["fast", "slow"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "on": {"type": "boolean"},
        },
        "required": ["q", "mode"],
    }
    fields = schema_form.fields(schema)
    assert fields[0] == ("q", "q * (string): the question", "")
    assert fields[1] == ("n", "n (integer)", "3")
    assert fields[3] == ("mode", "mode * (string)", ["fast", "slow"]) or fields[3][2] == ["fast", "slow"]
    assert fields[5][2] == ["true", "false", schema_form.UNSET]
    typed = {"q": "why", "n": "3", "x": "0.5", "mode": "slow", "tags": '["a"]', "on": schema_form.UNSET}
    assert schema_form.values(schema, typed) == {"q": "why", "n": 3, "x": 0.5, "mode": "slow", "tags": ["a"]}
    for bad, message in (
        ({"q": "", "mode": "fast"}, "q is required"),
        ({"q": "a", "mode": "fast", "n": "three"}, "n: 'three' is not a whole number"),
        ({"q": "a", "mode": "fast", "tags": "a, b"}, "tags: 'a, b' is not a JSON list"),
        ({"q": "a", "mode": "fast", "tags": '{"a": 1}'}, "tags: give a JSON list"),
    ):
        with pytest.raises(ValueError, match=message):
            schema_form.values(schema, bad)
    assert schema_form.decision({"type": "object", "properties": {"ok": {"type": "boolean"}}}, False) == {
        "ok": False
    }
    assert schema_form.decision(None, True) == {"approved": True}
    needs_more = {"type": "object", "properties": {"ok": {"type": "boolean"}, "why": {"type": "string"}}}
    assert schema_form.decision({**needs_more, "required": ["why"]}, True) is None
    assert schema_form.decision({"type": "integer"}, True) is None


def test_the_graph_draws_fan_out_loops_and_what_each_step_reads():
    (doc,) = parse(FANNED)
    assert graph_lines(doc.body) == [
        "inputs: -",
        "├─ each: foreach 2 as item ×2 → list",
        "│  └─ tool builtin.echo",
        "└─ again: loop ≤3 until eq ${loop.index} 1",
        "   └─ tool builtin.echo",
        "outputs: items",
    ]


@pytest.mark.anyio
async def test_m_forgets_the_selected_workflows_memories_after_a_confirmation(srv):
    admin = srv.app.access.scope(srv.app.keys.authenticate(srv.key))  # the console's key
    kept = "kind: Workflow\nname: kept\nmemory: {enabled: true}\nsteps: [{id: s, tool: builtin.echo, with: {text: hi}}]\n"
    srv.app.workflows.apply(srv.app.access.system_scope(), parse(kept))
    run = srv.app.workflows.start(admin, "kept", {})
    assert srv.app.workflows.wait(admin, run.id, 30).state == "succeeded"
    assert len(srv.app.workflows.list_memories(admin, "kept")) == 1
    app = ConsoleApp(srv.url, srv.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("0")
        await until(pilot, lambda: "kept" in [r[0] for r in rows(app, "#wf-list")], what="the workflow")
        table = app.query_one("#wf-list", DataTable)
        table.focus()
        table.move_cursor(row=[r[0] for r in rows(app, "#wf-list")].index("kept"))
        await pilot.press("m")
        await pilot.press("n")  # declined: nothing is deleted
        await pilot.pause()
        assert len(srv.app.workflows.list_memories(admin, "kept")) == 1
        await pilot.press("m")
        await pilot.press("y")
        await until(pilot, lambda: not srv.app.workflows.list_memories(admin, "kept"), what="the delete")
