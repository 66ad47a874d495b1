"""Modal dialogs of the console: confirm, show a text (a chunk, a new key), and a small form."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{ width: 90%; max-width: 100; height: auto; max-height: 90%; border: thick $primary;
    background: $surface; padding: 0 1; }}
{name} .dialog-title {{ text-style: bold; height: 1; margin-bottom: 1; }}
{name} .buttons {{ height: 3; align-horizontal: right; }}
{name} Button {{ margin-left: 1; }}
"""


class ConfirmDialog(ModalScreen[bool]):
    """Yes or no; `y`/`enter` confirm, `n`/`escape` cancel."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmDialog")
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question, classes="dialog-title")
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class TextDialog(ModalScreen[None]):
    """A title and a scrollable text (a chunk, a key shown once); `escape` closes."""

    DEFAULT_CSS = (
        DIALOG_CSS.format(name="TextDialog")
        + """
    TextDialog VerticalScroll { height: auto; max-height: 30; }
    """
    )
    BINDINGS = [Binding("escape,q", "close", "Close")]

    def __init__(self, title: str, body: str, note: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="dialog-title")
            with VerticalScroll():
                yield Static(self.body, id="dialog-body", markup=False)
            if self.note:
                yield Label(self.note, classes="hint")
            with Horizontal(classes="buttons"):
                yield Button("Close (esc)", id="close")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)


class FormDialog(ModalScreen[dict | None]):
    """A few named fields (text inputs, or selects when given choices); `enter` on the last
    field or OK submits, `escape` cancels. Dismisses with {name: value} or None."""

    DEFAULT_CSS = (
        DIALOG_CSS.format(name="FormDialog")
        + """
    FormDialog Input, FormDialog Select { margin-bottom: 1; }
    """
    )
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, fields: Sequence[tuple[str, str, str | Sequence[str]]]) -> None:
        """`fields`: (name, label, default text or list of choices)."""
        super().__init__()
        self.title_text = title
        self.fields = list(fields)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="dialog-title")
            for name, label, spec in self.fields:
                if isinstance(spec, str):
                    yield Input(value=spec, placeholder=label, id=f"field-{name}")
                else:
                    yield Select(
                        [(c, c) for c in spec],
                        value=spec[0],
                        allow_blank=False,
                        prompt=label,
                        id=f"field-{name}",
                    )
            with Horizontal(classes="buttons"):
                yield Button("OK", variant="primary", id="ok")
                yield Button("Cancel (esc)", id="cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        inputs = list(self.query(Input))
        if event.input is inputs[-1]:
            self._submit()
        else:
            self.focus_next()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._submit()
        else:
            self.dismiss(None)

    def _submit(self) -> None:
        values: dict[str, str] = {}
        for name, _, _ in self.fields:
            widget = self.query_one(f"#field-{name}")
            values[name] = str(widget.value).strip() if widget.value is not None else ""  # type: ignore[attr-defined]
        self.dismiss(values)

    def action_cancel(self) -> None:
        self.dismiss(None)
