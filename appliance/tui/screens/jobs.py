"""Jobs: running, queued and failed background work with progress bars; cancel and retry."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Label, ProgressBar, Select, Static

from appliance.client import ApiError
from appliance.tui import fmt
from appliance.tui.widgets import View, fill_table, guarded, selected_key

STATES = ("all", "running", "queued", "failed", "succeeded", "cancelled")


class JobsView(View):
    """Every job with its progress; the selected one's items below. `c` cancels a queued or
    running job, `t` retries a failed one."""

    label = "jobs"
    initial_focus = "#jobs"
    refresh_seconds = 1.0
    BINDINGS = [Binding("c", "cancel", "Cancel job"), Binding("t", "retry", "Retry job")]
    DEFAULT_CSS = """
    JobsView #jobs-head { height: 3; }
    JobsView #job-state { width: 24; }
    JobsView #jobs-summary { width: 1fr; padding: 1 1 0 1; }
    JobsView #jobs { height: 2fr; }
    JobsView #job-detail { height: 1fr; min-height: 6; border-top: solid $primary 50%; }
    JobsView #job-progress-row { height: 1; }
    JobsView #job-title { width: auto; padding: 0 1; }
    JobsView #job-items { height: 1fr; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self._jobs: list[dict] = []
        self._detail_id: str | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="jobs-head"):
            yield Select([(s, s) for s in STATES], value="all", allow_blank=False, id="job-state")
            yield Label("", id="jobs-summary")
        yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        with Vertical(id="job-detail"):
            with Horizontal(id="job-progress-row"):
                yield Label("select a job", id="job-title")
                yield ProgressBar(total=1, show_eta=False, id="job-progress")
            yield Static("", id="job-error", classes="hint")
            yield DataTable(id="job-items", cursor_type="row")

    def on_mount(self) -> None:
        self.query_one("#jobs", DataTable).add_columns(
            "job", "kind", "collection", "state", "progress", "done", "created", "error"
        )
        self.query_one("#job-items", DataTable).add_columns("#", "source", "state", "chunks", "error")

    async def load(self) -> None:
        state = str(self.query_one("#job-state", Select).value)
        jobs = await self.api.jobs(None if state == "all" else state, limit=200)
        key = selected_key(self.query_one("#jobs", DataTable)) or (jobs[0]["id"] if jobs else None)
        detail = await self.api.job(key, items=True) if key else None
        self.show(jobs, detail)

    def show(self, jobs: list[dict], detail: dict | None) -> None:
        self._jobs = jobs
        counts: dict[str, int] = {}
        for j in jobs:
            counts[j["state"]] = counts.get(j["state"], 0) + 1
        self.query_one("#jobs-summary", Label).update(
            " · ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no jobs"
        )
        fill_table(
            self.query_one("#jobs", DataTable),
            [
                (
                    j["id"],
                    j["kind"],
                    j.get("collection") or "-",
                    fmt.state(j["state"]),
                    fmt.bar(j["progress"]["fraction"] if j["state"] != "queued" else 0.0),
                    f"{j['progress']['processed']}/{j['progress']['total']}",
                    fmt.short_ts(j.get("created_at")),
                    fmt.clip(j.get("error"), 40),
                )
                for j in jobs
            ],
            [j["id"] for j in jobs],
        )
        self.show_detail(detail)

    def show_detail(self, job: dict | None) -> None:
        bar = self.query_one("#job-progress", ProgressBar)
        if job is None:
            self.query_one("#job-title", Label).update("select a job")
            bar.update(total=1, progress=0)
            fill_table(self.query_one("#job-items", DataTable), [])
            return
        p = job["progress"]
        self.query_one("#job-title", Label).update(
            f"{job['id']} · {job['state']} · {p['indexed']} indexed, {p['unchanged']} unchanged, {p['failed']} failed"
        )
        bar.update(total=max(1, p["total"]), progress=p["processed"])
        self.query_one("#job-error", Static).update(job.get("error") or "")
        items = job.get("items", [])
        fill_table(
            self.query_one("#job-items", DataTable),
            [
                (
                    str(i["ordinal"]),
                    fmt.clip(i["source_id"], 40),
                    fmt.state(i["state"]),
                    str(i.get("chunks") or ""),
                    fmt.clip(i.get("error"), 50),
                )
                for i in items
            ],
            [str(i["ordinal"]) for i in items],
        )

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "job-state":
            self.reload()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if (
            event.data_table.id == "jobs"
            and self.console.live
            and event.row_key.value
            and event.row_key.value != self._detail_id
        ):
            self._detail_id = event.row_key.value
            self.run_worker(
                self._detail(event.row_key.value), group="job-detail", exclusive=True, exit_on_error=False
            )

    @guarded
    async def _detail(self, job_id: str) -> None:
        self.show_detail(await self.api.job(job_id, items=True))

    def _selected(self) -> str | None:
        return selected_key(self.query_one("#jobs", DataTable))

    def action_cancel(self) -> None:
        job_id = self._selected()
        if job_id:
            self.run_action(self._change(job_id, "cancel"), "cancel")

    def action_retry(self) -> None:
        job_id = self._selected()
        if job_id:
            self.run_action(self._change(job_id, "retry"), "retry")

    async def _change(self, job_id: str, what: str) -> None:
        try:
            job = await (self.api.cancel_job(job_id) if what == "cancel" else self.api.retry_job(job_id))
        except ApiError as exc:
            if exc.status == 405 or (exc.status == 404 and "job" not in exc.detail.lower()):
                raise ApiError(exc.status, f"Cannot {what}", "not available on this server") from None
            raise
        self.console.notice(f"{what}: {job_id} is now {job.get('state', '?')}")
        self.reload()
