"""Knowledge: collections (their embedders), documents (filter, open, delete, re-ingest, upload), sources and quarantined files."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Label, Select, TabbedContent, TabPane

from appliance.client import ApiError
from appliance.tui import fmt
from appliance.tui.dialogs import ConfirmDialog, FormDialog, TextDialog
from appliance.tui.widgets import View, fill_table, guarded, selected_key

ALL = "(all collections)"


def _local_path(uri: str | None) -> Path | None:
    """The file a document came from, when it is a file this machine can read."""
    if not uri or not uri.startswith("file://"):
        return None
    path = Path(unquote(urlparse(uri).path))
    return path if path.is_file() else None


class KnowledgeView(View):
    """Collections and their documents; enter opens a document's chunks and locations. Sources
    show their sync state and lag; quarantine lists files that could not be ingested, and why."""

    label = "knowledge"
    initial_focus = "#documents"
    refresh_seconds = 10.0
    BINDINGS = [
        Binding("u", "upload", "Upload"),
        Binding("d", "delete", "Delete"),
        Binding("i", "reingest", "Re-ingest"),
        Binding("s", "sync", "Sync source"),
        Binding("n", "new_collection", "New collection"),
        Binding("e", "embedder", "Embedder"),
    ]
    DEFAULT_CSS = """
    KnowledgeView #filters { height: 3; }
    KnowledgeView #filter { width: 1fr; }
    KnowledgeView #collection { width: 30; }
    KnowledgeView #kn-tabs { height: 1fr; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self._documents: list[dict] = []
        self._collections: list[dict] = []
        self._sources: list[dict] | None = []

    def compose(self) -> ComposeResult:
        with Horizontal(id="filters"):
            yield Input(placeholder="filter documents by title or source", id="filter")
            yield Select([(ALL, ALL)], value=ALL, allow_blank=False, id="collection")
        with TabbedContent(id="kn-tabs"):
            with TabPane("Documents", id="kn-docs"):
                yield Label("", id="doc-count", classes="hint")
                yield DataTable(id="documents", cursor_type="row", zebra_stripes=True)
            with TabPane("Sources", id="kn-sources"):
                yield DataTable(id="sources", cursor_type="row")
            with TabPane("Quarantine", id="kn-quarantine"):
                yield DataTable(id="quarantine", cursor_type="row")

    def on_mount(self) -> None:
        self.query_one("#documents", DataTable).add_columns(
            "title", "collection", "source", "type", "size", "updated"
        )
        self.query_one("#sources", DataTable).add_columns(
            "source", "kind", "collection", "state", "lag", "docs", "error"
        )
        self.query_one("#quarantine", DataTable).add_columns(
            "file", "collection", "reason", "size", "last seen"
        )

    @property
    def collection(self) -> str | None:
        value = self.query_one("#collection", Select).value
        return None if value in (ALL, Select.BLANK) else str(value)

    async def load(self) -> None:
        collections = await self.api.collections()
        documents = (await self.api.documents(self.collection, limit=500))["documents"]
        sources = quarantine = None
        try:
            sources = await self.api.sources()
            quarantine = await self.api.quarantine(self.collection)
        except ApiError as exc:
            if not exc.missing:
                raise
        self.show(collections, documents, sources, quarantine)

    def show(
        self,
        collections: list[dict],
        documents: list[dict],
        sources: list[dict] | None,
        quarantine: list[dict] | None,
    ) -> None:
        self._collections, self._documents, self._sources = collections, documents, sources
        select = self.query_one("#collection", Select)
        options = [(ALL, ALL)] + [(f"{c['name']} ({c['documents']} docs)", c["name"]) for c in collections]
        if [o[1] for o in options] != [o[1] for o in getattr(self, "_options", [])]:
            current = select.value
            select.set_options(options)
            select.value = current if current in [o[1] for o in options] else ALL
            self._options = options
        self._show_documents()
        src = self.query_one("#sources", DataTable)
        if sources is None:
            fill_table(src, [("not available on this server", "", "", "", "", "", "")])
        else:
            fill_table(
                src,
                [
                    (
                        s["name"],
                        s.get("kind") or "",
                        s.get("collection") or "",
                        fmt.state(s.get("state")),
                        fmt.duration(s.get("lag_seconds")),
                        str(s.get("documents") or 0),
                        fmt.clip(s.get("last_error"), 40),
                    )
                    for s in sources
                ],
                [s["name"] for s in sources],
            )
        quar = self.query_one("#quarantine", DataTable)
        if quarantine is None:
            fill_table(quar, [("not available on this server", "", "", "", "")])
        else:
            fill_table(
                quar,
                [
                    (
                        fmt.clip(q["path"], 40),
                        q.get("collection") or "",
                        fmt.clip(q.get("reason"), 50),
                        fmt.size(q.get("size_bytes")),
                        fmt.short_ts(q.get("last_seen")),
                    )
                    for q in quarantine
                ],
                [str(q["id"]) for q in quarantine],
            )

    def _show_documents(self) -> None:
        needle = self.query_one("#filter", Input).value.strip().lower()
        docs = [
            d
            for d in self._documents
            if not needle or needle in (d.get("title") or "").lower() or needle in d["source_id"].lower()
        ]
        self.query_one("#doc-count", Label).update(
            f"{len(docs)} of {len(self._documents)} documents" + (f" matching {needle!r}" if needle else "")
        )
        fill_table(
            self.query_one("#documents", DataTable),
            [
                (
                    fmt.clip(d.get("title") or d["source_id"], 36),
                    d["collection"],
                    fmt.clip(d["source_id"], 30),
                    d.get("mime_type") or "",
                    fmt.size(d.get("size_bytes")),
                    fmt.short_ts(d.get("updated_at")),
                )
                for d in docs
            ],
            [d["id"] for d in docs],
        )

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self._show_documents()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "collection":
            self.reload()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "documents" and event.row_key.value:
            self.run_worker(
                self._open(event.row_key.value), group="open-doc", exclusive=True, exit_on_error=False
            )

    @guarded
    async def _open(self, document_id: str) -> None:
        doc = await self.api.document(document_id, chunks=True)
        body = [
            f"{doc['collection']} · {doc['source_id']} · {doc.get('mime_type') or ''} · "
            f"{len(doc.get('chunks', []))} chunks",
            "",
        ]
        for chunk in doc.get("chunks", []):
            body.append(
                f"── chunk {chunk['ordinal']} · {fmt.location(chunk.get('location'))} · "
                f"{chunk.get('token_count', '?')} tokens"
            )
            body.append(chunk["text"].strip())
            body.append("")
        self.app.push_screen(TextDialog(doc.get("title") or doc["source_id"], "\n".join(body)))

    def _current_document(self) -> dict | None:
        key = selected_key(self.query_one("#documents", DataTable))
        return next((d for d in self._documents if d["id"] == key), None)

    def action_delete(self) -> None:
        doc = self._current_document()
        if doc is None:
            return

        async def delete(yes: bool | None) -> None:
            if yes:
                self.run_action(self._delete(doc), "delete")

        self.app.push_screen(ConfirmDialog(f"Delete {doc['source_id']} from {doc['collection']}?"), delete)

    async def _delete(self, doc: dict) -> None:
        await self.api.delete_document(doc["id"])
        self.console.notice(f"deleted {doc['source_id']}")
        self.reload()

    def action_reingest(self) -> None:
        doc = self._current_document()
        if doc is not None:
            self.run_action(self._reingest(doc), "reingest")

    async def _reingest(self, doc: dict) -> None:
        path = _local_path(doc.get("uri"))
        if path is not None:
            accepted = await self.api.upload(doc["collection"], path, source_id=doc["source_id"])
            self.console.notice(f"re-ingesting {path.name}: job {accepted['job_id']}")
            return
        source = next((s for s in self._sources or [] if s.get("collection") == doc["collection"]), None)
        if source is not None:
            job = await self.api.sync_source(source["name"])
            self.console.notice(f"syncing source {source['name']}: job {job.get('job_id')}")
            return
        raise ApiError(
            -1,
            "Cannot re-ingest",
            f"{doc['source_id']} came through the API and its original is not readable here",
        )

    def action_upload(self) -> None:
        names = [c["name"] for c in self._collections] or ["default"]
        if self.collection in names:
            names.remove(self.collection)
            names.insert(0, self.collection)

        async def upload(values: dict | None) -> None:
            if values and values["path"]:
                self.run_action(
                    self._upload(values["collection"], Path(values["path"]).expanduser()), "upload"
                )

        self.app.push_screen(
            FormDialog(
                "Upload a file",
                [("path", "file path on this machine", ""), ("collection", "collection", names)],
            ),
            upload,
        )

    async def _upload(self, collection: str, path: Path) -> None:
        accepted = await self.api.upload(collection, path)
        self.console.notice(f"uploaded {path.name}: job {accepted['job_id']}")
        self.reload()

    def action_sync(self) -> None:
        key = selected_key(self.query_one("#sources", DataTable))
        if key and self._sources:
            self.run_action(self._sync(key), "sync")

    async def _sync(self, name: str) -> None:
        job = await self.api.sync_source(name)
        self.console.notice(f"syncing {name}: job {job.get('job_id')}")

    def action_new_collection(self) -> None:
        async def create(values: dict | None) -> None:
            if values and values["name"]:
                self.run_action(self._create(values["name"]), "collection")

        self.app.push_screen(FormDialog("New collection", [("name", "collection name", "")]), create)

    def action_embedder(self) -> None:
        """A collection's embedder: show it, switch it (a gated `reembed` job), confirm or roll back."""
        names = [c["name"] for c in self._collections]
        if not names:
            self.console.notice("no collections")
            return
        if self.collection in names:
            names.remove(self.collection)
            names.insert(0, self.collection)

        async def chosen(values: dict | None) -> None:
            if values:
                self.run_action(self._embedder(values), "embedder")

        self.app.push_screen(
            FormDialog(
                "A collection's embedder",
                [
                    ("collection", "collection", names),
                    ("action", "action", ["show", "switch", "confirm", "rollback"]),
                    ("model", "model to switch to (NAME, NAME@VERSION or an alias)", ""),
                ],
            ),
            chosen,
        )

    async def _embedder(self, values: dict) -> None:
        name, action = values["collection"], values["action"]
        if action == "switch":
            job = await self.api.switch_embedder(name, values["model"].strip())
            self.console.notice(
                f"re-embedding {name}: job {job['id']} (Jobs tab); it switches if the gate passes"
            )
            return
        call = {"show": self.api.collection_embedder, "confirm": self.api.confirm_embedder}.get(
            action, self.api.rollback_embedder
        )
        record = await call(name)
        live = record["live"]
        kept = f"; {record['previous']['resolved']} kept until confirmed" if record.get("previous") else ""
        self.console.notice(f"{name}: {live['resolved']} ({live['dimensions']}-d){kept}")

    async def _create(self, name: str) -> None:
        await self.api.create_collection(name)
        self.console.notice(f"created collection {name}")
        self.reload()
