"""The help screen (`?`): the keys of every screen, generated from their bindings."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from appliance.tui.widgets import View

# The digits open the first ten tabs; past them a letter that no screen binds (`p` is the Models
# screen's promote, so the Plan tab is shift+p).
EXTRA_TAB_KEYS = ("P",)


def tab_key(position: int) -> str:
    """The key that opens the tab at `position` (1-based): 1-9, 0 for the tenth, then EXTRA_TAB_KEYS."""
    return str(position % 10) if position <= 10 else EXTRA_TAB_KEYS[position - 11]


INTRO = """\
# Appliance console

Keyboard first; the mouse works too. **1–9**, **0** and **P** (shift+p: Plan) switch screens, **tab** moves between fields,
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
            lines.append(f"## {tab_key(i)} · {title}\n")
            lines.append((view.__doc__ or "").strip() + "\n")
            for binding in view.BINDINGS:
                if isinstance(binding, Binding):
                    lines.append(f"- **{binding.key_display or binding.key}** {binding.description}")
            lines.append("")
        with VerticalScroll():
            yield Markdown("\n".join(lines))

    def action_close(self) -> None:
        self.dismiss(None)
