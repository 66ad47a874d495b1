"""Search & Ask: hybrid hits with scores and sources, and cited answers that stream in."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, DataTable, Input, Label, Static

from appliance.client import ApiError
from appliance.tui import fmt
from appliance.tui.dialogs import TextDialog
from appliance.tui.rating import RATE_BINDINGS, RatesAnswers
from appliance.tui.widgets import fill_table, guarded


class SearchView(RatesAnswers):
    """Type a query: enter searches (ranked hits with score, source and location), ctrl+o asks
    (the answer streams, with numbered citations). Enter on a hit or a citation shows its chunk;
    + or - (after escape) rates the answer."""

    label = "search"
    initial_focus = "#query"
    BINDINGS = [Binding("ctrl+o", "ask", "Ask"), *RATE_BINDINGS]
    DEFAULT_CSS = """
    SearchView #query-row { height: 3; }
    SearchView #query { width: 1fr; }
    SearchView #hits { height: 1fr; min-height: 4; }
    SearchView #answer-box { height: 1fr; min-height: 5; border-top: solid $primary 50%; }
    SearchView #answer-scroll { height: 1fr; }
    SearchView #answer { padding: 0 1; }
    SearchView #citations { height: auto; max-height: 8; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self._hits: list[dict] = []
        self._citations: list[dict] = []
        self.streamed_tokens = 0  # of the latest answer, shown as it streams
        self._answer_status = ""

    def compose(self) -> ComposeResult:
        with Horizontal(id="query-row"):
            yield Input(placeholder="search or ask the knowledge base", id="query")
            yield Button("Search", id="do-search")
            yield Button("Ask", id="do-ask", variant="primary")
        yield Label("", id="search-status", classes="hint")
        yield DataTable(id="hits", cursor_type="row", zebra_stripes=True)
        with Vertical(id="answer-box"):
            with VerticalScroll(id="answer-scroll"):
                yield Static("", id="answer")
            yield DataTable(id="citations", cursor_type="row")

    def on_mount(self) -> None:
        self.query_one("#hits", DataTable).add_columns("#", "score", "title", "source", "location")
        self.query_one("#citations", DataTable).add_columns("n", "title", "source", "location")

    @property
    def query_text(self) -> str:
        return self.query_one("#query", Input).value.strip()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "query":
            self.action_search()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "do-search":
            self.action_search()
        elif event.button.id == "do-ask":
            self.action_ask()

    def action_search(self) -> None:
        if self.query_text:
            self.run_worker(
                self._search(self.query_text), group="search", exclusive=True, exit_on_error=False
            )

    def action_ask(self) -> None:
        if self.query_text:
            self.run_worker(self._ask(self.query_text), group="search", exclusive=True, exit_on_error=False)

    @guarded
    async def _search(self, query: str) -> None:
        self.query_one("#search-status", Label).update("searching…")
        result = await self.api.search(query, top_k=20)
        self.show_hits(
            result["hits"],
            f"{len(result['hits'])} hits · {result.get('mode', '')} · "
            f"{result['timings'].get('total_ms', 0):.0f} ms",
        )

    def show_hits(self, hits: list[dict], status: str) -> None:
        self._hits = hits
        self.query_one("#search-status", Label).update(status)
        fill_table(
            self.query_one("#hits", DataTable),
            [
                (
                    str(i),
                    f"{h['score']:.3f}",
                    fmt.clip(h.get("title") or h["source_id"], 30),
                    fmt.clip(h["source_id"], 28),
                    fmt.clip(fmt.location(h.get("location")), 30),
                )
                for i, h in enumerate(hits, 1)
            ],
            [str(h["chunk_id"]) for h in hits],
        )

    @guarded
    async def _ask(self, question: str) -> None:
        answer = self.query_one("#answer", Static)
        status = self.query_one("#search-status", Label)
        self._citations = []
        fill_table(self.query_one("#citations", DataTable), [])
        status.update("asking… retrieving sources")
        answer.update("")
        text = ""
        self.streamed_tokens = 0
        async for event in self.api.ask(question):
            kind = event.get("type")
            if kind == "queue":
                status.update(f"waiting for the model: position {event.get('position')} in the queue")
            elif kind == "sources":
                status.update(f"{event.get('sources', 0)} sources · generating…")
            elif kind == "token":
                text += event.get("text", "")
                self.streamed_tokens += 1
                answer.update(text)
                self.query_one("#answer-scroll", VerticalScroll).scroll_end(animate=False)
            elif kind == "error":
                raise ApiError.from_event(event, "Answer failed")
            elif kind == "answer":
                self.show_answer(event)

    def show_answer(self, event: dict) -> None:
        self.query_one("#answer", Static).update(event.get("answer", ""))
        self._citations = event.get("citations", [])
        self.answered(event)
        timings = event.get("timings", {})
        self._answer_status = (
            f"answered by {event.get('model', '?')} · {len(self._citations)} citations · "
            f"first token {timings.get('first_token_ms') or 0:.0f} ms · total {timings.get('total_ms', 0):.0f} ms"
        )
        self.query_one("#search-status", Label).update(self._answer_status)
        fill_table(
            self.query_one("#citations", DataTable),
            [
                (
                    f"[{c['n']}]",
                    fmt.clip(c.get("title") or c["source_id"], 30),
                    fmt.clip(c["source_id"], 28),
                    fmt.clip(fmt.location(c.get("location")), 30),
                )
                for c in self._citations
            ],
            [str(c["n"]) for c in self._citations],
        )

    def show_rating(self, rating: str) -> None:
        self.query_one("#search-status", Label).update(f"{self._answer_status} · rated {rating}")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value
        if event.data_table.id == "hits":
            hit = next((h for h in self._hits if str(h["chunk_id"]) == key), None)
            if hit is not None:
                self.app.push_screen(
                    TextDialog(
                        hit.get("title") or hit["source_id"],
                        hit["text"],
                        f"{hit['source_id']} · {fmt.location(hit.get('location'))} · score {hit['score']:.3f}",
                    )
                )
        elif event.data_table.id == "citations":
            cite = next((c for c in self._citations if str(c["n"]) == key), None)
            if cite is not None:
                self.run_worker(
                    self._open_citation(cite), group="citation", exclusive=True, exit_on_error=False
                )

    @guarded
    async def _open_citation(self, cite: dict) -> None:
        """The whole cited chunk, from its document (the answer event carries only a snippet)."""
        doc = await self.api.document(cite["document_id"], chunks=True)
        chunk = next((c for c in doc.get("chunks", []) if c["chunk_id"] == cite["chunk_id"]), None)
        text = chunk["text"] if chunk else cite.get("snippet", "")
        self.app.push_screen(
            TextDialog(
                f"[{cite['n']}] {cite.get('title') or cite['source_id']}",
                text,
                f"{cite['source_id']} · {fmt.location(cite.get('location'))}",
            )
        )
