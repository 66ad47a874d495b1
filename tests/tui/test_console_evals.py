"""The console's Evals screen: sets with their history, runs, a run's worst items, two runs side by
side and the drift line, from fixed records and against the API of an in-process appliance."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, Label, Static

from appliance.tui.app import ConsoleApp
from appliance.tui.dialogs import FormDialog
from appliance.tui.widgets import Banner
from tests.core.evalsets import TOPICS, beir_set
from tests.inprocess import InProcessServer, echo_appliance
from tests.tui import fixed_data as data
from tests.tui.conftest import until

SIZE = (160, 40)


def rows(app: ConsoleApp, selector: str) -> list[list[str]]:
    table = app.query_one(selector, DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def text_of(app: ConsoleApp, selector: str) -> str:
    return str(app.query_one(selector).render())


@pytest.mark.anyio
async def test_sets_runs_worst_items_a_comparison_and_drift_from_records():
    app = ConsoleApp("http://appliance.invalid:8080", "apk_x", live=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("9")
        await until(pilot, lambda: app.active_tab == "evals", what="the Evals tab")
        view = app.view("evals")
        view.show(data.EVAL_SETS, data.EVAL_RUNS, data.DRIFT)
        await pilot.pause()

        sets = rows(app, "#eval-sets")
        assert sets[0][:7] == ["clapnq", "qa", "v2", "300", "200/100", "clapnq", "yes"]
        # accuracy of the finished clapnq runs, oldest first (0.38, 0.44, 0.31); the running one is left out
        assert sets[0][7] == "accuracy ▅█▁ 0.310"
        assert sets[1][7] == "ndcg@10 ▄ 0.712"
        runs = rows(app, "#eval-runs")
        assert [r[-1] for r in runs] == [r["id"] for r in data.EVAL_RUNS]
        assert runs[1][1:-1] == [
            "clapnq v2", "03-04 09:15:00", "succeeded", "300/300",
            "0.410", "0.310", "0.740", "0.580", "1520", "keyword", "Qwen2.5-Coder-1.5B-Instruct",
        ]  # fmt: skip
        assert runs[4][5:] == [
            "0.712",
            "-",
            "-",
            "-",
            "-",
            "hybrid",
            "-",
            "run_00000000000000a1",
        ]  # no answers

        assert text_of(app, "#eval-drift") == "drift · docs: embedding, latency · runbooks: no drift"
        assert app.query_one("#eval-drift", Label).has_class("-drifted")
        view.show_drift([data.DRIFT[1]])
        assert text_of(app, "#eval-drift") == "drift · runbooks: no drift"
        assert not app.query_one("#eval-drift", Label).has_class("-drifted")

        # Marking: A, then B; a third mark replaces the oldest; marking again unmarks.
        assert app.query_one("#eval-runs", DataTable).has_focus
        await pilot.press("down", "down", "m", "up", "m")
        assert view.pair() == ("run_00000000000000b2", "run_00000000000000b3")
        assert [r[0] for r in rows(app, "#eval-runs")] == ["", "B", "A", "", ""]
        await pilot.press("m", "down", "down")  # unmark B; the marked run against the selected one
        assert view.pair() == ("run_00000000000000b2", "run_00000000000000b1")
        await pilot.press("down", "m", "up", "m")  # a third mark drops the oldest
        assert [r[0] for r in rows(app, "#eval-runs")] == ["", "", "", "B", "A"]
        await pilot.press("m", "down", "m", "c")  # no mark left: c says what to do, nothing breaks
        assert view.pair() is None and not view.comparing

        view.show_run(data.EVAL_RUN, data.EVAL_ITEMS)
        await pilot.pause()
        assert "run_00000000000000b3 · clapnq v2 · succeeded 300/300" in text_of(app, "#eval-detail-title")
        assert "accuracy 0.310" in text_of(app, "#eval-scorecard") and "ttft_ms_p95 1520" in text_of(
            app, "#eval-scorecard"
        )
        worst = rows(app, "#eval-worst")
        assert [w[:4] for w in worst] == [
            ["17", "q17", "When was the Eiffel Tower completed?", "accuracy 0.000"],
            ["42", "q42", "Who is the current mayor of the moon colony?", "refusal_accuracy 0.000"],
            ["3", "q3", "How long is the Danube?", "failed"],
        ]
        assert (
            worst[0][4].startswith("The documents do not say") and worst[2][4] == "the chat model timed out"
        )
        assert app.query_one("#eval-worst").display and not app.query_one("#eval-comparison").display

        view.show_comparison(data.EVAL_COMPARISON)
        await pilot.pause()
        assert text_of(app, "#eval-detail-title") == (
            "B run_00000000000000b3 vs A run_00000000000000b2 · 300 paired items"
        )
        assert rows(app, "#eval-comparison") == [
            ["ndcg@10", "0.550", "0.410", "-0.140", "[-0.190, -0.090]", "regressed"],
            ["accuracy", "0.440", "0.310", "-0.130", "[-0.200, -0.060]", "regressed"],
            ["refusal_accuracy", "0.810", "0.740", "-0.070", "[-0.150, 0.010]", "within noise"],
            ["ttft_ms_p95", "1475", "1520", "+45.000", "-", "within noise"],
        ]
        assert app.query_one("#eval-comparison").display and not app.query_one("#eval-worst").display
        assert {"Run eval set", "Mark eval run", "Compare eval runs"} <= {
            c.title for c in app.get_system_commands(app.screen)
        }


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """An appliance with a small retrieval set, run twice (hybrid; keyword with top_k 1: worse),
    and a drift check of its collection."""
    app = echo_appliance(tmp_path_factory.mktemp("console-evals") / "data")
    admin = app.access.system_scope()
    evalset = app.evals.import_dir(
        admin, "topics", beir_set(tmp_path_factory.mktemp("sets") / "topics", TOPICS[:8])
    )
    for job in evalset.ingest_jobs:
        assert app.jobs.wait(job).state == "succeeded"
    good = app.evals.start_run(admin, "topics", top_k=10)
    assert app.jobs.wait(good.job_id).state == "succeeded"
    bad = app.evals.start_run(admin, "topics", mode="keyword", top_k=1)
    assert app.jobs.wait(bad.job_id).state == "succeeded"
    app.drift.check(admin, "topics")
    server = InProcessServer(app).start()
    server.runs = (good.id, bad.id)
    yield server
    server.stop()
    app.close()


@pytest.mark.anyio
async def test_the_evals_screen_against_the_api_compares_runs_and_starts_one(srv):
    good, bad = srv.runs
    app = ConsoleApp(srv.url, srv.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("9")
        await until(pilot, lambda: len(rows(app, "#eval-runs")) == 2, what="the runs")
        assert rows(app, "#eval-sets")[0][:4] == ["topics", "retrieval", "v1", "8"]
        assert rows(app, "#eval-sets")[0][7].startswith("ndcg@10 ")
        assert [r[-1] for r in rows(app, "#eval-runs")] == [bad, good]  # newest first
        assert text_of(app, "#eval-drift").startswith("drift · topics: ")
        # The selected run's scorecard and worst items (the keyword run with one hit misses some).
        await until(pilot, lambda: bad in text_of(app, "#eval-detail-title"), what="the run's detail")
        await until(pilot, lambda: len(rows(app, "#eval-worst")) == 8, what="the worst items")
        metrics = [r[3].split() for r in rows(app, "#eval-worst")]
        assert {m[0] for m in metrics} == {"ndcg@10"}
        values = [float(m[1]) for m in metrics]
        assert values == sorted(values) and values[0] < 1  # worst first
        assert "recall@10 " in text_of(app, "#eval-scorecard")

        await pilot.press("down", "m", "up", "m", "c")  # A: the good run, B: the degraded one
        await until(pilot, lambda: rows(app, "#eval-comparison"), what="the comparison")
        assert text_of(app, "#eval-detail-title").startswith(f"B {bad} vs A {good} · 8 paired items")
        recall = next(r for r in rows(app, "#eval-comparison") if r[0] == "recall@10")
        assert recall[5] == "regressed" and float(recall[3]) < 0
        await pilot.press("down")  # another run: its items again
        await until(pilot, lambda: app.query_one("#eval-worst").display, what="the run's items")
        assert good in text_of(app, "#eval-detail-title")

        # r: the dialog asks for the collection (the set's own by default) and starts a run.
        app.query_one("#eval-sets", DataTable).focus()
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, FormDialog), what="the run dialog")
        assert app.screen.query_one("#field-collection", Input).value == "topics"
        app.screen.query_one("#field-limit", Input).value = "5"
        app.screen.query_one("#field-limit", Input).focus()
        await pilot.press("enter")
        await until(pilot, lambda: len(rows(app, "#eval-runs")) == 3, what="the new run")
        await until(
            pilot, lambda: rows(app, "#eval-runs")[0][3:5] == ["succeeded", "5/5"], what="its 5 items"
        )
        assert str(app.query_one(Banner).render()) == ""


@pytest.mark.anyio
async def test_an_error_of_the_api_is_a_message_not_a_traceback(srv):
    admin = srv.app.access.system_scope()
    user = srv.app.access.create_key(admin, "reader", "user", ["topics"], None, None)
    app = ConsoleApp(srv.url, user.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("9")
        banner = app.query_one(Banner)
        # The dashboard (opened at start) fails for this key too; the shown screen's error wins.
        await until(pilot, lambda: str(banner.render()).startswith("evals:"), what="the banner")
        assert banner.has_class("-error")
        assert str(banner.render()).startswith("evals: Admin key needed")
        assert isinstance(app.query_one("#eval-scorecard", Static), Static)  # the console is still there
