"""Evals: eval sets with a sparkline of their history, runs with headline numbers, a run's worst
items, two runs side by side, and the latest drift check of each collection."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Label, Static

from appliance.client import ApiError
from appliance.tui import fmt
from appliance.tui.dialogs import FormDialog
from appliance.tui.widgets import View, fill_table, guarded, selected_key

# The runs table's metric columns: (scorecard key, column title).
HEADLINE = (
    ("ndcg@10", "ndcg@10"),
    ("accuracy", "accuracy"),
    ("refusal_accuracy", "refusal"),
    ("citation_precision", "cite prec"),
    ("ttft_ms_p95", "ttft p95"),
)
# The one number an item is judged by (as the server orders the worst first): the answer's own
# score, else the refusal being right, else retrieval.
ITEM_METRICS = ("accuracy", "token_f1", "refusal_accuracy", "ndcg@10", "grounded_rate")
# The metric a set's sparkline follows: retrieval quality for a retrieval set, else the answers'.
SET_HEADLINE = {"retrieval": ("ndcg@10",)}
ANSWER_HEADLINE = ("accuracy", "token_f1", "refusal_accuracy", "ndcg@10")
VERDICT_STYLES = {"improved": "bold green", "regressed": "bold red", "within noise": "dim"}
MODES = ["default", "hybrid", "keyword", "semantic"]
WORST = 10  # worst items shown for a run


def number(metric: str, value: float | None) -> str:
    """A metric as it reads best: milliseconds whole, fractions to three places."""
    if value is None:
        return "-"
    if metric.endswith("_ms") or "_ms_p" in metric or metric in ("items", "failed"):
        return f"{value:.0f}"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def headline_of(kind: str, runs: list[dict]) -> str | None:
    """The metric that sums up a set's runs: the first of its kind's headline metrics they have."""
    for metric in SET_HEADLINE.get(kind, ANSWER_HEADLINE):
        if any(r["scorecard"].get(metric) is not None for r in runs):
            return metric
    return None


def item_metric(outcome: dict) -> str:
    """The metric that put an item among the worst, with its value (or why it has none)."""
    if outcome["state"] != "done":
        return "failed"
    scores = outcome.get("scores") or {}
    for metric in ITEM_METRICS:
        if scores.get(metric) is not None:
            return f"{metric} {number(metric, scores[metric])}"
    return "-"


class EvalsView(View):
    """Eval sets (with a sparkline of each set's headline metric over its finished runs), the runs
    newest first with their headline numbers, and the selected run's scorecard and worst items.
    `m` marks a run (two at most: A, then B), `c` compares B against A (or the marked run against
    the selected one) item by item with a 95% interval, `r` runs the selected set. The top line
    is the latest drift check of each collection."""

    label = "evals"
    initial_focus = "#eval-runs"
    refresh_seconds = 5.0
    BINDINGS = [
        Binding("m", "mark", "Mark run"),
        Binding("c", "compare", "Compare"),
        Binding("r", "start", "Run set"),
    ]
    DEFAULT_CSS = """
    EvalsView #eval-drift { height: 1; padding: 0 1; color: $text-muted; }
    EvalsView #eval-drift.-drifted { color: $warning; text-style: bold; }
    EvalsView #eval-sets { height: 1fr; min-height: 3; }
    EvalsView #eval-runs { height: 1fr; min-height: 4; }
    EvalsView #eval-detail { height: 2fr; min-height: 6; border-top: solid $primary 50%; }
    EvalsView #eval-detail-title { height: 1; padding: 0 1; text-style: bold; }
    EvalsView #eval-scorecard { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    EvalsView #eval-worst, EvalsView #eval-comparison { height: 1fr; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self._sets: list[dict] = []
        self._runs: list[dict] = []
        self._marked: list[str] = []  # run ids: A, then B
        self._detail_id: str | None = None  # the run whose items are shown
        self._detail_seen: tuple | None = None  # (id, state, processed) when its items were fetched
        self.comparing = False

    def compose(self) -> ComposeResult:
        yield Label("drift · -", id="eval-drift")
        yield Label("Sets (r runs the selected set)", classes="section")
        yield DataTable(id="eval-sets", cursor_type="row", zebra_stripes=True)
        yield Label("Runs (m marks, c compares)", classes="section")
        yield DataTable(id="eval-runs", cursor_type="row", zebra_stripes=True)
        with Vertical(id="eval-detail"):
            yield Label("select a run", id="eval-detail-title")
            yield Static("", id="eval-scorecard")
            yield DataTable(id="eval-worst", cursor_type="row")
            yield DataTable(id="eval-comparison", cursor_type="row")

    def on_mount(self) -> None:
        self.query_one("#eval-sets", DataTable).add_columns(
            "set", "kind", "version", "items", "ans/unans", "collection", "used", "history"
        )
        self.query_one("#eval-runs", DataTable).add_columns(
            # The numbers before the run's id and model, so a narrow terminal still shows them.
            "",
            "set",
            "when",
            "state",
            "done",
            *(title for _, title in HEADLINE),
            "mode",
            "model",
            "run",
        )
        self.query_one("#eval-worst", DataTable).add_columns("#", "item", "question", "metric", "answer")
        self.query_one("#eval-comparison", DataTable).add_columns(
            "metric", "A", "B", "B-A", "95% interval", "verdict"
        )
        self.query_one("#eval-comparison", DataTable).display = False

    # -- fetching ------------------------------------------------------------------------------
    async def load(self) -> None:
        sets = await self.api.eval_sets()
        runs = await self.api.eval_runs(limit=100)  # the history the sparklines draw
        try:
            drift = await self.api.drift()
        except ApiError as exc:
            if not exc.missing:
                raise
            drift = None  # an older server without drift checks
        self.show(sets, runs, drift)
        if self.comparing:
            return  # a comparison stays as computed until another run is selected
        key = selected_key(self.query_one("#eval-runs", DataTable))
        run = next((r for r in runs if r["id"] == key), None)
        if run is None:
            return
        seen = (run["id"], run["state"], run["progress"]["processed"])
        if seen != self._detail_seen:
            self.show_run(run, await self.api.eval_run_items(run["id"], "worst", None, WORST))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "eval-runs" or not event.row_key.value:
            return
        if event.row_key.value == self._detail_id:
            return
        if self.console.live:
            self.run_worker(
                self._run_detail(event.row_key.value),
                group="eval-detail",
                exclusive=True,
                exit_on_error=False,
            )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a run shows its items again (after a comparison)."""
        if event.data_table.id == "eval-runs" and event.row_key.value and self.console.live:
            self.run_worker(
                self._run_detail(event.row_key.value),
                group="eval-detail",
                exclusive=True,
                exit_on_error=False,
            )

    @guarded
    async def _run_detail(self, run_id: str) -> None:
        run = await self.api.eval_run(run_id)
        self.show_run(run, await self.api.eval_run_items(run_id, "worst", None, WORST))

    # -- showing -------------------------------------------------------------------------------
    def show(self, sets: list[dict], runs: list[dict], drift: list[dict] | None = None) -> None:
        self._sets, self._runs = sets, runs
        self.show_drift(drift)
        fill_table(
            self.query_one("#eval-sets", DataTable),
            [
                (
                    s["name"],
                    s["kind"],
                    f"v{s['version']}",
                    str(s["item_count"]),
                    f"{s['answerable']}/{s['unanswerable']}",
                    s.get("collection") or "-",
                    "yes" if s.get("used") else "no",
                    self._history(s),
                )
                for s in sets
            ],
            [s["name"] for s in sets],
        )
        self._show_runs()

    def _history(self, evalset: dict) -> str:
        """The set's headline metric over its finished runs, oldest first, with the latest value."""
        runs = [
            r for r in reversed(self._runs) if r["set_name"] == evalset["name"] and r["state"] == "succeeded"
        ]
        metric = headline_of(evalset["kind"], runs)
        if metric is None:
            return "no finished runs"
        values = [r["scorecard"][metric] for r in runs if r["scorecard"].get(metric) is not None]
        return f"{metric} {fmt.spark(values)} {number(metric, values[-1])}"

    def _show_runs(self) -> None:
        def mark(run_id: str) -> Text:
            if run_id not in self._marked:
                return Text("")
            return Text("AB"[self._marked.index(run_id)], style="bold reverse")

        fill_table(
            self.query_one("#eval-runs", DataTable),
            [
                (
                    mark(r["id"]),
                    f"{r['set_name']} v{r['set_version']}",
                    fmt.short_ts(r.get("created_at")),
                    fmt.state(r["state"]),
                    f"{r['progress']['processed']}/{r['progress']['total']}",
                    *(number(key, r["scorecard"].get(key)) for key, _ in HEADLINE),
                    ((r.get("config") or {}).get("retrieval") or {}).get("mode")
                    or r["options"].get("mode")
                    or "-",
                    ((r.get("config") or {}).get("chat_model") or {}).get("name") or "-",
                    r["id"],
                )
                for r in self._runs
            ],
            [r["id"] for r in self._runs],
        )

    def show_drift(self, reports: list[dict] | None) -> None:
        """One line: per collection, what drifted at its latest check, or that nothing did."""
        line = self.query_one("#eval-drift", Label)
        if reports is None:
            line.update("drift · not checked by this server")
        elif not reports:
            line.update("drift · no checks yet (appliance eval drift)")
        else:
            parts = [
                f"{r['collection']}: "
                + (
                    ", ".join(s["signal"] for s in r["signals"] if s["drifted"])
                    if r["drifted"]
                    else "no drift"
                )
                for r in reports
            ]
            line.update("drift · " + " · ".join(parts))
        line.set_class(any(r.get("drifted") for r in reports or []), "-drifted")

    def show_run(self, run: dict, items: list[dict]) -> None:
        """A run's scorecard and its worst items (leaving a comparison shown before)."""
        self.comparing = False
        self._detail_id = run["id"]
        self._detail_seen = (run["id"], run["state"], run["progress"]["processed"])
        p, options = run["progress"], run["options"]
        self.query_one("#eval-detail-title", Label).update(
            f"{run['id']} · {run['set_name']} v{run['set_version']} · {run['state']} "
            f"{p['processed']}/{p['total']} · {options['collection']} · top_k {options['top_k']}"
            + (f" · {fmt.clip(run['error'], 60)}" if run.get("error") else "")
        )
        card = run["scorecard"]
        self.query_one("#eval-scorecard", Static).update(
            Text(
                "  ".join(f"{k} {number(k, v)}" for k, v in card.items() if v is not None) or "no scores yet"
            )
        )
        fill_table(
            self.query_one("#eval-worst", DataTable),
            [
                (
                    str(o["ordinal"]),
                    fmt.clip(o["item_id"], 16),
                    fmt.clip(o["question"], 48),
                    item_metric(o),
                    fmt.clip(o.get("error") if o["state"] != "done" else o.get("answer") or "-", 60),
                )
                for o in items
            ],
            [str(o["ordinal"]) for o in items],
        )
        self._show_detail("worst")

    def show_comparison(self, comparison: dict) -> None:
        """Run B against run A, metric by metric: B - A with its paired bootstrap interval."""
        self.comparing = True
        # Shown until another run is selected (a refresh re-highlights the same row: no change).
        self._detail_id = selected_key(self.query_one("#eval-runs", DataTable))
        self._detail_seen = None
        self.query_one("#eval-detail-title", Label).update(
            f"B {comparison['run_b']} vs A {comparison['run_a']} · {comparison['paired_items']} paired items"
        )
        self.query_one("#eval-scorecard", Static).update(
            f"{comparison['confidence'] * 100:.0f}% paired bootstrap, {comparison['resamples']} resamples"
        )
        fill_table(
            self.query_one("#eval-comparison", DataTable),
            [
                (
                    m["metric"],
                    number(m["metric"], m["a"]),
                    number(m["metric"], m["b"]),
                    f"{m['difference']:+.3f}",
                    f"[{number(m['metric'], m['low'])}, {number(m['metric'], m['high'])}]"
                    if m.get("low") is not None
                    else "-",
                    Text(m["verdict"], style=VERDICT_STYLES.get(m["verdict"], "")),
                )
                for m in comparison["metrics"]
            ],
            [m["metric"] for m in comparison["metrics"]],
        )
        self._show_detail("comparison")

    def _show_detail(self, which: str) -> None:
        self.query_one("#eval-worst", DataTable).display = which == "worst"
        self.query_one("#eval-comparison", DataTable).display = which == "comparison"

    # -- actions -------------------------------------------------------------------------------
    def action_mark(self) -> None:
        run_id = selected_key(self.query_one("#eval-runs", DataTable))
        if not run_id:
            return
        if run_id in self._marked:
            self._marked.remove(run_id)
        else:
            self._marked = [*self._marked, run_id][-2:]
        self._show_runs()

    def pair(self) -> tuple[str, str] | None:
        """The runs to compare: the two marked (A first), or the marked one against the selected."""
        if len(self._marked) == 2:
            return self._marked[0], self._marked[1]
        selected = selected_key(self.query_one("#eval-runs", DataTable))
        if len(self._marked) == 1 and selected and selected != self._marked[0]:
            return self._marked[0], selected
        return None

    def action_compare(self) -> None:
        pair = self.pair()
        if pair is None:
            self.console.notice("mark two runs with m (or mark one and select another), then c")
            return
        self.run_action(self._compare(*pair), "compare")

    async def _compare(self, run_a: str, run_b: str) -> None:
        self.show_comparison(await self.api.compare_eval_runs(run_a, run_b))

    def action_start(self) -> None:
        name = selected_key(self.query_one("#eval-sets", DataTable))
        evalset = next((s for s in self._sets if s["name"] == name), None)
        if evalset is None:
            self.console.notice("no eval set selected (appliance eval import adds one)")
            return

        async def start(values: dict | None) -> None:
            if values is None:
                return
            limit = values["limit"]
            if limit and not (limit.isdigit() and int(limit) > 0):
                self.console.notice(f"limit must be a positive whole number, not {limit!r}")
                return
            mode = None if values["mode"] == "default" else values["mode"]
            self.run_action(
                self._start(name, values["collection"] or None, mode, int(limit) if limit else None), "start"
            )

        self.app.push_screen(
            FormDialog(
                f"Run eval set {name} v{evalset['version']}",
                [
                    (
                        "collection",
                        "collection (empty: where the set's corpus went)",
                        evalset.get("collection") or "",
                    ),
                    ("mode", "search mode", MODES),
                    ("limit", "only the first N items (empty: all)", ""),
                ],
            ),
            start,
        )

    async def _start(self, name: str, collection: str | None, mode: str | None, limit: int | None) -> None:
        run = await self.api.start_eval_run(name, collection, mode, limit=limit)
        self.console.notice(f"run {run['id']} of {name} started")
        self.reload()

    def commands(self) -> Iterator[tuple[str, str, Callable[[], object]]]:
        yield "Run eval set", "Run the selected eval set (r)", self.action_start
        yield "Mark eval run", "Mark the selected run for a comparison (m)", self.action_mark
        yield "Compare eval runs", "Run B against run A with 95% intervals (c)", self.action_compare
