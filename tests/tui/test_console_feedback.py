"""Rating answers from the console (Search and Chat, keys and command palette) against the API of an
in-process appliance with the echo runtime, and the dashboard's drift warning built from records."""

from __future__ import annotations

import httpx
import pytest
from textual.widgets import Input, Label

from appliance.records import DriftReport, DriftSignal, Window
from appliance.tui.app import ConsoleApp
from tests.inprocess import InProcessServer, echo_appliance, ingest
from tests.tui.conftest import until
from tests.tui.fixed_data import TS, wire

SIZE = (120, 40)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    app = echo_appliance(
        tmp_path_factory.mktemp("console-feedback") / "data", answer={"max_answer_tokens": 48}
    )
    ingest(app, "docs", {"travel": "Employees travelling in Europe receive a per diem of 75 EUR a day."})
    server = InProcessServer(app).start()
    yield server
    server.stop()
    app.close()


def ratings(srv, answer_id: str) -> list[str]:
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.key}"}) as api:
        trace = api.get(f"/api/v1/answers/{answer_id}").json()
    return [r["rating"] for r in trace["ratings"]]


@pytest.mark.anyio
async def test_rate_the_answer_on_the_search_screen_with_keys_and_the_palette(srv):
    app = ConsoleApp(srv.url, srv.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        view = app.view("search")
        await until(pilot, lambda: app.query_one("#query", Input).has_focus, what="query field")
        await pilot.press("minus")  # typed into the field, not a rating
        assert app.query_one("#query", Input).value == "-"
        app.query_one("#query", Input).value = ""
        await pilot.press(*"per diem in Europe", "ctrl+o")
        status = app.query_one("#search-status", Label)
        await until(pilot, lambda: "answered by echo" in str(status.render()), what="the answer")
        assert view.answer_id and view.answer_id.startswith("ans_")
        await pilot.press("escape", "plus")
        await until(pilot, lambda: "rated up" in str(status.render()), what="the rating")
        assert ratings(srv, view.answer_id) == ["up"]
        titles = {c.title: c for c in app.get_system_commands(app.screen)}
        assert {"Rate answer up", "Rate answer down"} <= set(titles)
        titles["Rate answer down"].callback()
        await until(pilot, lambda: "rated down" in str(status.render()), what="the palette's rating")
        assert ratings(srv, view.answer_id) == ["down"]


@pytest.mark.anyio
async def test_rate_the_latest_chat_answer(srv):
    app = ConsoleApp(srv.url, srv.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        view = app.view("chat")
        await until(pilot, lambda: app.query_one("#message", Input).has_focus, what="message field")
        await pilot.press("escape", "plus")  # nothing to rate yet: said, not sent
        assert view.rating is None
        app.query_one("#message", Input).focus()
        await pilot.press(*"What is the per diem in Europe?", "enter")
        await until(pilot, lambda: view.replies == 1, what="the reply")
        await pilot.press("escape", "minus")
        await until(pilot, lambda: view.rating == "down", what="the rating")
        reply, _ = view._reply
        assert "rated down" in str(reply.render())
        assert ratings(srv, view.answer_id) == ["down"]
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {srv.key}"}) as api:
            trace = api.get(f"/api/v1/answers/{view.answer_id}").json()
        assert trace["conversation_id"] == view.conversation_id


def _report(collection: str, drifted_signals: list[str]) -> dict:
    signals = [
        DriftSignal(
            signal=name,
            test="mmd" if name == "embedding" else "ks",
            statistic=0.03,
            p_value=0.005 if name in drifted_signals else 0.4,
            psi=None,
            auc=None,
            reference_n=300,
            current_n=500,
            reference_mean=None,
            current_mean=None,
            drifted=name in drifted_signals,
            note="",
        )
        for name in ("embedding", "latency", "refusal_rate")
    ]
    return wire(
        DriftReport(
            id=f"drift_{collection}",
            collection=collection,
            checked_at=TS,
            trigger="schedule",
            reference=Window(start=TS, end=TS),
            current=Window(start=TS, end=TS),
            drifted=bool(drifted_signals),
            signals=signals,
        )
    )


@pytest.mark.anyio
async def test_the_dashboard_warns_of_drift_and_names_what_drifted():
    app = ConsoleApp("http://127.0.0.1:9", "apk_x", live=False)
    async with app.run_test(size=SIZE) as pilot:
        view = app.view("dashboard")
        line = app.query_one("#drift", Label)
        view.show_drift([_report("docs", []), _report("runbooks", [])])
        await pilot.pause()
        assert not line.display
        view.show_drift([_report("docs", ["embedding", "latency"]), _report("runbooks", [])])
        await pilot.pause()
        assert line.display
        assert str(line.render()) == "⚠ drift detected · docs: embedding, latency (appliance eval drift)"
