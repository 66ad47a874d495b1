"""Reusable console widgets: the base of every view, the error banner, and metric cards with sparklines."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Label, Sparkline, Static

from appliance.client import ApiError, AsyncApplianceClient


class ConsoleHost(Protocol):
    """What a view needs of the app that hosts it (the ConsoleApp), so views never import the app."""

    api: AsyncApplianceClient
    live: bool

    def report(self, exc: ApiError, source: str) -> None: ...

    def report_ok(self, source: str) -> None: ...

    def notice(self, message: str) -> None: ...


T = TypeVar("T")


class Banner(Static):
    """One line above the footer saying what is wrong (unreachable server, rejected key, a failed
    action); hidden while all is well."""

    DEFAULT_CSS = """
    Banner { dock: bottom; height: auto; max-height: 3; padding: 0 1; display: none; }
    Banner.-error { display: block; background: $error 30%; color: $text; }
    Banner.-info { display: block; background: $primary 25%; color: $text; }
    """

    def show_error(self, message: str) -> None:
        self.update(message)
        self.set_class(False, "-info")
        self.set_class(True, "-error")

    def show_info(self, message: str) -> None:
        self.update(message)
        self.set_class(False, "-error")
        self.set_class(True, "-info")

    def clear(self) -> None:
        self.update("")
        self.set_class(False, "-error", "-info")


def guarded(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T | None]]:
    """Runs a view's server call; any failure becomes a message in the banner, never a traceback
    (a worker's exception would otherwise end the app)."""

    @functools.wraps(method)
    async def wrapper(self: View, *args: Any, **kwargs: Any) -> T | None:
        try:
            result = await method(self, *args, **kwargs)
        except ApiError as exc:
            self.console.report(exc, self.label)
            return None
        except Exception as exc:  # an unexpected answer: say so and keep the console alive
            self.console.report(ApiError(-1, "Unexpected answer", f"{type(exc).__name__}: {exc}"), self.label)
            return None
        self.console.report_ok(self.label)
        return result

    return wrapper


class View(Vertical):
    """One screen of the console (a tab). `load` fetches and shows its data; the app calls
    `reload` when the tab opens and every `refresh_seconds` while it is shown."""

    label = "view"
    refresh_seconds: float | None = None
    initial_focus: str | None = None  # a selector

    DEFAULT_CSS = """
    View { height: 1fr; }
    View DataTable { height: 1fr; }
    View .section { color: $text-muted; text-style: bold; height: 1; padding: 0 1; }
    View .hint { color: $text-muted; height: 1; padding: 0 1; }
    """

    @property
    def console(self) -> ConsoleHost:
        return self.app  # type: ignore[return-value]

    @property
    def api(self) -> AsyncApplianceClient:
        return self.console.api

    def focus_first(self) -> None:
        """Keyboard first: opening a tab puts the cursor in it (`initial_focus`, else its first field)."""
        if self.initial_focus:
            self.query_one(self.initial_focus).focus()
            return
        for widget in self.query("*"):
            if widget.focusable and widget.display:
                widget.focus()
                return

    def reload(self) -> None:
        """Fetch again in a worker, replacing a fetch still under way (the UI never waits)."""
        if self.console.live:
            self.run_worker(self._fetch(), group=f"load-{self.id}", exclusive=True, exit_on_error=False)

    @guarded
    async def _fetch(self) -> None:
        await self.load()

    async def load(self) -> None:
        """Override: fetch from the API and call `show`."""

    def commands(self) -> Iterator[tuple[str, str, Callable[[], object]]]:
        """Override: this screen's entries in the command palette, as (title, help, callback)."""
        return iter(())

    def run_action(self, work: Awaitable[Any], name: str) -> None:
        """A user action (delete, revoke, ...) in a worker; its failure lands in the banner."""
        self.run_worker(self._act(work), group=f"act-{name}", exit_on_error=False)

    @guarded
    async def _act(self, work: Awaitable[Any]) -> Any:
        return await work


class MetricCard(Vertical):
    """A labelled number with a sparkline of its recent history."""

    DEFAULT_CSS = """
    MetricCard { height: 2; width: 1fr; min-width: 24; padding: 0 1; }
    MetricCard .card-head { height: 1; width: 1fr; }
    MetricCard Sparkline { height: 1; width: 1fr; }
    MetricCard Sparkline > .sparkline--max-color { color: $accent; }
    MetricCard Sparkline > .sparkline--min-color { color: $accent 40%; }
    """

    def __init__(self, title: str, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title = title

    def compose(self) -> ComposeResult:
        yield Label(f"[b]{self.title}[/b]  -", classes="card-head")
        yield Sparkline([])

    def set(self, value: str, history: Sequence[float] | None = None) -> None:
        self.query_one(".card-head", Label).update(f"[b]{self.title}[/b]  {value}")
        self.query_one(Sparkline).data = list(history or [])


def fill_table(table: DataTable, rows: Sequence[Sequence[Any]], keys: Sequence[str] | None = None) -> None:
    """Replace a table's rows, keeping the cursor on the same row key when it is still there."""
    selected = None
    if table.row_count and table.cursor_row >= 0:
        try:
            selected = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:
            selected = None
    table.clear()
    for i, row in enumerate(rows):
        table.add_row(*row, key=keys[i] if keys else None)
    if selected is not None and keys and selected in keys:
        table.move_cursor(row=list(keys).index(selected))


def selected_key(table: DataTable) -> str | None:
    if not table.row_count:
        return None
    try:
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    except Exception:
        return None
