"""A tuned embedder takes the collection's blue-green path: `tune embedder --rollout` registers a
version and queues the switch, which a failing gate refuses (the collection keeps its embedder);
`appliance collections embedder C --model NAME@VERSION --wait` then switches to it through a passing
gate on the tuning job's held-out queries, and `--rollback` returns; the API's errors are clear."""

from __future__ import annotations

import json

import httpx
import pytest

from appliance.cli import main
from tests.core.test_tuning import _doc
from tests.inprocess import InProcessServer, echo_appliance
from tests.tune.test_pairs import FACTS


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    app = echo_appliance(tmp_path_factory.mktemp("tuned") / "data")
    admin = app.access.system_scope()
    app.knowledge.create_collection(admin, "handbooks")
    job_id, _ = app.knowledge.submit(admin, "handbooks", [_doc(t, f) for t, f in FACTS.items()])
    assert app.jobs.wait(job_id).state == "succeeded"
    server = InProcessServer(app).start()
    yield app, server
    server.stop()
    app.close()


def _cli(server, capsys, *args: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main([*args, "--json", "--url", server.url, "--key", server.key])
    return code, json.loads(capsys.readouterr().out)


def test_the_api_refuses_bad_requests_clearly(served):
    app, server = served
    _, user = app.keys.create("reader", role="user", collections=["handbooks"])
    cases = [
        (server.key, "/api/v1/collections/handbooks/embedder", {"model": "no-such-model"}, 404),
        (server.key, "/api/v1/collections/nowhere/embedder", {"model": "all-MiniLM-L6-v2"}, 404),
        (server.key, "/api/v1/collections/handbooks/embedder", {"model": 5}, 400),
        (server.key, "/api/v1/collections/handbooks/embedder", {"model": "x", "colour": 1}, 400),
        (server.key, "/api/v1/collections/handbooks/embedder", {"model": "all-MiniLM-L6-v2"}, 409),
        (server.key, "/api/v1/collections/handbooks/embedder/confirm", None, 409),
        (server.key, "/api/v1/collections/handbooks/embedder/rollback", None, 409),
        (user, "/api/v1/collections/handbooks/embedder", {"model": "all-MiniLM-L6-v2"}, 403),
    ]
    for key, path, body, status in cases:
        r = httpx.post(server.url + path, json=body, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == status, (path, body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["detail"]
    r = httpx.get(
        server.url + "/api/v1/collections/handbooks/embedder", headers={"Authorization": f"Bearer {user}"}
    )
    assert r.status_code == 403


def test_a_tuned_version_is_switched_to_by_the_command_gated_on_its_held_out_queries(served, capsys):
    app, server = served
    admin = app.access.system_scope()
    # Rolled out through a gate it cannot pass (a gain of 1.0 nDCG@10): the collection stays put.
    tuned = app.tuning.tune_embedder(
        admin,
        "handbooks",
        max_steps=2,
        batch_size=4,
        held_out_fraction=0.25,
        seed=1,
        rollout=True,
        rollout_min_gain=1.0,
    )
    done = app.jobs.wait(tuned.id, timeout=600)
    assert done.state == "succeeded", done.error
    model = f"{done.summary['model']['name']}@{done.summary['model']['version']}"
    rollout = app.jobs.wait(done.summary["rollout"]["job"], timeout=300)
    assert rollout.state == "failed" and "gate failed" in rollout.error, rollout.error
    assert rollout.summary["options"]["resolved"] == model
    assert rollout.summary["gate"]["sources"] == [f"tuning held-out of job {tuned.id}"]
    assert app.embedders.get(admin, "handbooks").live.generation == 0

    # Two training steps may move nDCG either way: the tolerance makes this a test of the path.
    code, job = _cli(
        server, capsys, "collections", "embedder", "handbooks", "--model", model, "--min-gain", "-1", "--wait"
    )
    assert code == 0 and job["state"] == "succeeded", job
    gate = job["summary"]["gate"]
    assert gate["passed"] and gate["queries"] > 0
    assert gate["sources"] == [f"tuning held-out of job {tuned.id}"]
    code, shown = _cli(server, capsys, "collections", "embedder", "handbooks")
    assert code == 0 and shown["live"]["resolved"] == model and shown["previous"]["generation"] == 0
    hits = app.knowledge.search(admin, "harbour survey", ["handbooks"], mode="semantic", top_k=3).hits
    assert hits and app.embedders.embedder_for("handbooks")[1].name == model

    code, back = _cli(server, capsys, "collections", "embedder", "handbooks", "--rollback")
    assert code == 0 and back["live"]["generation"] == 0 and back["previous"] is None


@pytest.mark.anyio
async def test_the_console_switches_a_collections_embedder_from_the_knowledge_screen(served):
    from appliance.tui.app import ConsoleApp
    from tests.tui.test_console_registry import _submit

    app, server = served
    admin = app.access.system_scope()
    tuned = next(f for f in app.registry.list(admin) if f.name.endswith("-handbooks"))
    model = f"{tuned.name}@{tuned.versions[-1].version}"
    console = ConsoleApp(server.url, server.key)
    async with console.run_test(size=(160, 48)) as pilot:
        await pilot.press("2")
        await pilot.pause()
        await pilot.press("e")
        await _submit(pilot, console, collection="handbooks", action="switch", model=model)
        for _ in range(200):
            jobs = [j for j in app.jobs.list(admin) if j.kind == "reembed" and j.collection == "handbooks"]
            if len(jobs) == 3:  # the rollout's, the command's, the console's
                break
            await pilot.pause(0.05)
    assert len(jobs) == 3 and jobs[0].summary["options"]["resolved"] == model
    assert app.jobs.wait(jobs[0].id, timeout=300).state in ("succeeded", "failed")


def test_the_command_line_keeps_collections_and_takes_the_embedder_actions():
    from appliance.cli import build_parser

    parser = build_parser()
    listed = parser.parse_args(["collections", "--json"])
    assert listed.func.__name__ == "_collections" and listed.json
    switch = parser.parse_args(
        ["collections", "embedder", "docs", "--model", "m@2", "--min-gain", "0.01", "--wait"]
    )
    assert (switch.collection, switch.model, switch.min_gain, switch.wait) == ("docs", "m@2", 0.01, True)
    with pytest.raises(SystemExit):  # one action at a time
        parser.parse_args(["collections", "embedder", "docs", "--confirm", "--rollback"])
