"""Dashboard: component health, collections, ingestion lag and live traffic with sparklines."""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import DataTable, Label

from appliance.client import ApiError
from appliance.tui import fmt
from appliance.tui.widgets import MetricCard, View, fill_table

CARDS = (
    ("queries", "Queries/min"),
    ("tokens", "Tokens/s"),
    ("latency", "Search p50/p95"),
    ("answer", "Answer p50/p95"),
    ("queue", "Queue"),
    ("memory", "Memory"),
)


# How often the week's ratings per collection are fetched again.
FEEDBACK_SECONDS = 30.0


def _rated(counts: dict | None) -> str:
    """ "+12 −3 of 40": ratings up and down and answers given; blank with no answers."""
    if not counts or not counts["answers"]:
        return ""
    return f"+{counts['up']} −{counts['down']} of {counts['answers']}"


class DashboardView(View):
    """Health of every component, documents and chunks per collection, ingestion lag per source,
    the week's answer ratings per collection, and the last minute's traffic (queries, latency,
    tokens, queues, memory) with sparklines of the last ten minutes. Refreshes every two seconds."""

    label = "dashboard"
    initial_focus = "#components"
    refresh_seconds = 2.0

    DEFAULT_CSS = """
    DashboardView #cards { grid-size: 2; grid-rows: 2; height: auto; grid-gutter: 0 1; }
    DashboardView #top { height: 1fr; min-height: 8; }
    DashboardView #bottom { height: 1fr; min-height: 5; }
    DashboardView #bottom > Vertical, DashboardView #top > Vertical { width: 1fr; }
    DashboardView #summary { height: 1; padding: 0 1; color: $text-muted; }
    DashboardView #drift { height: 1; padding: 0 1; color: $warning; text-style: bold; display: none; }
    """

    _feedback_at: float | None = None
    _feedback_counts: list[dict] | None = None

    def compose(self) -> ComposeResult:
        yield Label("connecting…", id="summary")
        yield Label("", id="drift")
        with Grid(id="cards"):
            for ident, title in CARDS:
                yield MetricCard(title, id=f"card-{ident}")
        with Horizontal(id="top"):
            with Vertical():
                yield Label("Components", classes="section")
                yield DataTable(id="components", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="bottom"):
            with Vertical():
                yield Label("Collections", classes="section")
                yield DataTable(id="collections", cursor_type="row")
            with Vertical():
                yield Label("Ingestion lag", classes="section")
                yield DataTable(id="lag", cursor_type="row")

    def on_mount(self) -> None:
        self.query_one("#components", DataTable).add_columns("component", "status", "detail")
        self.query_one("#collections", DataTable).add_columns("collection", "docs", "chunks", "rated 7 d")
        self.query_one("#lag", DataTable).add_columns("source", "lag", "state")

    async def load(self) -> None:
        stats = await self.api.stats()
        try:
            sources = await self.api.sources()
        except ApiError as exc:
            if not exc.missing:
                raise
            sources = None  # an older server without registered sources: metric lags only
        self.show(stats, sources, await self._feedback())
        try:
            self.show_drift(await self.api.drift())
        except ApiError as exc:
            if not exc.missing:
                raise
            self.show_drift([])  # an older server without drift checks

    async def _feedback(self) -> list[dict] | None:
        """The week's ratings per collection, asked for at most every FEEDBACK_SECONDS: an
        aggregate over the answer traces is not worth running at the dashboard's refresh rate."""
        now = time.monotonic()
        if self._feedback_at is None or now - self._feedback_at >= FEEDBACK_SECONDS:
            try:
                self._feedback_counts = await self.api.feedback_summary(7)
            except ApiError as exc:
                if not exc.missing:
                    raise
                self._feedback_counts = None  # an older server without the summary
            self._feedback_at = now
        return self._feedback_counts

    def show_drift(self, reports: list[dict]) -> None:
        """One warning line naming what drifted, per collection; hidden while nothing did."""
        drifted = [
            f"{r['collection']}: {', '.join(s['signal'] for s in r['signals'] if s['drifted'])}"
            for r in reports
            if r.get("drifted")
        ]
        line = self.query_one("#drift", Label)
        line.update(f"⚠ drift detected · {' · '.join(drifted)} (appliance eval drift)" if drifted else "")
        line.display = bool(drifted)

    def show(
        self, stats: dict, sources: list[dict] | None = None, feedback: list[dict] | None = None
    ) -> None:
        traffic, hist, queue, mem = stats["traffic"], stats["history"], stats["queue"], stats["memory"]
        disk = stats["disk"]
        self.query_one("#summary", Label).update(
            f"v{stats['version']} · up {fmt.duration(stats['uptime_seconds'])} · "
            f"disk {fmt.size(disk['free_bytes'])} free · {traffic['requests_per_min']:.0f} req/min"
        )
        cards = {c.id: c for c in self.query(MetricCard)}
        cards["card-queries"].set(fmt.number(traffic["queries_per_min"]), hist["queries_per_min"])
        decode = traffic.get("decode_tokens_per_second")
        cards["card-tokens"].set(
            fmt.number(traffic["tokens_per_second"]) + (f" (decode {decode:.0f})" if decode else ""),
            hist["tokens_per_second"],
        )
        search, answer = traffic["latency_ms"]["search"], traffic["latency_ms"]["answer"]
        cards["card-latency"].set(
            f"{fmt.number(search['p50'], digits=0)}/{fmt.number(search['p95'], 'ms', 0)}",
            hist["search_p95_ms"],
        )
        cards["card-answer"].set(
            f"{fmt.number(answer['p50'], digits=0)}/{fmt.number(answer['p95'], 'ms', 0)}"
        )
        cards["card-queue"].set(
            f"{queue['llm_waiting']} waiting · {queue['llm_in_use']}/{queue['llm_slots']} busy · "
            f"{queue['jobs_active']} jobs",
            [a + b for a, b in zip(hist["llm_queue"], hist["jobs_active"], strict=False)],
        )
        gpu = f" · GPU {fmt.size(mem['gpu_used_bytes'])}" if mem.get("gpu_used_bytes") is not None else ""
        cards["card-memory"].set(
            f"RSS {fmt.size(mem['rss_bytes'])}{gpu}", hist.get("gpu_used_bytes") if gpu else hist["rss_bytes"]
        )
        components = stats["components"]
        fill_table(
            self.query_one("#components", DataTable),
            [(c["name"], fmt.state(c["status"]), c["detail"]) for c in components],
            [c["name"] for c in components],
        )
        collections = stats["collections"]
        rated = {f["collection"]: f for f in feedback or []}
        fill_table(
            self.query_one("#collections", DataTable),
            [
                (c["name"], str(c["documents"]), str(c["chunks"]), _rated(rated.get(c["name"])))
                for c in collections
            ],
            [c["name"] for c in collections],
        )
        lags: dict[str, tuple[float | None, str]] = {
            name: (seconds, "") for name, seconds in stats.get("ingestion_lag_seconds", {}).items()
        }
        for s in sources or []:
            lags[s["name"]] = (s.get("lag_seconds"), s.get("state") or "")
        fill_table(
            self.query_one("#lag", DataTable),
            [
                (name, fmt.duration(sec), fmt.state(st) if st else "")
                for name, (sec, st) in sorted(lags.items())
            ],
            sorted(lags),
        )
