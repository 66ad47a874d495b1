"""Keys & audit: create a key (its secret shown once), list and revoke keys; the latest audit entries."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Label

from appliance.tui import fmt
from appliance.tui.dialogs import ConfirmDialog, FormDialog, TextDialog
from appliance.tui.widgets import View, fill_table, selected_key


class KeysView(View):
    """API keys: `n` creates one (the secret is shown once, then only its hash is kept), `x`
    revokes the selected key. Below, the audit log: who did what, newest first."""

    label = "keys"
    initial_focus = "#keys"
    refresh_seconds = 5.0
    BINDINGS = [Binding("n", "create", "New key"), Binding("x", "revoke", "Revoke key")]
    DEFAULT_CSS = """
    KeysView #keys { height: 1fr; }
    KeysView #audit { height: 1fr; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self._keys: list[dict] = []

    def compose(self) -> ComposeResult:
        yield Label("Keys", classes="section")
        yield DataTable(id="keys", cursor_type="row", zebra_stripes=True)
        yield Label("Audit log", classes="section")
        yield DataTable(id="audit", cursor_type="row")

    def on_mount(self) -> None:
        self.query_one("#keys", DataTable).add_columns(
            "id", "name", "role", "collections", "rpm", "tpm", "created", "state"
        )
        self.query_one("#audit", DataTable).add_columns("time", "key", "action", "target", "status")

    async def load(self) -> None:
        self.show(await self.api.keys(), await self.api.audit(limit=100))

    def show(self, keys: list[dict], audit: list[dict]) -> None:
        self._keys = keys
        fill_table(
            self.query_one("#keys", DataTable),
            [
                (
                    k["id"],
                    k["name"],
                    k["role"],
                    ",".join(k.get("collections") or ["*"]),
                    str(k.get("rpm") or "-"),
                    str(k.get("tpm") or "-"),
                    fmt.short_ts(k.get("created_at")),
                    fmt.state("revoked" if k.get("revoked_at") else "ok"),
                )
                for k in keys
            ],
            [k["id"] for k in keys],
        )
        fill_table(
            self.query_one("#audit", DataTable),
            [
                (
                    fmt.short_ts(a.get("ts")),
                    a.get("key_name") or "-",
                    a.get("action", ""),
                    fmt.clip(str(a.get("target") or ""), 24),
                    str(a.get("status") or a.get("outcome") or ""),
                )
                for a in audit
            ],
        )

    def action_create(self) -> None:
        async def create(values: dict | None) -> None:
            if values and values["name"]:
                collections = [c.strip() for c in values["collections"].split(",") if c.strip()] or None
                self.run_action(self._create(values["name"], values["role"], collections), "create-key")

        self.app.push_screen(
            FormDialog(
                "New API key",
                [
                    ("name", "name (who or what uses it)", ""),
                    ("role", "role", ["user", "admin"]),
                    ("collections", "collections, comma-separated (user keys)", ""),
                ],
            ),
            create,
        )

    async def _create(self, name: str, role: str, collections: list[str] | None) -> None:
        key = await self.api.create_key(name, role, collections)
        self.app.push_screen(
            TextDialog(
                f"Key {key['id']} ({key['role']}) created",
                key["key"],
                "Copy it now: it is shown once and stored only as a hash.",
            )
        )
        self.reload()

    def action_revoke(self) -> None:
        key_id = selected_key(self.query_one("#keys", DataTable))
        key = next((k for k in self._keys if k["id"] == key_id), None)
        if key is None or key.get("revoked_at"):
            return

        async def revoke(yes: bool | None) -> None:
            if yes:
                self.run_action(self._revoke(key), "revoke-key")

        self.app.push_screen(
            ConfirmDialog(f"Revoke key {key['id']} ({key['name']})? Clients using it get 401."), revoke
        )

    async def _revoke(self, key: dict) -> None:
        await self.api.revoke_key(key["id"])
        self.console.notice(f"revoked {key['id']} ({key['name']})")
        self.reload()
