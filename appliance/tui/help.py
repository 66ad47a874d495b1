"""The help screen (`?`): the keys of every screen, generated from their bindings."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from appliance.tui.widgets import View

INTRO = """\
# Appliance console

Keyboard first; the mouse works too. **1–9** and **0** switch screens, **tab** moves between fields,
**ctrl+p** opens the command palette, **ctrl+r** refreshes, **?** shows this help,
**ctrl+q** quits. Tables: arrows move, **enter** opens the row.

The console only talks to the server's API: it never opens the database or the index files.
"""


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; max-width: 100; height: 90%; border: thick $primary;
        background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, screens: Sequence[tuple[str, str, type[View]]]) -> None:
        super().__init__()
        self.screens = screens

    def compose(self) -> ComposeResult:
        lines = [INTRO]
        for i, (_, title, view) in enumerate(self.screens, 1):
            lines.append(f"## {i % 10} · {title}\n")
            lines.append((view.__doc__ or "").strip() + "\n")
            for binding in view.BINDINGS:
                if isinstance(binding, Binding):
                    lines.append(f"- **{binding.key_display or binding.key}** {binding.description}")
            lines.append("")
        with VerticalScroll():
            yield Markdown("\n".join(lines))

    def action_close(self) -> None:
        self.dismiss(None)
