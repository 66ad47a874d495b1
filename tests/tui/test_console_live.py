"""The console against a live server with the small models: every screen, search and ask, keys,
jobs, chat, models, and what an operator sees when the server is gone or the key is wrong."""

from __future__ import annotations

import httpx
import pytest
from textual.widgets import DataTable, Input, Label, ProgressBar, Select, Static

from appliance.tui.app import SCREENS, ConsoleApp, tab_key
from appliance.tui.dialogs import ConfirmDialog, FormDialog, TextDialog
from appliance.tui.widgets import Banner
from tests.conftest import free_port
from tests.tui.conftest import until

SIZE = (120, 40)


def rows(app: ConsoleApp, selector: str) -> list[list[str]]:
    table = app.query_one(selector, DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def banner(app: ConsoleApp) -> str:
    b = app.query_one(Banner)
    return str(b.render()) if b.has_class("-error") else ""


def text_of(widget: Static | Label) -> str:
    return str(widget.render())


@pytest.mark.anyio
async def test_every_screen_opens_and_shows_server_data(live):
    app = ConsoleApp(live.url, live.key)
    async with app.run_test(size=SIZE) as pilot:
        await until(
            pilot,
            lambda: any(r[0] == "duckdb" and r[1] == "ok" for r in rows(app, "#components")),
            what="component health",
        )
        assert {"api", "duckdb", "bm25", "vectors", "jobs", "embedder", "model", "disk"} <= {
            r[0] for r in rows(app, "#components")
        }
        docs = rows(app, "#collections")[0]
        assert docs[:2] == ["docs", "2"] and int(docs[2]) >= 2  # two documents, a chunk or more each
        for digit, (ident, _, _) in enumerate(SCREENS, 1):
            app.screen.set_focus(None)  # digits belong to text fields while one has focus
            await pilot.press(tab_key(digit))
            await until(pilot, lambda i=ident: app.active_tab == i, what=f"tab {ident}")
        await pilot.press("escape", "2")
        await until(pilot, lambda: len(rows(app, "#documents")) == 2, what="documents")
        assert {r[2] for r in rows(app, "#documents")} == {"travel.md", "keys.md"}
        await pilot.press("escape", "6")
        await until(
            pilot,
            lambda: any(r[0] == "SmolLM2-135M-Instruct" and r[4] == "●" for r in rows(app, "#available")),
            what="models",
        )
        assert "llama.cpp" in text_of(app.query_one("#loaded", Static))
        await pilot.press("escape", "8")
        await until(pilot, lambda: app.view("logs")._lines, what="log lines")
        assert any(line["msg"] == "chat model loaded" for line in app.view("logs")._lines)
        # The help lists every screen; the palette opens too.
        await pilot.press("question_mark")
        await until(pilot, lambda: app.screen.__class__.__name__ == "HelpScreen", what="help")
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await until(pilot, lambda: app.screen.__class__.__name__ == "CommandPalette", what="command palette")
        await pilot.press("escape")
        assert banner(app) == ""


@pytest.mark.anyio
async def test_knowledge_opens_a_document_with_its_chunks_and_filters(live):
    app = ConsoleApp(live.url, live.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await until(pilot, lambda: len(rows(app, "#documents")) == 2, what="documents")
        app.query_one("#filter", Input).value = "travel"
        await until(pilot, lambda: len(rows(app, "#documents")) == 1, what="filtered documents")
        app.query_one("#documents", DataTable).focus()
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, TextDialog), what="document dialog")
        body = text_of(app.screen.query_one("#dialog-body", Static))
        assert "75 EUR" in body and "chunk 0" in body and "Per diems" in body  # text and its location
        await pilot.press("escape")


@pytest.mark.anyio
async def test_search_then_ask_streams_a_cited_answer(live):
    app = ConsoleApp(live.url, live.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await until(pilot, lambda: app.query_one("#query", Input).has_focus, what="query field")
        await pilot.press(*"per diem in Europe", "enter")
        await until(pilot, lambda: rows(app, "#hits"), what="hits")
        top = rows(app, "#hits")[0]
        assert top[3] == "travel.md" and 0 < float(top[1]) <= 1
        view = app.view("search")
        await pilot.press("ctrl+o")
        await until(
            pilot,
            lambda: "answered by" in text_of(app.query_one("#search-status", Label)),
            timeout=120,
            what="the answer",
        )
        assert view.streamed_tokens > 1  # it arrived token by token before the final event
        answer = text_of(app.query_one("#answer", Static))
        assert answer.strip()
        citations = rows(app, "#citations")
        assert len(citations) == len(view._citations)
        if citations:  # the small model does not always cite; when it does, open the citation
            app.query_one("#citations", DataTable).focus()
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, TextDialog), what="citation dialog")
            body = " ".join(text_of(app.screen.query_one("#dialog-body", Static)).split())
            snippet = " ".join(view._citations[0]["snippet"].split())[:30]
            assert snippet and snippet in body  # the whole cited chunk, of which the answer carried a snippet
            await pilot.press("escape")
        # A hit opens to its whole chunk either way.
        app.query_one("#hits", DataTable).focus()
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, TextDialog), what="hit dialog")
        assert "75 EUR" in text_of(app.screen.query_one("#dialog-body", Static))
        assert banner(app) == ""


@pytest.mark.anyio
async def test_create_a_key_shown_once_then_revoke_it(live):
    app = ConsoleApp(live.url, live.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("7")
        await until(pilot, lambda: any(r[1] == "admin" for r in rows(app, "#keys")), what="keys")
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, FormDialog), what="key form")
        app.screen.query_one("#field-name", Input).value = "console-test"
        app.screen.query_one("#field-collections", Input).value = "docs"
        app.screen.query_one("#field-collections", Input).focus()
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, TextDialog), what="the new key")
        secret = text_of(app.screen.query_one("#dialog-body", Static)).strip()
        with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {secret}"}) as user:
            assert [c["name"] for c in user.get("/api/v1/collections").json()] == ["docs"]
        await pilot.press("escape")
        await until(pilot, lambda: any(r[1] == "console-test" for r in rows(app, "#keys")), what="key listed")
        table = app.query_one("#keys", DataTable)
        table.focus()
        table.move_cursor(row=next(i for i, r in enumerate(rows(app, "#keys")) if r[1] == "console-test"))
        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="confirm")
        await pilot.press("y")
        await until(
            pilot,
            lambda: any(r[1] == "console-test" and r[7] == "revoked" for r in rows(app, "#keys")),
            what="key revoked",
        )
        with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {secret}"}) as user:
            assert user.get("/api/v1/collections").status_code == 401
        await until(
            pilot,
            lambda: any(r[2] == "DELETE /api/v1/keys/{key_id}" for r in rows(app, "#audit")),
            what="the revocation in the audit log",
        )


@pytest.mark.anyio
async def test_jobs_show_progress_of_a_batch(live):
    docs = [
        {"source_id": f"note-{i}.md", "text": f"Note {i}: the cafeteria serves soup number {i} on day {i}."}
        for i in range(12)
    ]
    with live.client() as api:
        job_id = api.post("/api/v1/documents/batch", json={"collection": "docs", "documents": docs}).json()[
            "job_id"
        ]
    app = ConsoleApp(live.url, live.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await until(pilot, lambda: rows(app, "#jobs") and rows(app, "#jobs")[0][0] == job_id, what="the job")
        await until(
            pilot, lambda: rows(app, "#jobs")[0][3] == "succeeded", timeout=120, what="the job to finish"
        )
        await until(pilot, lambda: app.query_one("#job-progress", ProgressBar).progress == 12, what="detail")
        assert rows(app, "#jobs")[0][5] == "12/12" and "100%" in rows(app, "#jobs")[0][4]
        assert app.query_one("#job-progress", ProgressBar).total == 12
        assert len(rows(app, "#job-items")) == 12
        app.query_one("#job-state", Select).value = "failed"
        await until(
            pilot, lambda: not any(r[0] == job_id for r in rows(app, "#jobs")), what="the state filter"
        )


@pytest.mark.anyio
async def test_chat_keeps_a_multi_turn_conversation(live):
    app = ConsoleApp(live.url, live.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        await until(pilot, lambda: app.query_one("#message", Input).has_focus, what="message field")
        await until(
            pilot, lambda: "SmolLM2-135M-Instruct" in [o for o in app.view("chat")._models], what="models"
        )
        app.query_one("#model", Select).value = "SmolLM2-135M-Instruct"
        view = app.view("chat")
        for turn, question in enumerate(("What is the per diem in Europe?", "And in Asia?"), 1):
            await pilot.press(*question, "enter")
            await until(pilot, lambda t=turn: view.replies == t, timeout=120, what=f"reply {turn}")
        assert view.conversation_id
        with live.client() as api:
            conv = api.get(f"/api/v1/conversations/{view.conversation_id}").json()
        assert [m["role"] for m in conv["messages"]] == ["user", "assistant", "user", "assistant"]
        assert conv["messages"][2]["content"] == "And in Asia?"
        await until(
            pilot, lambda: len(app.query_one("#conversations").children) >= 1, what="conversation list"
        )
        assert banner(app) == ""


@pytest.mark.anyio
async def test_models_unload_and_load_again(live):
    app = ConsoleApp(live.url, live.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        await until(pilot, lambda: rows(app, "#available"), what="models")
        await pilot.press("u")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="confirm")
        await pilot.press("y")
        await until(pilot, lambda: "unloaded" in text_of(app.query_one("#loaded", Static)), what="unloaded")
        with live.client() as api:
            r = api.post(
                "/v1/chat/completions",
                json={"model": "default", "messages": [{"role": "user", "content": "hi"}]},
            )
        assert r.status_code == 503
        table = app.query_one("#available", DataTable)
        table.move_cursor(
            row=next(i for i, r in enumerate(rows(app, "#available")) if r[0] == "SmolLM2-135M-Instruct")
        )
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="confirm")
        await pilot.press("y")
        await until(
            pilot,
            lambda: "llama.cpp" in text_of(app.query_one("#loaded", Static)),
            timeout=120,
            what="loaded again",
        )


@pytest.mark.anyio
async def test_logs_filter_by_level(live):
    app = ConsoleApp(live.url, live.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("8")
        view = app.view("logs")
        await until(pilot, lambda: any(ln["level"] == "info" for ln in view._lines), what="info lines")
        fetched = view.fetches
        app.query_one("#level", Select).value = "warning"
        await until(pilot, lambda: view.fetches > fetched + 1, what="the ring read again at that level")
        assert not any(ln["level"] in ("debug", "info") for ln in view._lines)
        assert all(ln["level"] in ("warning", "error", "critical") for ln in view._lines)


@pytest.mark.anyio
async def test_a_wrong_key_is_reported_not_raised(live):
    app = ConsoleApp(live.url, "apk_wrong")
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "Key rejected" in banner(app), what="the key message")
        await pilot.press("2")
        await pilot.pause(0.5)
        assert "Key rejected" in banner(app) and app.return_code is None


@pytest.mark.anyio
async def test_a_user_key_is_told_it_needs_an_admin_key(live):
    with live.client() as api:
        secret = api.post("/api/v1/keys", json={"name": "u", "role": "user", "collections": ["docs"]}).json()[
            "key"
        ]
    app = ConsoleApp(live.url, secret)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "Admin key needed" in banner(app), what="the admin message")


@pytest.mark.anyio
async def test_a_dead_server_is_reported_and_the_console_recovers_nothing_crashes():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    app = ConsoleApp(url, "apk_any")
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: "Server unreachable" in banner(app), what="the unreachable message")
        for digit in "12345678":
            app.screen.set_focus(None)
            await pilot.press(digit)
            await pilot.pause(0.1)
        await pilot.pause(0.5)
        assert "Server unreachable" in banner(app) and url in banner(app)
        assert app.return_code is None  # still running: a message, not a traceback
