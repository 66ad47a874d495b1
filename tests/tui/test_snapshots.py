"""SVG snapshots of the main screens at 80×24 and 160×48, filled with fixed data (no server, no clocks)."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from appliance.tui.app import ConsoleApp
from tests.tui import fixed_data as data
from tests.tui.snapshot import assert_snapshot

SIZES = [(80, 24), (160, 48)]


def fill(app: ConsoleApp, screen: str) -> None:
    """What each view would show after its fetch, from fixed answers."""
    if screen == "dashboard":
        app.view("dashboard").show(data.STATS, data.SOURCES, data.FEEDBACK)
    elif screen == "knowledge":
        app.view("knowledge").show(data.COLLECTIONS, data.DOCUMENTS, data.SOURCES, data.QUARANTINE)
    elif screen == "search":
        view = app.view("search")
        view.query_one("#query", Input).value = "per diem in Europe"
        view.show_hits(data.HITS, "3 hits · hybrid · 12 ms")
        view.show_answer(data.ANSWER)
    elif screen == "jobs":
        app.view("jobs").show(data.JOBS, data.JOB_DETAIL)
    elif screen == "keys":
        app.view("keys").show(data.KEYS, data.AUDIT)
    elif screen == "models":
        app.view("models").show(data.MODELS)
        app.view("models").show_registry(data.REGISTRY, data.REGISTRY_HISTORY)
    elif screen == "logs":
        app.view("logs").append(data.LOG_LINES)
    elif screen == "evals":
        view = app.view("evals")
        view.show(data.EVAL_SETS, data.EVAL_RUNS, data.DRIFT)
        view.show_run(data.EVAL_RUN, data.EVAL_ITEMS)
    elif screen == "workflows":
        app.view("workflows").show(
            data.WORKFLOWS, data.WORKFLOW_RUNS, data.APPROVALS, data.WORKFLOW_BODY, data.WORKFLOW_RUN
        )
    elif screen == "plan":
        view = app.view("plan")
        view.query_one("#plan-users", Input).value = "4"
        view.query_one("#plan-p95_ttft_ms", Input).value = "2000"
        view.show_recommendation(data.PLAN_RECOMMENDATION)
        view.show_history(data.PLAN_VALIDATIONS, data.PLAN_APPLIES)


@pytest.mark.anyio
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize(
    "screen",
    ["dashboard", "knowledge", "search", "jobs", "keys", "models", "logs", "evals", "workflows", "plan"],
)
async def test_screen_snapshot(screen, size, tmp_path):
    app = ConsoleApp("http://appliance.invalid:8080", "apk_snapshot", live=False)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        app.action_show_tab(screen)
        while app.active_tab != screen:
            await pilot.pause(0.05)
        fill(app, screen)
        for field in app.query(Input):
            field.cursor_blink = False  # a blinking cursor would make two screenshots differ
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        svg = app.export_screenshot(title=f"{screen} {size[0]}x{size[1]}")
    assert_snapshot(svg, f"{screen}-{size[0]}x{size[1]}", tmp_path)
