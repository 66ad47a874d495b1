"""Models: the chat model's backend, context and health, the models that could be loaded (load, unload);
the registry's families, versions, aliases and history (import, promote, canary, shadow, roll back)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Label, Static

from appliance.tui import fmt
from appliance.tui.dialogs import ConfirmDialog, FormDialog
from appliance.tui.widgets import View, fill_table, selected_key

ALIASES = ["production", "staging", "candidate", "shadow", "default"]


class ModelsView(View):
    """The loaded chat model (backend llama.cpp or vLLM, context, queue, health) and the embedding
    model; below, every model this server can load. `l` loads the selected one in place of the
    current one, `u` unloads the chat model (search keeps working). Then the registry: every
    version of every family with its state, tags and aliases, and the selected family's alias
    history; `i` imports a file, `p` points an alias at the selected version (through the family's
    eval gate for staging and production), `b` rolls an alias back (`canary`: stops the canary). From
    the command palette, the selected version can be canaried or shadowed; each running canary (its
    split, step, sample, error rates) and shadow (share, queue) is shown above the history."""

    label = "models"
    initial_focus = "#available"
    refresh_seconds = 3.0
    BINDINGS = [
        Binding("l", "load", "Load selected"),
        Binding("u", "unload", "Unload"),
        Binding("i", "import_model", "Import"),
        Binding("p", "promote", "Promote"),
        Binding("b", "rollback", "Roll back"),
    ]
    DEFAULT_CSS = """
    ModelsView #loaded { height: auto; padding: 0 1; }
    ModelsView #available { height: 1fr; }
    ModelsView #registry { height: 1fr; }
    ModelsView #registry-history { height: auto; max-height: 9; padding: 0 1; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self._families: list[dict] = []
        self._history_of: str | None = None  # the family whose history is shown

    def compose(self) -> ComposeResult:
        yield Label("Loaded", classes="section")
        yield Static("", id="loaded")
        yield Label("Available (enter or l loads)", classes="section")
        yield DataTable(id="available", cursor_type="row", zebra_stripes=True)
        yield Label("Registry (i import · p promote · b roll back)", classes="section")
        yield DataTable(id="registry", cursor_type="row", zebra_stripes=True)
        yield Static("", id="registry-history")

    def on_mount(self) -> None:
        self.query_one("#available", DataTable).add_columns(
            "model", "size", "context", "source", "loaded", "about"
        )
        self.query_one("#registry", DataTable).add_columns(
            "model", "version", "kind", "state", "aliases", "tags", "reason"
        )

    async def load(self) -> None:
        self.show(await self.api.models())
        families = await self.api.registry_models()
        family = self._selected()[0] if self._selected() else (families[0]["name"] if families else None)
        self.show_registry(families, await self.api.registry_history(family) if family else [])

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

    def show_registry(self, families: list[dict], history: list[dict]) -> None:
        """Every version of every family (newest first within a family), and one family's history."""
        self._families = families
        rows, keys = [], []
        for f in families:
            for v in reversed(f["versions"]):
                rows.append(
                    (
                        f["name"],
                        f"v{v['version']}",
                        f["kind"],
                        v["state"],
                        ", ".join(v["aliases"]) or "-",
                        fmt.clip(" ".join(t for t in v["tags"] if ":" not in t), 30),
                        fmt.clip(v.get("reason") or "", 40),
                    )
                )
                keys.append(f"{f['name']}@{v['version']}")
        fill_table(self.query_one("#registry", DataTable), rows, keys)
        lines = [line for f in families for line in rollout_lines(f)]
        for m in history[-5:]:
            was = f"v{m['previous_version']}" if m["previous_version"] is not None else "-"
            now = f"v{m['version']}" if m["version"] is not None else "removed"
            gate = f"gate {m['gate']}" if m["gated"] else "ungated"
            lines.append(
                f"{m['at'][:16].replace('T', ' ')}  {m['alias']} {was} → {now}  {m['action']}, {gate}, "
                f"by {m['actor']}" + (f": {m['reason']}" if m["reason"] else "")
            )
        self.query_one("#registry-history", Static).update(
            "\n".join(lines) or "[dim]no alias moves yet[/dim]"
        )
        self._history_of = history[0]["name"] if history else self._history_of

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        selected = self._selected() if event.data_table.id == "registry" else None
        if selected and selected[0] != self._history_of and self.console.live:
            self._history_of = selected[0]
            self.run_action(self._show_history(selected[0]), "history")

    async def _show_history(self, name: str) -> None:
        self.show_registry(self._families, await self.api.registry_history(name))

    def _selected(self) -> tuple[str, int] | None:
        key = selected_key(self.query_one("#registry", DataTable))
        if not key:
            return None
        name, _, version = key.rpartition("@")
        return name, int(version)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "available":
            self.action_load()

    def action_import_model(self) -> None:
        async def submit(values: dict | None) -> None:
            if values and values["path"].strip():
                self.run_action(
                    self._import(values["path"].strip(), values["name"].strip() or None), "import"
                )

        self.app.push_screen(
            FormDialog(
                "Import a GGUF file (a path on the server; verified and probed)",
                [("path", "path of the .gguf file", ""), ("name", "family (empty: from the header)", "")],
            ),
            submit,
        )

    def action_import_remote(self) -> None:
        async def submit(values: dict | None) -> None:
            if values and values["url"].strip() and values["model"].strip():
                self.run_action(self._import_remote(values), "import")

        self.app.push_screen(
            FormDialog(
                "Import a remote model (an OpenAI-compatible server whose host is in network.allow; probed)",
                [
                    ("url", "the server's API base, e.g. https://gpu.internal:8000/v1", ""),
                    ("model", "the model's id on that server", ""),
                    ("name", "family (empty: from the model's id)", ""),
                    ("api_key_file", "a file on the server holding its API key (empty: none)", ""),
                ],
            ),
            submit,
        )

    async def _import_remote(self, values: dict) -> None:
        url, model = values["url"].strip(), values["model"].strip()
        self.console.notice(f"importing {model} at {url}: probing…")
        version = await self.api.import_remote_model(
            url, model, values["name"].strip() or None, api_key_file=values["api_key_file"].strip() or None
        )
        self._imported(version)

    def _imported(self, version: dict) -> None:
        why = f" ({version['reason']})" if version.get("reason") else ""
        self.console.notice(f"{version['name']} v{version['version']}: {version['state']}{why}")
        self.reload()

    async def _import(self, path: str, name: str | None) -> None:
        self.console.notice(f"importing {path}: verifying and probing…")
        version = await self.api.import_model(path, name)
        self._imported(version)

    def action_promote(self) -> None:
        selected = self._selected()
        if selected is None:
            self.console.notice("select a version in the registry first")
            return
        name, version = selected

        async def submit(values: dict | None) -> None:
            if values:
                self.run_action(self._promote(name, version, values["alias"], values["reason"]), "promote")

        self.app.push_screen(
            FormDialog(
                f"Promote {name} v{version}",
                [("alias", "alias", ALIASES), ("reason", "why (kept in the history)", "")],
            ),
            submit,
        )

    async def _promote(self, name: str, version: int, alias: str, reason: str) -> None:
        move = await self.api.promote_model(name, version, alias, reason)
        gate = f"through gate {move['gate']}" if move["gated"] else "ungated"
        self.console.notice(f"{name} {alias} → v{version} ({gate})")
        self.reload()

    def action_rollback(self) -> None:
        selected = self._selected()
        if selected is None:
            self.console.notice("select a version in the registry first")
            return
        name = selected[0]
        held = next((f["aliases"] for f in self._families if f["name"] == name), {})
        choices = [a for a in ALIASES if a in held] + [a for a in held if a not in ALIASES]
        if not choices:
            self.console.notice(f"{name} has no alias to roll back")
            return

        async def submit(values: dict | None) -> None:
            if values:
                self.run_action(self._rollback(name, values["alias"]), "rollback")

        self.app.push_screen(
            FormDialog(f"Roll back an alias of {name}", [("alias", "alias", choices)]), submit
        )

    async def _rollback(self, name: str, alias: str) -> None:
        move = await self.api.rollback_model(name, alias)
        self.console.notice(f"{name} {alias} rolled back to v{move['version']}")
        self.reload()

    def action_canary(self) -> None:
        selected = self._selected()
        if selected is None:
            self.console.notice("select a version in the registry first")
            return
        name, version = selected

        async def submit(values: dict | None) -> None:
            if values:
                steps = [int(s) for s in values["steps"].replace("%", "").split(",") if s.strip().isdigit()]
                sample = values["min_samples"].strip()
                self.run_action(
                    self._canary(name, version, steps, int(sample) if sample.isdigit() else None), "canary"
                )

        self.app.push_screen(
            FormDialog(
                f"Canary {name} v{version}: a growing share of production traffic, analysed at each step",
                [
                    ("steps", "percent of production per step, ending at 100", "5,25,50,100"),
                    ("min_samples", "requests per step before its analysis (empty: the setting)", ""),
                ],
            ),
            submit,
        )

    async def _canary(self, name: str, version: int, steps: list[int], min_samples: int | None) -> None:
        canary = await self.api.start_canary(name, version, steps, min_samples)
        self.console.notice(f"{name} canary v{version}: {canary['weight']}% of production")
        self.reload()

    def action_shadow(self) -> None:
        selected = self._selected()
        if selected is None:
            self.console.notice("select a version in the registry first")
            return
        name, version = selected

        async def submit(values: dict | None) -> None:
            if values:
                try:
                    share = float(values["share"].rstrip("%")) / (100 if "%" in values["share"] else 1)
                except ValueError:
                    self.console.notice("share: a number from 0 to 1 (or a percentage)")
                    return
                self.run_action(self._shadow(name, version if share > 0 else None, share or 1.0), "shadow")

        self.app.push_screen(
            FormDialog(
                f"Shadow {name} v{version}: mirror production requests to it off the hot path (0: stop)",
                [("share", "share of production requests (0..1, or 50%)", "1")],
            ),
            submit,
        )

    async def _shadow(self, name: str, version: int | None, share: float) -> None:
        state = await self.api.set_shadow(name, version, share)
        self.console.notice(
            f"{name}: shadow stopped" if state is None else f"{name} shadow v{version}: {share:.0%} mirrored"
        )
        self.reload()

    def commands(self) -> Iterator[tuple[str, str, Callable[[], object]]]:
        yield "Import model", "Register a GGUF file: verify, probe, tag (i)", self.action_import_model
        yield (
            "Import remote model",
            "Register a model an OpenAI-compatible server serves (vLLM, another appliance): probe, tag",
            self.action_import_remote,
        )
        yield "Promote model version", "Point an alias at the selected version (p)", self.action_promote
        yield "Roll back model alias", "Move an alias back to its previous version (b)", self.action_rollback
        yield (
            "Canary model version",
            "Send a growing share of production to the selected version",
            self.action_canary,
        )
        yield "Shadow model version", "Mirror production requests to the selected version", self.action_shadow

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


def rollout_lines(family: dict) -> list[str]:
    """A family's running canary (live split and sample) and its shadow, one line each."""
    lines = []
    canary = family.get("canary")
    if canary and canary["state"] == "running":
        traffic = canary.get("traffic") or {}
        cand, stable = traffic.get("candidate") or {}, traffic.get("stable") or {}

        def rate(arm: dict) -> str:
            return "-" if arm.get("error_rate") is None else f"{arm['error_rate']:.1%}"

        lines.append(
            f"[b]canary[/b] {family['name']} v{canary['candidate_version']} {canary['weight']}% · "
            f"v{canary['stable_version']} {100 - canary['weight']}%  step {canary['step'] + 1}/"
            f"{len(canary['steps'])}  sample {cand.get('requests', 0)}/{canary['min_samples']}  "
            f"errors {rate(cand)} vs {rate(stable)}"
        )
    shadow = family.get("shadow")
    if shadow:
        q = shadow.get("queue") or {}
        lines.append(
            f"[b]shadow[/b] {family['name']} v{shadow['version']} mirrors {shadow['share']:.0%}  "
            f"queue {q.get('depth', 0)}/{q.get('capacity', '?')} · {q.get('done', 0)} done · "
            f"{q.get('dropped', 0)} dropped"
        )
    return lines
