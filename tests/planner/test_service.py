"""The planner through the core service, the API and the CLI: a quick calibration with the real SmolLM2 on
llama.cpp, stored in DuckDB, then predict, recommend and render over the wire with their JSON shapes."""

from __future__ import annotations

import json

import pytest

from appliance.cli import main
from appliance.errors import NotReady
from tests.inprocess import InProcessServer, echo_appliance

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    app = echo_appliance(tmp_path_factory.mktemp("plan") / "data")
    with pytest.raises(NotReady, match="not calibrated"):
        app.planner.calibration()
    app.planner.calibrate(app.access.system_scope(), quick=True)
    server = InProcessServer(app).start()
    yield server
    server.stop()
    app.close()


def cli(server, capsys, *argv: str) -> dict:
    assert main(["plan", *argv, "--url", server.url, "--key", server.key, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_calibration_is_stored_with_the_fingerprint(served, capsys):
    stored = served.app.planner.calibration()
    assert stored.model == "SmolLM2-135M-Instruct" and stored.quick
    assert {(p.slots, p.active) for p in stored.points} == {(1, 1), (2, 1), (2, 2)}
    assert all(p.decode_tokens_per_s > 0 and p.prefill_tokens_per_s > 0 for p in stored.points)
    assert stored.memory_bandwidth > 1e8 and stored.resident_per_slot_bytes > 0
    assert set(stored.overheads_ms) == {"embed_query", "retrieval"}
    assert cli(served, capsys, "calibration")["id"] == stored.id


def test_predict_json_shape(served, capsys):
    out = cli(
        served,
        capsys,
        "predict",
        "--model",
        "SmolLM2-135M-Instruct",
        "--slots",
        "2",
        "--context",
        "1024",
        "--users",
        "3",
        "--prompt-tokens",
        "100",
        "--output-tokens",
        "20",
    )
    for metric in ("ttft_ms", "e2e_ms", "itl_ms"):
        assert set(out[metric]) >= {"p50", "p95", "p99", "interval"}
        assert out[metric]["p50"] <= out[metric]["p95"] <= out[metric]["p99"]
    for key in (
        "tokens_per_s_per_user",
        "throughput_rps",
        "memory_bytes",
        "utilisation",
        "binding_constraint",
    ):
        assert out[key] is not None
    assert out["config"]["slots"] == 2 and out["calibrated"]
    assert out["extrapolated"] is False  # the calibrated model within the calibrated slots
    assert out["memory_bytes"] > smol_file_bytes()


def smol_file_bytes() -> int:
    from appliance.models.manifest import SMOLLM2

    return SMOLLM2.size


def test_predict_beyond_calibration_says_extrapolated(served, capsys):
    out = cli(served, capsys, "predict", "--model", "SmolLM2-135M-Instruct", "--slots", "4", "--rate", "0.5")
    assert out["extrapolated"] and any("4 slots" in r for r in out["extrapolation"])
    assert any("prompt_tokens" in a for a in out["assumed"])  # the chat default, said so


def test_recommend_render_and_gpus(served, capsys):
    rec = cli(
        served,
        capsys,
        "recommend",
        "--task",
        "chat",
        "--users",
        "2",
        "--p95-ttft-ms",
        "5000",
        "--priority",
        "cost",
    )
    assert rec["configurations"] >= 100 and rec["candidates"][0]["rank"] == 1
    assert "simulated" in rec["candidates"][0]
    gpu = next(c for c in rec["candidates"] + [None] if c is None or c["target"] != "cpu")
    if gpu is None:  # cost puts the box first: ask for GPUs by latency instead
        rec = cli(
            served,
            capsys,
            "recommend",
            "--task",
            "chat",
            "--users",
            "64",
            "--priority",
            "latency",
            "--top",
            "50",
        )
        gpu = next(c for c in rec["candidates"] if c["target"] != "cpu")
    out = cli(served, capsys, "render", gpu["id"])
    assert f"--max-num-seqs={gpu['slots']}" in out["vllm_args"] and "InferenceService" in out["kserve_yaml"]
    cpu = (
        next(c for c in rec["candidates"] if c["target"] == "cpu")
        if any(c["target"] == "cpu" for c in rec["candidates"])
        else None
    )
    if cpu is not None:
        assert cli(served, capsys, "render", cpu["id"])["settings"]["llm.slots"] == cpu["slots"]
    assert {g["name"] for g in cli(served, capsys, "gpus")} >= {"H100-80GB-SXM", "L4-24GB"}


def test_api_errors_are_problem_details(served):
    import httpx

    headers = {"Authorization": f"Bearer {served.key}"}
    r = httpx.post(f"{served.url}/api/v1/plan/predict", json={"model": "nope", "users": 1}, headers=headers)
    assert r.status_code == 404 and "unknown model" in r.json()["detail"]
    r = httpx.post(
        f"{served.url}/api/v1/plan/predict", json={"model": "SmolLM2-135M-Instruct"}, headers=headers
    )
    assert r.status_code == 400 and "rate" in r.json()["detail"]
    r = httpx.post(
        f"{served.url}/api/v1/plan/recommend", json={"users": 1, "priority": "speed"}, headers=headers
    )
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json")


def test_validate_refuses_a_server_elsewhere(capsys):
    # The load test only ever runs against this machine: refused before any request is sent.
    assert main(["plan", "validate", "--url", "http://192.0.2.1:9", "--key", "k"]) == 1
    assert "loopback" in capsys.readouterr().err


def test_background_calibration_checks_its_model_first(served):
    import httpx

    headers = {"Authorization": f"Bearer {served.key}"}
    r = httpx.post(f"{served.url}/api/v1/plan/calibrate", json={"model": "nope"}, headers=headers)
    assert r.status_code == 404
    status = httpx.get(f"{served.url}/api/v1/plan/calibration/status", headers=headers).json()
    # Nothing started: the status is still the fixture's calibration.
    assert status["state"] == "done" and status["calibration_id"] == served.app.planner.calibration().id


def test_apply_then_rollback_restores_the_previous_alias_and_settings(served, capsys):
    import httpx

    app = served.app
    store = app.registry.registry.store
    alias_before = store.alias_holders("default")
    llm_before = app.models.settings.llm
    rec = cli(served, capsys, "recommend", "--users", "1", "--no-gpus", "--priority", "cost", "--top", "50")
    chosen = next(
        c
        for c in rec["candidates"]
        if c["model"] == "SmolLM2-135M-Instruct" and c["slots"] != llm_before.slots
    )
    # The packaged default (the Qwen coder, installed here) holds `default`: the apply moves it.
    assert alias_before and alias_before[0][0] != chosen["model"]

    out = cli(served, capsys, "apply", chosen["id"], "--wait", "120")
    assert out["state"] == "applied" and out["health"] == "loaded", out
    assert out["before"]["default_model"] == (alias_before[0][0] if alias_before else None)
    assert store.alias_holders("default")[0][0] == "SmolLM2-135M-Instruct"
    llm = app.models.settings.llm
    assert (llm.slots, llm.context_length, llm.threads) == (
        chosen["slots"],
        chosen["context"],
        chosen["threads"],
    )
    # Reloaded with the new settings: llama.cpp serves the chosen slots and context.
    health = app.models.health()
    assert health["state"] == "loaded" and health["backend"] == "llama.cpp"
    assert health["context_length"] == chosen["context"]

    # A restart reads the settings file again: the plan in force is re-applied before the model loads.
    applied = app.models.settings.llm
    app.models.settings = app.settings  # the file's settings, as a fresh start has them
    assert app.models.settings.llm == llm_before
    app.planner.restore_applied()
    assert app.models.settings.llm == applied

    # The console's way out: unloaded, so the rollback does not load the previous default's weights.
    app.models.unload()
    back = cli(served, capsys, "apply", "--rollback")
    assert back["state"] == "rolled_back" and back["id"] == out["id"] and back["health"] == "unloaded"
    assert store.alias_holders("default") == alias_before
    assert app.models.settings.llm == llm_before
    assert [a["state"] for a in cli(served, capsys, "applies")][:1] == ["rolled_back"]
    audited = [(e["action"], e["target"]) for e in app.audit.recent(limit=10, action="plan.")]
    assert audited == [("plan.rollback", chosen["id"]), ("plan.apply", chosen["id"])]

    headers = {"Authorization": f"Bearer {served.key}"}
    r = httpx.post(f"{served.url}/api/v1/plan/rollback", headers=headers, timeout=30)
    assert r.status_code == 409 and "no applied plan" in r.json()["detail"]


def test_apply_is_for_admins_and_for_this_box(served):
    import httpx

    app = served.app
    app.catalog.ensure_collection("plan-docs")
    user = app.access.create_key(app.access.system_scope(), "reader", "user", ["plan-docs"], None, None)
    r = httpx.post(
        f"{served.url}/api/v1/plan/apply",
        json={"config_id": "x"},
        headers={"Authorization": f"Bearer {user.key}"},
    )
    assert r.status_code == 403
    headers = {"Authorization": f"Bearer {served.key}"}
    r = httpx.post(f"{served.url}/api/v1/plan/apply", json={"config_id": "nope"}, headers=headers)
    assert r.status_code == 404 and "recommend" in r.json()["detail"]
    rec = httpx.post(
        f"{served.url}/api/v1/plan/recommend",
        json={"users": 64, "priority": "latency", "top": 50},
        headers=headers,
        timeout=120,
    ).json()
    gpu = next(c for c in rec["candidates"] if c["target"] != "cpu")
    r = httpx.post(f"{served.url}/api/v1/plan/apply", json={"config_id": gpu["id"]}, headers=headers)
    assert r.status_code == 400 and "render" in r.json()["detail"]


def test_validations_are_stored_and_listed(served, capsys):
    row = {"metric": "p95 ttft", "predicted": 120.0, "interval": [90.0, 160.0], "measured": 150.0}
    stored = served.app.planner.validations.record(
        served.app.access.system_scope(),
        {
            "config_id": "SmolLM2-135M-Instruct@cpu-s1",
            "users": 2,
            "requests": 10,
            "errors": 0,
            "rows": [{**row, "error": -0.2, "inside_interval": True}],
        },
    )
    listed = cli(served, capsys, "validations")
    assert listed[0]["id"] == stored.id and listed[0]["rows"][0]["measured"] == 150.0


def test_validate_stores_predicted_vs_measured(served, capsys):
    # A short closed-loop run on the real SmolLM2 (two answers of four tokens): the run is stored and
    # listed with its per-metric rows, as the console's Plan tab shows them.
    served.app.models.load("SmolLM2-135M-Instruct")
    out = cli(
        served,
        capsys,
        "validate",
        "--users",
        "1",
        "--requests",
        "2",
        "--prompt-words",
        "20",
        "--output-tokens",
        "4",
    )
    assert out["measured"]["requests"] == 2 and out["rows"]
    listed = cli(served, capsys, "validations")
    newest = listed[0]
    assert newest["id"] == out["id"] and newest["config_id"] == out["config"]["id"]
    assert [r["metric"] for r in newest["rows"]] == [r["metric"] for r in out["rows"]]
    assert all(r["measured"] > 0 for r in newest["rows"])


def cli_rc(server, capsys, rc: int, *argv: str) -> dict:
    assert main(["plan", *argv, "--url", server.url, "--key", server.key, "--json"]) == rc
    return json.loads(capsys.readouterr().out)


VALIDATE = ("validate", "--users", "1", "--requests", "2", "--prompt-words", "20", "--output-tokens", "4")


def test_validation_refits_later_predictions_and_the_refit_can_be_dropped(served, capsys):
    served.app.models.load("SmolLM2-135M-Instruct")
    out = cli(served, capsys, *VALIDATE)
    refit = out["refit"]
    assert refit["model"] == "SmolLM2-135M-Instruct" and refit["weight"] == 0.1  # 2 of 20 answers
    factors = refit["factors_after"]
    assert out["id"] in factors["validations"]
    # Shrunk: runs of two answers (weight 0.1 each) move a factor by at most 2 ** (w / (2 + w)),
    # w their summed weight, whatever they measured.
    w = factors["weight"]
    assert 0.1 <= w <= 0.2 + 1e-9  # this one, and the module's earlier validate run
    for key in ("prefill_factor", "decode_factor"):
        assert 2 ** (-w / (2 + w)) - 1e-3 <= factors[key] <= 2 ** (w / (2 + w)) + 1e-3
    args = ("predict", "--model", "SmolLM2-135M-Instruct", "--users", "1", "--context", "1024")
    refitted = cli(served, capsys, *args)
    assert refitted["refit"]["validations"] == factors["validations"]
    assert refitted["refit"]["prefill_factor"] == factors["prefill_factor"]
    raw = cli(served, capsys, *args, "--no-refit")
    assert raw["refit"] is None
    if factors["decode_factor"] != 1.0:  # the decode cost is scaled: single-stream tokens/s moves with it
        assert raw["single_stream_tokens_per_s"] != refitted["single_stream_tokens_per_s"]
    listed = cli(served, capsys, "validations")
    assert listed[0]["id"] == out["id"] and listed[0]["refit"]["factors_after"] == factors
    # Undone: the validation leaves the factors (and comes back on restore).
    after = cli(served, capsys, "refit", "--drop", out["id"])
    assert all(out["id"] not in r["validations"] for r in after)
    assert cli(served, capsys, "validations")[0]["refit"]["dropped"] is True
    back = cli(served, capsys, "refit", "--restore", out["id"])
    assert any(out["id"] in r["validations"] for r in back)


def test_a_missed_promise_offers_the_rollback_and_auto_rollback_does_it(served, capsys):
    # Plan A (no promise) then plan B, recommended for an unreachable p95 TTFT of 1 ms; both SmolLM2,
    # so rolling B back reloads the small model only. Validating B offers the rollback; with
    # --auto-rollback it happens, and the record and the audit log say so.
    app = served.app
    store = app.registry.registry.store
    alias_before, llm_before = store.alias_holders("default"), app.models.settings.llm
    smol = [
        c
        for c in cli(
            served, capsys, "recommend", "--users", "1", "--no-gpus", "--priority", "cost", "--top", "50"
        )["candidates"]
        if c["model"] == "SmolLM2-135M-Instruct" and c["context"] <= 2048 and c["slots"] <= 2
    ]
    plan_a = smol[0]
    assert cli(served, capsys, "apply", plan_a["id"], "--wait", "120")["state"] == "applied"
    promised = cli(
        served,
        capsys,
        "recommend",
        "--users",
        "1",
        "--no-gpus",
        "--priority",
        "cost",
        "--top",
        "50",
        "--p95-ttft-ms",
        "1",
    )
    plan_b = next(
        c
        for c in promised["candidates"]
        if c["model"] == "SmolLM2-135M-Instruct"
        and c["context"] <= 2048
        and c["slots"] <= 2
        and (c["slots"], c["context"]) != (plan_a["slots"], plan_a["context"])
    )
    applied_b = cli(served, capsys, "apply", plan_b["id"], "--wait", "120")
    assert applied_b["health"] == "loaded"

    offered = cli_rc(served, capsys, 2, *VALIDATE)
    (ttft,) = [v for v in offered["verdicts"] if v["slo"] == "p95 ttft ms"]
    assert ttft["promised"] == 1 and ttft["verdict"] == "missed" and plan_b["id"] in ttft["source"]
    assert offered["rollback"]["state"] == "offered"
    assert offered["rollback"]["command"] == "appliance plan rollback"
    assert offered["rollback"]["apply_id"] == applied_b["id"]
    assert store_state(app) == (plan_b["slots"], plan_b["context"])  # only offered

    done = cli_rc(served, capsys, 2, *VALIDATE, "--auto-rollback")
    assert done["rollback"]["state"] == "done" and done["rollback"]["apply_id"] == applied_b["id"]
    assert store_state(app) == (plan_a["slots"], plan_a["context"])  # plan A is in force again
    assert cli(served, capsys, "applies")[0]["state"] == "rolled_back"
    assert cli(served, capsys, "validations")[0]["rollback"]["state"] == "done"
    audited = [(e["action"], e["target"]) for e in app.audit.recent(limit=3, action="plan.")]
    assert audited[:2] == [("plan.validate", offered["config"]["id"]), ("plan.rollback", plan_b["id"])]

    # Plan A has no promise: its validation judges nothing and offers nothing.
    calm = cli(served, capsys, *VALIDATE)
    assert calm["verdicts"] == [] and calm["rollback"] is None

    app.models.unload()  # back to the module's state without loading the previous default's weights
    cli(served, capsys, "rollback")
    assert store.alias_holders("default") == alias_before and app.models.settings.llm == llm_before


def store_state(app) -> tuple[int, int]:
    llm = app.models.settings.llm
    return llm.slots, llm.context_length
