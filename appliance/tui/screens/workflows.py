"""Workflows: each workflow with its graph drawn as text, its runs with the selected run's step tree
(refreshed while it runs), the approval queue, and a run form generated from the inputs schema."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Label, Static

from appliance.client import ApiError
from appliance.tui import fmt, schema_form
from appliance.tui.dialogs import ConfirmDialog, FormDialog
from appliance.tui.widgets import View, fill_table, guarded, selected_key
from appliance.workflows.text import graph_lines, step_tree

ACTIVE = ("queued", "running", "waiting")
RUN_STYLES = {"waiting": "bold magenta", "degraded": "yellow"}


def run_state(value: str) -> Text:
    return Text(value, style=RUN_STYLES[value]) if value in RUN_STYLES else fmt.state(value)


def trace_text(run: dict) -> str:
    """A run's header (state, usage, error, outputs) and its step tree with timings and tokens."""
    usage = run.get("usage") or {}
    spent = ", ".join(f"{k} {v:g}" for k, v in usage.items() if isinstance(v, int | float))
    lines = [
        f"{run['id']} · {run['workflow']}@{run['version'][:8]} · {run['state']}"
        + (" (degraded)" if run.get("degraded") else "")
        + (f" · {spent}" if spent else "")
    ]
    if run.get("error"):
        lines.append(f"error: {run['error']}")
    flags = run.get("flags") or {}
    if flags:
        lines.append(
            "flags: " + ", ".join(f"{k} {len(v) if isinstance(v, list) else v}" for k, v in flags.items())
        )
    lines.extend(step_tree(run.get("steps") or [], indent="") or ["no steps yet"])
    if run.get("outputs") is not None:
        lines.append("outputs: " + fmt.clip(json.dumps(run["outputs"], ensure_ascii=False), 600))
    return "\n".join(lines)


class WorkflowsView(View):
    """Workflows (the selected one's steps drawn as a graph), its runs newest first with the selected
    run's step tree (outcome, attempts, milliseconds, tokens; refreshed while the run is active),
    and the approvals waiting for this key. `r` runs the selected workflow (a form from its inputs
    schema), `x` cancels the selected run, `a` approves and `d` rejects the selected approval
    (`enter` on it: answer with a form from its schema); `m` deletes this key's long-term memories
    of the selected workflow (after a confirmation)."""

    label = "workflows"
    initial_focus = "#wf-list"
    refresh_seconds = 2.0
    BINDINGS = [
        Binding("r", "start", "Run workflow"),
        Binding("x", "cancel", "Cancel run"),
        Binding("a", "decide(True)", "Approve"),
        Binding("d", "decide(False)", "Reject"),
        Binding("m", "forget", "Forget memory"),
    ]
    DEFAULT_CSS = """
    WorkflowsView #wf-main { height: 3fr; }
    WorkflowsView #wf-left { width: 2fr; }
    WorkflowsView #wf-right { width: 3fr; border-left: solid $primary 50%; }
    WorkflowsView #wf-list { height: 1fr; min-height: 3; }
    WorkflowsView #wf-graph-box { height: 2fr; }
    WorkflowsView #wf-runs { height: 1fr; min-height: 3; }
    WorkflowsView #wf-trace-box { height: 2fr; border-top: solid $primary 50%; }
    WorkflowsView #wf-graph, WorkflowsView #wf-trace { padding: 0 1; }
    WorkflowsView #wf-approvals { height: 1fr; min-height: 3; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self._workflows: list[dict] = []
        self._runs: list[dict] = []
        self._approvals: list[dict] = []
        self._bodies: dict[tuple[str, str], dict] = {}  # (name, version) -> body
        self._workflow: str | None = None  # the selected workflow
        self._run: dict | None = None  # the run whose trace is shown
        self._want_run: str | None = None  # a run just started: selected once listed
        self._failed_at = float("-inf")  # when an action last failed

    def compose(self) -> ComposeResult:
        with Horizontal(id="wf-main"):
            with Vertical(id="wf-left"):
                yield Label("Workflows (r runs the selected)", classes="section")
                yield DataTable(id="wf-list", cursor_type="row", zebra_stripes=True)
                with VerticalScroll(id="wf-graph-box"):
                    yield Static("select a workflow", id="wf-graph", markup=False)
            with Vertical(id="wf-right"):
                yield Label("Runs (x cancels)", classes="section", id="wf-runs-title")
                yield DataTable(id="wf-runs", cursor_type="row", zebra_stripes=True)
                with VerticalScroll(id="wf-trace-box"):
                    yield Static("select a run", id="wf-trace", markup=False)
        yield Label("Approvals waiting (a approves, d rejects, enter answers)", classes="section")
        yield DataTable(id="wf-approvals", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#wf-list", DataTable).add_columns("workflow", "version", "applied")
        self.query_one("#wf-runs", DataTable).add_columns(
            "run", "state", "started", "ended", "tokens", "error"
        )
        self.query_one("#wf-approvals", DataTable).add_columns(
            "approval", "run", "step", "prompt", "approvers", "expires"
        )

    # -- fetching ------------------------------------------------------------------------------
    HOLD_ERROR_S = 5.0  # a failed action's message stays this long before a refresh may clear it

    def reload(self) -> None:
        # A refresh that succeeds clears this screen's banner; right after a failed action (a run
        # the server refused) that would wipe the message before the operator read it.
        if time.monotonic() - self._failed_at >= self.HOLD_ERROR_S:
            super().reload()

    async def _fetch(self) -> None:
        """As the View's, except that a fetch under way when an action failed does not clear the
        action's message as it ends."""
        try:
            await self.load()
        except ApiError as exc:
            self.console.report(exc, self.label)
            return
        except Exception as exc:  # an unexpected answer: say so and keep the console alive
            self.console.report(ApiError(-1, "Unexpected answer", f"{type(exc).__name__}: {exc}"), self.label)
            return
        if time.monotonic() - self._failed_at >= self.HOLD_ERROR_S:
            self.console.report_ok(self.label)

    def run_action(self, work: Awaitable[Any], name: str) -> None:
        self.run_worker(self._act_held(work), group=f"act-{name}", exit_on_error=False)

    async def _act_held(self, work: Awaitable[Any]) -> None:
        if not await self._act_done(work):  # None: it failed, and the banner says why
            self._failed_at = time.monotonic()

    @guarded
    async def _act_done(self, work: Awaitable[Any]) -> bool:
        await work
        return True

    async def load(self) -> None:
        workflows = await self.api.workflow_documents()
        runs = await self.api.workflow_runs(limit=200)
        approvals = await self.api.approvals()
        name = self._selected_workflow(workflows)
        body = await self._body(name, workflows)
        run_id = self._selected_run(name, runs)
        run = await self.api.workflow_run(run_id) if run_id else None
        if self._selected_workflow(workflows) != name:
            return  # another workflow was picked meanwhile: its own fetch shows it
        self.show(workflows, runs, approvals, body, run)

    def _selected_workflow(self, workflows: list[dict]) -> str | None:
        names = [w["name"] for w in workflows]
        chosen = selected_key(self.query_one("#wf-list", DataTable)) or self._workflow
        return chosen if chosen in names else (names[0] if names else None)

    def _selected_run(self, name: str | None, runs: list[dict]) -> str | None:
        ids = [r["id"] for r in runs if r["workflow"] == name]
        if self._want_run in ids:
            return self._want_run
        chosen = selected_key(self.query_one("#wf-runs", DataTable))
        return chosen if chosen in ids else (ids[0] if ids else None)

    async def _body(self, name: str | None, workflows: list[dict]) -> dict | None:
        latest = next((w for w in workflows if w["name"] == name), None)
        if latest is None:
            return None
        key = (latest["name"], latest["version"])
        if key not in self._bodies:
            versions = await self.api.workflow(latest["name"])
            for v in versions:
                if v.get("body") is not None:
                    self._bodies[(v["name"], v["version"])] = v["body"]
        return self._bodies.get(key)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if not self.console.live or not event.row_key.value:
            return
        table = event.data_table.id
        if table == "wf-list" and event.row_key.value != self._workflow:
            self.run_worker(
                self._pick_workflow(event.row_key.value), group="wf-pick", exclusive=True, exit_on_error=False
            )
        elif table == "wf-runs" and (self._run is None or event.row_key.value != self._run["id"]):
            self.run_worker(
                self._pick_run(event.row_key.value), group="wf-run", exclusive=True, exit_on_error=False
            )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "wf-approvals" and event.row_key.value:
            self.answer_with_form(event.row_key.value)

    @guarded
    async def _pick_workflow(self, name: str) -> None:
        body = await self._body(name, self._workflows)
        self._workflow = name
        ids = [r["id"] for r in self._runs if r["workflow"] == name]
        run_id = ids[0] if ids else None  # the newest of its runs
        run = await self.api.workflow_run(run_id) if run_id else None
        if self._selected_workflow(self._workflows) == name:
            self.show(self._workflows, self._runs, self._approvals, body, run)

    @guarded
    async def _pick_run(self, run_id: str) -> None:
        self.show_run(await self.api.workflow_run(run_id))

    # -- showing -------------------------------------------------------------------------------
    def show(
        self,
        workflows: list[dict],
        runs: list[dict],
        approvals: list[dict],
        body: dict | None,
        run: dict | None,
    ) -> None:
        self._workflows, self._runs, self._approvals = workflows, runs, approvals
        if body is not None:
            self._workflow = body.get("name", self._workflow)
        elif self._workflow not in [w["name"] for w in workflows]:
            self._workflow = workflows[0]["name"] if workflows else None
        fill_table(
            self.query_one("#wf-list", DataTable),
            [(w["name"], w["version"][:8], fmt.short_ts(w.get("created_at"))) for w in workflows],
            [w["name"] for w in workflows],
        )
        self.show_graph(body)
        mine = [r for r in runs if r["workflow"] == self._workflow]
        self.query_one("#wf-runs-title", Label).update(
            f"Runs of {self._workflow} (x cancels)" if self._workflow else "Runs (x cancels)"
        )
        fill_table(
            self.query_one("#wf-runs", DataTable),
            [
                (
                    r["id"],
                    run_state(r["state"]),
                    fmt.short_ts(r.get("created_at")),
                    fmt.short_ts(r.get("finished_at")) if r.get("finished_at") else "-",
                    f"{(r.get('usage') or {}).get('tokens', 0):g}",
                    fmt.clip(r.get("error") or "", 60),
                )
                for r in mine
            ],
            [r["id"] for r in mine],
        )
        if run is not None and run["id"] == self._want_run:
            self._want_run = None
            table = self.query_one("#wf-runs", DataTable)
            ids = [r["id"] for r in mine]
            if run["id"] in ids:
                table.move_cursor(row=ids.index(run["id"]))
        self.show_run(run)
        fill_table(
            self.query_one("#wf-approvals", DataTable),
            [
                (
                    a["id"],
                    a["run_id"],
                    a["step"],
                    fmt.clip(a["prompt"], 60),
                    ", ".join(a["approvers"]),
                    fmt.short_ts(a.get("expires_at")) if a.get("expires_at") else "never",
                )
                for a in approvals
            ],
            [a["id"] for a in approvals],
        )

    def show_graph(self, body: dict | None) -> None:
        graph = self.query_one("#wf-graph", Static)
        if body is None:
            graph.update(
                "no workflows yet (appliance wf apply FILE)" if not self._workflows else "select a workflow"
            )
            return
        head = [f"{body['name']}" + (f": {body['description']}" if body.get("description") else "")]
        graph.update("\n".join(head + graph_lines(body)))

    def show_run(self, run: dict | None) -> None:
        self._run = run
        trace = self.query_one("#wf-trace", Static)
        trace.update(trace_text(run) if run is not None else "no runs yet (r starts one)")

    # -- actions -------------------------------------------------------------------------------
    def action_start(self) -> None:
        name = self._selected_workflow(self._workflows)
        if name is None:
            self.console.notice("no workflow selected (appliance wf apply adds one)")
            return
        self.run_action(self._ask_inputs(name), "start")

    async def _ask_inputs(self, name: str) -> None:
        """The run form, from the inputs schema of the workflow's latest version."""
        latest = next(w for w in self._workflows if w["name"] == name)
        schema = (await self._body(name, self._workflows) or {}).get("inputs")

        def submitted(typed: dict | None) -> None:
            if typed is None:
                return
            try:
                inputs = schema_form.values(schema, typed)
            except ValueError as exc:
                self.console.notice(f"not started: {exc}")
                return
            self.run_action(self._start(name, inputs), "start")

        self.app.push_screen(
            FormDialog(f"Run {name} {latest['version'][:8]}", schema_form.fields(schema)), submitted
        )

    async def _start(self, name: str, inputs: dict) -> None:
        started = await self.api.start_workflow_run(name, inputs)
        self._want_run = started["run_id"]
        self.console.notice(f"run {started['run_id']} of {name} started")
        self.reload()

    def action_cancel(self) -> None:
        run_id = selected_key(self.query_one("#wf-runs", DataTable))
        run = next((r for r in self._runs if r["id"] == run_id), None)
        if run is None or run["state"] not in ACTIVE:
            self.console.notice("select a queued, running or waiting run to cancel")
            return
        self.run_action(self._cancel(run_id), "cancel")

    async def _cancel(self, run_id: str) -> None:
        await self.api.cancel_workflow_run(run_id)
        self.console.notice(f"run {run_id} cancelled")
        self.reload()

    def _approval(self, approval_id: str | None) -> dict | None:
        return next((a for a in self._approvals if a["id"] == approval_id), None)

    def action_decide(self, approve: bool) -> None:
        approval = self._approval(selected_key(self.query_one("#wf-approvals", DataTable)))
        if approval is None:
            self.console.notice("no approval selected")
            return
        answer = schema_form.decision(approval.get("schema"), approve)
        if answer is None:  # the schema asks for more than yes or no
            self.answer_with_form(approval["id"], approve)
            return
        self.run_action(self._answer(approval["id"], answer), "answer")

    def answer_with_form(self, approval_id: str, approve: bool | None = None) -> None:
        approval = self._approval(approval_id)
        if approval is None:
            return
        schema = approval.get("schema")
        if not schema or not (schema.get("properties")):
            self.console.notice("this approval takes any answer: a approves, d rejects")
            return
        flags = {
            n: approve
            for n, s in schema["properties"].items()
            if approve is not None and isinstance(s, dict) and s.get("type") == "boolean"
        }

        def submitted(typed: dict | None) -> None:
            if typed is None:
                return
            try:
                answer = schema_form.values(schema, typed)
            except ValueError as exc:
                self.console.notice(f"not answered: {exc}")
                return
            self.run_action(self._answer(approval_id, answer), "answer")

        self.app.push_screen(
            FormDialog(fmt.clip(approval["prompt"], 90), schema_form.fields(schema, flags)), submitted
        )

    async def _answer(self, approval_id: str, answer: dict) -> None:
        await self.api.answer_approval(approval_id, answer)
        self.console.notice(f"approval {approval_id} answered")
        self.reload()

    def action_forget(self) -> None:
        name = self._selected_workflow(self._workflows)
        if name is None:
            self.console.notice("no workflow selected")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.run_action(self._forget(name), "forget")

        self.app.push_screen(ConfirmDialog(f"Delete this key's memories of {name}?"), confirmed)

    async def _forget(self, name: str) -> None:
        done = await self.api.delete_workflow_memories(name)
        self.console.notice(f"deleted {done['deleted']} memories of {name}")

    def commands(self) -> Iterator[tuple[str, str, Callable[[], object]]]:
        yield "Run workflow", "Run the selected workflow with a form of its inputs (r)", self.action_start
        yield "Cancel workflow run", "Cancel the selected run (x)", self.action_cancel
        yield "Approve", "Approve the selected approval (a)", lambda: self.action_decide(True)
        yield "Reject approval", "Reject the selected approval (d)", lambda: self.action_decide(False)
        yield (
            "Forget workflow memory",
            "Delete this key's memories of the selected workflow (m)",
            self.action_forget,
        )
