"""Models: the chat model's backend, context and health, the models that could be loaded; load and unload."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Label, Static

from appliance.tui import fmt
from appliance.tui.dialogs import ConfirmDialog
from appliance.tui.widgets import View, fill_table, selected_key


class ModelsView(View):
    """The loaded chat model (backend llama.cpp or vLLM, context, queue, health) and the embedding
    model; below, every model this server can load. `l` loads the selected one in place of the
    current one, `u` unloads the chat model (search keeps working)."""

    label = "models"
    initial_focus = "#available"
    refresh_seconds = 3.0
    BINDINGS = [Binding("l", "load", "Load selected"), Binding("u", "unload", "Unload")]
    DEFAULT_CSS = """
    ModelsView #loaded { height: auto; padding: 0 1; }
    ModelsView #available { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield Label("Loaded", classes="section")
        yield Static("", id="loaded")
        yield Label("Available (enter or l loads)", classes="section")
        yield DataTable(id="available", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        self.query_one("#available", DataTable).add_columns(
            "model", "size", "context", "source", "loaded", "about"
        )

    async def load(self) -> None:
        self.show(await self.api.models())

    def show(self, data: dict) -> None:
        chat, emb = data["chat"], data["embedding"]
        lines = []
        if chat["state"] == "loaded":
            queue = chat.get("queue") or {}
            lines.append(
                f"[b]{chat.get('name')}[/b]  {fmt.state('ok' if chat.get('ok', True) else 'down').markup}"
                f"  backend {chat.get('backend')} · context {chat.get('context_length')} tokens"
                + (f" · {chat['threads']} threads" if chat.get("threads") else "")
            )
            lines.append(
                f"  slots {queue.get('in_use', 0)}/{queue.get('slots', '?')} busy · "
                f"{queue.get('waiting', 0)} waiting (max {queue.get('max_queue', '?')}) · "
                f"served {queue.get('served', 0)} · rejected {queue.get('rejected', 0)}"
            )
            lines.append(f"  [dim]{chat.get('model_path', '')}[/dim]")
        else:
            lines.append(
                f"[b]chat model[/b]  {fmt.state(chat['state']).markup}"
                + (f"  {chat['error']}" if chat.get("error") else "")
            )
        lines.append(
            f"[b]{emb['name']}[/b]  {fmt.state(emb['state']).markup}  embedding · {emb['dimensions']} dimensions"
        )
        self.query_one("#loaded", Static).update("\n".join(lines))
        models = data["available"]
        fill_table(
            self.query_one("#available", DataTable),
            [
                (
                    m["name"],
                    fmt.size(m.get("size_bytes")),
                    str(m.get("context_length") or "-"),
                    fmt.clip(m.get("source"), 28),
                    "●" if m.get("loaded") else "",
                    fmt.clip(m.get("description"), 40),
                )
                for m in models
            ],
            [m["name"] for m in models],
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_load()

    def action_load(self) -> None:
        name = selected_key(self.query_one("#available", DataTable))
        if not name:
            return

        async def load(yes: bool | None) -> None:
            if yes:
                self.run_action(self._load_model(name), "load")

        self.app.push_screen(ConfirmDialog(f"Load {name} in place of the current chat model?"), load)

    async def _load_model(self, name: str) -> None:
        await self.api.load_model(name)
        self.console.notice(f"loading {name}…")
        self.reload()

    def action_unload(self) -> None:
        async def unload(yes: bool | None) -> None:
            if yes:
                self.run_action(self._unload(), "unload")

        self.app.push_screen(
            ConfirmDialog("Unload the chat model? Chat and answers stop until a model is loaded."), unload
        )

    async def _unload(self) -> None:
        await self.api.unload_model()
        self.console.notice("chat model unloaded")
        self.reload()
