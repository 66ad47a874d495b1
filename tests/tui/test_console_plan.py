"""The console's Plan screen against the API of an in-process appliance (echo runtime; a stored quick
calibration of SmolLM2 on the development box): the intent form's ranked recommendations, a what-if on the selected
configuration, the validation history, a bad number in the banner; and the pure pieces on their own."""

from __future__ import annotations

import json

import msgspec
import pytest
from textual.widgets import DataTable, Input

from appliance.plan_records import Calibration, DeploymentIntent
from appliance.planner.hardware import this_box
from appliance.planner.serving import ServingConfig
from appliance.tui.app import SCREENS, ConsoleApp, tab_key
from appliance.tui.screens.plan import FormError, changed_body, intent_from_form, predict_body
from appliance.tui.widgets import Banner
from tests.inprocess import InProcessServer, echo_appliance
from tests.tui import fixed_data as data
from tests.tui.conftest import until

pytest.importorskip("llama_cpp")

SIZE = (160, 48)


def rows(app: ConsoleApp, selector: str) -> list[list[str]]:
    table = app.query_one(selector, DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def text_of(app: ConsoleApp, selector: str) -> str:
    return str(app.query_one(selector).render())


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    app = echo_appliance(tmp_path_factory.mktemp("console-plan") / "data")
    # A stored calibration, as `plan calibrate` leaves one, for this box's fingerprint.
    recorded = msgspec.json.decode(data.PLAN_CALIBRATION_JSON, type=Calibration)
    app.planner.store.save_calibration(msgspec.structs.replace(recorded, fingerprint=this_box().fingerprint))
    app.planner.validations.record(
        app.access.system_scope(),
        {
            "config_id": "SmolLM2-135M-Instruct@cpu-s2-c2048-t1",
            "users": 2,
            "requests": 12,
            "errors": 0,
            "rows": [
                {
                    "metric": "p95 ttft",
                    "predicted": 420.0,
                    "interval": [300.0, 560.0],
                    "measured": 480.0,
                    "error": -0.125,
                    "inside_interval": True,
                    "raw_predicted": 420.0,
                },
                {
                    "metric": "p95 e2e",
                    "predicted": 2100.0,
                    "interval": [1900.0, 2300.0],
                    "measured": 2600.0,
                    "error": -0.192,
                    "inside_interval": False,
                },
            ],
            # An earlier calibration's: its refit shows in the history, the predictions here ignore it.
            "model": "SmolLM2-135M-Instruct",
            "slots": 2,
            "context": 2048,
            "calibration_id": "an-earlier-calibration",
            "slo_p95_ttft_ms": 300.0,  # missed by more than the interval's +33%; no plan applied
        },
    )
    server = InProcessServer(app).start()
    yield server
    server.stop()
    app.close()


def test_the_plan_tab_is_the_eleventh_on_shift_p():
    assert SCREENS[10][0] == "plan" and tab_key(11) == "P" and tab_key(10) == "0"


def test_the_intent_form_reads_numbers_and_never_fills_a_blank():
    assert intent_from_form({"users": "4", "p95_ttft_ms": "800"}, "rag", "cost") == {
        "task": "rag",
        "priority": "cost",
        "users": 4,
        "p95_ttft_ms": 800.0,
    }
    for values, message in (
        ({"users": "four"}, "users: 'four' is not a whole number"),
        ({"rate": "0"}, "requests/s: must be above 0"),
        ({"users": "2", "rate": "1.5"}, "users or requests/s, not both"),
    ):
        with pytest.raises(FormError, match=message):
            intent_from_form(values, "chat", "latency")
    config = {"model": "m", "target": "cpu", "slots": 2, "context": 2048, "threads": 1, "id": "x"}
    base = predict_body(config, {"task": "chat", "users": 2, "priority": "cost", "p95_ttft_ms": 9.0})
    assert base == {
        "task": "chat",
        "users": 2,
        "model": "m",
        "target": "cpu",
        "slots": 2,
        "context": 2048,
        "threads": 1,
    }
    assert changed_body(base, "rate", 0.5)["rate"] == 0.5 and "users" not in changed_body(base, "rate", 0.5)
    assert changed_body(base, "slots", 4.0)["slots"] == 4 and base["slots"] == 2


@pytest.mark.anyio
async def test_recommend_what_if_and_the_validation_history(srv):
    app = ConsoleApp(srv.url, srv.key)
    async with app.run_test(size=SIZE) as pilot:
        # The palette's "Go to Plan" comes with the SCREENS entry; shift+p opens it too.
        await until(pilot, lambda: app.active_tab == "dashboard", what="the console")
        go = next(c for c in app.get_system_commands(app.screen) if c.title == "Go to Plan")
        go.callback()
        await until(pilot, lambda: app.active_tab == "plan", what="the Plan tab from the palette")
        await pilot.press("escape", "1")  # out of the intent form's first field, which has the focus
        await until(pilot, lambda: app.active_tab == "dashboard", what="the dashboard again")
        await pilot.press("escape", "P")
        await until(pilot, lambda: app.active_tab == "plan", what="the Plan tab on shift+p")

        # The stored validation: one row per metric, predicted vs measured and the interval verdict.
        await until(pilot, lambda: len(rows(app, "#plan-validations")) == 2, what="the validations")
        ttft, e2e = rows(app, "#plan-validations")
        assert ttft[3:8] == ["p95 ttft", "420", "480", "-12%", "inside"]
        assert e2e[3:] == ["p95 e2e", "2,100", "2,600", "-19%", "OUTSIDE", ""]
        # Its outcome, on its first row: the refit it taught, the SLO verdict, the rollback's fate.
        # 480/420 from 12 of 20 answers: exp(0.6 * log(480 / 420) / 2.6) = 1.03.
        assert ttft[8] == "refit x1.03/x1.00; p95 ttft ms missed; rollback not applicable"
        assert "no plan applied" in text_of(app, "#plan-applied")

        # A bad number: the banner says which field, nothing is sent.
        app.query_one("#plan-users", Input).value = "two"
        app.query_one("#plan-users", Input).focus()
        await pilot.press("enter")
        banner = app.query_one(Banner)
        await until(pilot, lambda: "plan:" in str(banner.render()), what="the form's error")
        assert "users: 'two' is not a whole number" in str(banner.render()) and banner.has_class("-error")
        assert not rows(app, "#plan-table")

        # The intent: 2 users, p95 TTFT within 5 s, by cost; enter ranks the configurations.
        app.query_one("#plan-users", Input).value = "2"
        app.query_one("#plan-p95_ttft_ms", Input).value = "5000"
        await pilot.press("enter")
        await until(pilot, lambda: len(rows(app, "#plan-table")) >= 10, what="the recommendations")
        ranked = rows(app, "#plan-table")
        assert [r[0] for r in ranked[:3]] == ["1", "2", "3"]
        assert "configurations meet the constraints" in text_of(app, "#plan-summary")
        assert str(banner.render()) == ""
        rec = app.view("plan").recommendation
        assert rec["intent"]["users"] == 2 and rec["intent"]["p95_ttft_ms"] == 5000
        assert rec["intent"]["prompt_tokens"] is None  # a blank stays blank: the task's default, said so
        assert any("prompt_tokens" in a for a in rec["assumed"])

        # What if 8 users instead of 2, on the top configuration: before and after side by side.
        app.query_one("#plan-table", DataTable).move_cursor(row=0)
        app.query_one("#plan-whatif-value", Input).value = "8"
        app.query_one("#plan-whatif-value", Input).focus()
        await pilot.press("enter")
        await until(pilot, lambda: "users: 2 -> 8" in text_of(app, "#plan-whatif"), what="the what-if")
        whatif = text_of(app, "#plan-whatif")
        assert ranked[0][2] in whatif and "p95 TTFT ms" in whatif and "utilisation" in whatif
        # The same configuration predicted directly under 8 users: what the panel shows after the arrow.
        top = rec["candidates"][0]
        direct = srv.app.planner.predict(
            ServingConfig(top["model"], top["target"], top["slots"], top["context"], top["threads"]),
            DeploymentIntent(task="chat", users=8),
        )
        utilisation = next(line for line in whatif.splitlines() if "utilisation" in line)
        assert utilisation.split("->")[1].split()[0] == f"{direct['utilisation']:.2f}"


@pytest.mark.anyio
async def test_describing_the_deployment_fills_only_what_was_said(srv):
    from tests.workflows.scripted import ConstrainedScriptedRuntime

    def reply(**given) -> str:
        fields = ("task", "users", "rate", "prompt_tokens", "output_tokens", "p95_ttft_ms")
        fields += ("tokens_per_s_per_user", "budget_usd_month", "priority")
        return json.dumps({f: given.get(f) for f in fields})

    # The model invents 50 users at first; the form must not take them.
    model = ConstrainedScriptedRuntime(
        [reply(task="rag", users=50), reply(task="rag", users=12, p95_ttft_ms=2000, priority="cost")]
    )
    srv.app.models.serve(model)
    app = ConsoleApp(srv.url, srv.key)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("P")
        await until(pilot, lambda: app.active_tab == "plan", what="the Plan tab")
        describe = app.query_one("#plan-describe", Input)
        describe.focus()
        describe.value = "answers from our handbook for the support team"
        await pilot.press("enter")
        await until(
            pilot, lambda: "how many users" in text_of(app, "#plan-question").lower(), what="the question"
        )
        assert "not kept: users=50: not a number of the conversation" in text_of(app, "#plan-question")
        assert app.query_one("#plan-users", Input).value == ""
        assert app.query_one("#plan-task").value == "rag"
        describe.value = "12 people at once, the first words within 2 seconds, cheap"
        await pilot.press("enter")
        await until(pilot, lambda: app.query_one("#plan-users", Input).value == "12", what="the users")
        assert app.query_one("#plan-p95_ttft_ms", Input).value == "2000"
        assert app.query_one("#plan-priority").value == "cost"
        assert app.query_one("#plan-prompt_tokens", Input).value == ""  # never said: still blank
        assert "prompt length" in text_of(app, "#plan-question")
    # The second reading saw the whole conversation, the first question included.
    assert "How many users" in model.prompts[1] and "answers from our handbook" in model.prompts[1]
