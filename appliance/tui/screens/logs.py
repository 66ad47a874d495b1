"""Logs: the server's recent structured log lines, followed live and filterable by level."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, Label, RichLog, Select

from appliance.tui import fmt
from appliance.tui.widgets import View

LEVELS = ("debug", "info", "warning", "error", "critical")
SKIP = {"ts", "level", "logger", "msg", "seq", "exc"}


def render_line(line: dict) -> Text:
    level = line.get("level", "info")
    text = Text.assemble(
        (fmt.short_ts(line.get("ts")) + " ", "dim"),
        (f"{level:<8}", fmt.LEVEL_STYLES.get(level, "")),
        (f"{line.get('logger', '')}: ", "dim"),
        line.get("msg", ""),
    )
    extras = " ".join(f"{k}={v}" for k, v in line.items() if k not in SKIP)
    if extras:
        text.append(" " + extras, style="dim")
    if line.get("exc"):
        text.append("\n" + str(line["exc"]), style="red")
    return text


class LogsView(View):
    """The server's log lines as they happen (oldest at the top). Choose the lowest level shown;
    type in the filter to keep lines containing that text."""

    label = "logs"
    initial_focus = "#log"
    refresh_seconds = 2.0
    DEFAULT_CSS = """
    LogsView #logs-head { height: 3; }
    LogsView #level { width: 20; }
    LogsView #log-filter { width: 1fr; }
    LogsView #log-count { width: auto; padding: 1 1 0 1; }
    LogsView RichLog { height: 1fr; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self._lines: list[dict] = []
        self._after = 0
        self.fetches = 0  # completed reads of the ring

    def compose(self) -> ComposeResult:
        with Horizontal(id="logs-head"):
            yield Select([(lv, lv) for lv in LEVELS], value="info", allow_blank=False, id="level")
            yield Input(placeholder="filter text", id="log-filter")
            yield Label("", id="log-count")
        yield RichLog(id="log", wrap=True, max_lines=2000, auto_scroll=True)

    @property
    def level(self) -> str:
        return str(self.query_one("#level", Select).value)

    async def load(self) -> None:
        data = await self.api.logs(self.level, limit=500, after=self._after)
        self.append(data["lines"])
        self._after = max(self._after, int(data.get("last_seq") or 0))
        self.fetches += 1

    def append(self, lines: list[dict]) -> None:
        self._lines = (self._lines + lines)[-2000:]
        needle = self.query_one("#log-filter", Input).value.strip().lower()
        log = self.query_one(RichLog)
        for line in lines:
            if not needle or needle in str(line).lower():
                log.write(render_line(line))
        self.query_one("#log-count", Label).update(f"{len(self._lines)} lines")

    def _redraw(self) -> None:
        kept, self._lines = self._lines, []
        self.query_one(RichLog).clear()
        self.append(kept)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "level":
            # Another level: read the ring again from its start, at that level.
            self._lines, self._after = [], 0
            self.query_one(RichLog).clear()
            self.reload()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "log-filter":
            self._redraw()
