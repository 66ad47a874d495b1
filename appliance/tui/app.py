"""The console app: one tab per screen, key bindings, command palette, and connection reporting."""

from __future__ import annotations

import ssl
from collections.abc import Iterable

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane

from appliance.client import ApiError, AsyncApplianceClient
from appliance.tui.help import HelpScreen, tab_key
from appliance.tui.rating import RatesAnswers
from appliance.tui.screens.chat import ChatView
from appliance.tui.screens.dashboard import DashboardView
from appliance.tui.screens.evals import EvalsView
from appliance.tui.screens.jobs import JobsView
from appliance.tui.screens.keys import KeysView
from appliance.tui.screens.knowledge import KnowledgeView
from appliance.tui.screens.logs import LogsView
from appliance.tui.screens.models import ModelsView
from appliance.tui.screens.plan import PlanView
from appliance.tui.screens.search import SearchView
from appliance.tui.screens.workflows import WorkflowsView
from appliance.tui.widgets import Banner, View

# (tab id, tab title, view class); the keys follow this order (1-9, then 0, then help.EXTRA_TAB_KEYS).
SCREENS: tuple[tuple[str, str, type[View]], ...] = (
    ("dashboard", "Dashboard", DashboardView),
    ("knowledge", "Knowledge", KnowledgeView),
    ("search", "Search", SearchView),
    ("chat", "Chat", ChatView),
    ("jobs", "Jobs", JobsView),
    ("models", "Models", ModelsView),
    ("keys", "Keys", KeysView),
    ("logs", "Logs", LogsView),
    ("evals", "Evals", EvalsView),
    ("workflows", "Workflows", WorkflowsView),
    ("plan", "Plan", PlanView),
)
__all__ = ["SCREENS", "ConsoleApp", "run_console", "tab_key"]


class ConsoleApp(App[None]):
    """`live=False` starts with no server traffic at all: snapshot tests fill views with fixed data."""

    TITLE = "Appliance console"
    CSS = """
    TabbedContent, ContentSwitcher, TabPane { height: 1fr; }
    TabPane { padding: 0; }
    """
    BINDINGS = [
        *[
            Binding(tab_key(i), f"show_tab('{ident}')", title, show=False)
            for i, (ident, title, _) in enumerate(SCREENS, 1)
        ],
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("ctrl+r", "refresh", "Refresh"),
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("escape", "leave_field", "Leave field", show=False),
        # Also here, not only on the views that show answers: after escape nothing is focused, and
        # a view's own bindings hear keys only while something inside it has the focus.
        Binding("plus", "rate('up')", "Rate answer up", show=False),
        Binding("minus", "rate('down')", "Rate answer down", show=False),
    ]

    def __init__(
        self, url: str, key: str, live: bool = True, api: AsyncApplianceClient | None = None
    ) -> None:
        super().__init__()
        self.api = api or AsyncApplianceClient(url, key)
        self.live = live
        self._failing: dict[str, ApiError] = {}

    def compose(self) -> ComposeResult:
        with TabbedContent(initial="tab-dashboard", id="tabs"):
            for i, (ident, title, view) in enumerate(SCREENS, 1):
                with TabPane(f"{tab_key(i)} {title}", id=f"tab-{ident}"):
                    yield view(id=f"view-{ident}")
        yield Banner(id="banner")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.api.url
        self.active_view.focus_first()
        if self.live:
            self.run_worker(self._check_connection(), group="connection", exit_on_error=False)
            self.set_interval(1.0, self._tick)

    async def on_unmount(self) -> None:
        await self.api.aclose()

    # -- views --------------------------------------------------------------------------
    @property
    def active_view(self) -> View:
        return self.view(self.active_tab)

    @property
    def active_tab(self) -> str:
        return self.query_one("#tabs", TabbedContent).active.removeprefix("tab-")

    def view(self, ident: str) -> View:
        return self.query_one(f"#view-{ident}", View)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.tabbed_content.id == "tabs":
            self.active_view.reload()
            self.active_view.focus_first()
            self._since_refresh = 0.0
            if self._failing:
                self._show_banner()

    _since_refresh = 0.0

    def _tick(self) -> None:
        try:
            view = self.active_view
        except NoMatches:  # the app is exiting: its widgets go before its timers stop
            return
        self._since_refresh += 1.0
        if view.refresh_seconds and self._since_refresh >= view.refresh_seconds:
            self._since_refresh = 0.0
            view.reload()

    def action_show_tab(self, ident: str) -> None:
        self.query_one("#tabs", TabbedContent).active = f"tab-{ident}"

    def action_leave_field(self) -> None:
        """Escape from a text field gives the keys back to the screen (1-9, ?, the screen's own)."""
        self.screen.set_focus(None)

    def action_rate(self, rating: str) -> None:
        view = self.active_view
        if isinstance(view, RatesAnswers):
            view.action_rate(rating)

    def action_refresh(self) -> None:
        self.active_view.reload()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(SCREENS))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for ident, title, _ in SCREENS:
            yield SystemCommand(
                f"Go to {title}", f"Open the {title} screen", lambda i=ident: self.action_show_tab(i)
            )
        yield SystemCommand("Refresh", "Fetch the current screen again", self.action_refresh)
        yield SystemCommand("Help", "Keys of every screen", self.action_help)
        try:  # the screen's own commands (the palette asks about the screen it was opened on)
            tabs = screen.query_one("#tabs", TabbedContent)
            view = screen.query_one(f"#view-{tabs.active.removeprefix('tab-')}", View)
        except NoMatches:
            return
        for title, help_text, callback in view.commands():
            yield SystemCommand(title, help_text, callback)

    # -- connection and errors ------------------------------------------------------------
    async def _check_connection(self) -> None:
        """Tell an unreachable server from a rejected key at start, before any view complains."""
        try:
            await self.api.ready()
            await self.api.stats()
        except ApiError as exc:
            self.report(exc, "connection")
            return
        self.report_ok("connection")

    def report(self, exc: ApiError, source: str) -> None:
        self._failing[source] = exc
        self._show_banner()

    def report_ok(self, source: str) -> None:
        if self._failing.pop(source, None) is not None or (
            source != "connection" and "connection" in self._failing
        ):
            # A view that works again proves the connection is back, too.
            self._failing.pop("connection", None)
            self._show_banner()

    def _show_banner(self) -> None:
        banner = self.query_one(Banner)
        if not self._failing:
            banner.clear()
            return
        # The shown screen's own failure first: a view still loading in the background (the
        # dashboard opened at start) must not hide why the screen in front of the operator is empty.
        active = self.active_tab
        if active in self._failing:
            source, exc = active, self._failing[active]
        else:
            source, exc = next(reversed(self._failing.items()))
        prefix = "" if source == "connection" else f"{source}: "
        title, detail = explain(exc)
        banner.show_error(f"{prefix}{title} — {detail}")

    def notice(self, message: str) -> None:
        self.notify(message, timeout=4)


def explain(exc: ApiError) -> tuple[str, str]:
    """Title and detail as the operator should read them: a refused key says how to pass another."""
    if exc.status == 401:
        return (
            "Key rejected",
            f"the server refused the API key ({exc.detail}); pass --key or set APPLIANCE_KEY",
        )
    if exc.status == 403:
        return "Admin key needed", exc.detail
    return exc.title, exc.detail


def run_console(url: str, key: str, verify: ssl.SSLContext | bool = True) -> int:
    """`appliance console`: runs until the operator quits."""
    ConsoleApp(url, key, api=AsyncApplianceClient(url, key, verify=verify)).run()
    return 0
