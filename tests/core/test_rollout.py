"""Safe rollout in-process (real DuckDB, audit log, registry, pool; echo runtimes as the model
versions): a canary with injected errors rolls back on its own and sends the candidate nothing
after, a healthy one advances and is promoted blue-green, assignment is sticky per key, a user key
cannot start one; shadow mirroring leaves production byte-identical and reports agreement; a
blue-green flip under a steady stream of requests (official openai SDK) answers every one 2xx."""

from __future__ import annotations

import json
import threading
import time

import httpx
import msgspec
import openai
import pytest

from appliance.cli import main as cli_main
from appliance.db.keys import Principal
from appliance.errors import Forbidden
from appliance.files import sha256_file
from appliance.models.echo import EchoRuntime
from appliance.models.rollout import CANDIDATE, arm_for
from appliance.models.runtime import ChatMessage, GenerationParams
from appliance.tui.screens.models import rollout_lines
from tests.inprocess import InProcessServer, echo_appliance, ingest

PARAMS = GenerationParams(max_tokens=4, temperature=0.0)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app = echo_appliance(
        tmp_path_factory.mktemp("rollout") / "data",
        llm={"load_at_start": False},
        registry={"watch_inbox": False, "shadow_queue": 64},
    )
    yield app
    app.close()


@pytest.fixture(scope="module")
def admin(app):
    return app.access.system_scope()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return tmp_path_factory.mktemp("weights")


def _family(app, admin, weights, name: str, runtimes: dict[int, EchoRuntime]) -> None:
    """A chat family with a ready version per runtime (small files: only their hash is read), v1 in
    production; each version served by its echo runtime, as the pool names it (`name`, `name@N`)."""
    reg = app.registry.registry
    for version in sorted(runtimes):
        path = weights / f"{name}-v{version}.gguf"
        path.write_bytes(f"weights of {name} version {version}".encode())
        got = reg.register_pinned(name, "chat", "llama.cpp", path, sha256_file(path), None, "test", ["chat"])
        assert got.version == version
    app.registry.promote(admin, name, 1, "production", reason="first release")
    for version, runtime in runtimes.items():
        app.models.serve_also(runtime, pinned=version == 1)


def _scope(app, key_id: str, collections: tuple[str, ...] | None = None):
    return app.access.scope(Principal(key_id=key_id, name=key_id, role="user", collections=collections))


def _chat(app, scope, model: str, text: str = "what is the leave policy"):
    messages = [ChatMessage("user", text)]
    decision = app.gateway.route(model, messages, None, scope)
    opened, done = app.gateway.chat(scope, decision, messages, None, None, PARAMS)
    return opened, done


def _settle(app) -> None:
    for thread in list(app.rollouts.analysis_threads):
        thread.join(30)


def _drive(app, name: str, limit: int, start: int = 0) -> tuple[int, list[str]]:
    """Requests for `name`'s production from fresh keys until its canary ends (or `limit`); returns
    how many were sent and the model that served each."""
    served = []
    for i in range(start, start + limit):
        opened, done = _chat(app, _scope(app, f"key-{name}-{i}"), name)
        assert done.completion_tokens == 4  # every caller got an answer, the candidate's errors or not
        served.append(opened.served.name)
        if app.rollouts.canary(name).state != "running":
            break
    _settle(app)
    return len(served), served


def test_a_failing_candidate_is_rolled_back_on_its_own_and_gets_no_traffic_after(app, admin, weights):
    _family(
        app,
        admin,
        weights,
        "faulty",
        {1: EchoRuntime("faulty", capacity=2), 2: EchoRuntime("faulty@2", capacity=2, error_rate=0.5)},
    )
    started = app.rollouts.start_canary(admin, "faulty", 2, "25,50,100", min_samples=20)
    assert (started.state, started.weight, started.stable_version) == ("running", 25, 1)
    assert app.registry.get(admin, "faulty").aliases["canary"] == 2
    _drive(app, "faulty", 2000)
    canary = app.rollouts.canary("faulty")
    assert canary.state == "rolled_back" and 1 <= len(canary.analyses) <= 2
    failed = canary.analyses[-1]
    assert failed.outcome == "rolled_back" and not failed.passed
    assert next(c for c in failed.checks if c["name"] == "error_rate")["passed"] is False
    assert failed.candidate["errors"] > 0 and failed.stable["errors"] == 0
    family = app.registry.get(admin, "faulty")
    assert "canary" not in family.aliases and family.aliases["production"] == 1
    history = app.registry.history(admin, "faulty")
    assert [(m.alias, m.action, m.version) for m in history[-2:]] == [
        ("canary", "canary", 2),
        ("canary", "rollback", None),
    ]
    assert "error_rate" in history[-1].reason
    audited = [e for e in app.audit.recent(limit=500, action="model.canary") if e["target"] == "faulty@2"]
    assert [e["detail"]["event"] for e in reversed(audited)][-1] == "rolled_back"
    # From here on the candidate gets nothing: 100 more callers, all on stable.
    _, served = _drive(app, "faulty", 100, start=5000)
    assert set(served) == {"faulty"}
    decision = app.gateway.route("faulty", [ChatMessage("user", "hi")], None, _scope(app, "key-x"))
    assert decision.rollout == "" and decision.model == "faulty"


def test_a_healthy_canary_advances_step_by_step_and_is_promoted_blue_green(app, admin, weights):
    _family(
        app,
        admin,
        weights,
        "steady",
        {1: EchoRuntime("steady", capacity=2), 2: EchoRuntime("steady@2", capacity=2)},
    )
    app.rollouts.start_canary(admin, "steady", 2, [20, 60, 100], min_samples=15)
    sent, served = _drive(app, "steady", 3000)
    canary = app.rollouts.canary("steady")
    assert canary.state == "promoted", canary
    assert [(a.weight, a.outcome) for a in canary.analyses] == [
        (20, "advanced"),
        (60, "advanced"),
        (100, "promoted"),
    ]
    assert canary.analyses[0].stable["requests"] >= 15 and all(a.passed for a in canary.analyses)
    assert "steady@2" in served and "steady" in served
    family = app.registry.get(admin, "steady")
    assert family.aliases["production"] == 2 and "canary" not in family.aliases
    moves = [(m.alias, m.action, m.version) for m in app.registry.history(admin, "steady")]
    assert moves[-5:] == [
        ("canary", "canary", 2),
        ("canary", "canary-step", 2),
        ("canary", "canary-step", 2),
        ("canary", "remove", None),
        ("production", "promote", 2),
    ]
    # Blue-green: the family's name is served by version 2 now, without a load in between.
    opened, _ = _chat(app, _scope(app, "after"), "steady")
    assert opened.served.name == "steady@2"
    assert app.rollouts.canary("steady").weight == 0


@pytest.fixture(scope="module")
def sticky(app, admin, weights):
    """A family `sticky` whose canary of v2 runs at 50% and never reaches its sample."""
    _family(
        app,
        admin,
        weights,
        "sticky",
        {1: EchoRuntime("sticky", capacity=2), 2: EchoRuntime("sticky@2", capacity=2)},
    )
    return app.rollouts.start_canary(admin, "sticky", 2, [50, 100], min_samples=100000)


def test_assignment_is_sticky_per_key_and_shown_in_the_route_header(app, sticky):
    canary = sticky
    on_candidate = 0
    for k in range(24):
        scope = _scope(app, f"sticky-key-{k}")
        seen = {_chat(app, scope, "sticky")[0].served.name for _ in range(3)}
        expected = "sticky@2" if arm_for(scope.key_id, canary.id, 50) == CANDIDATE else "sticky"
        assert seen == {expected}
        on_candidate += expected == "sticky@2"
        for name in ("sticky", "sticky@production"):  # the family's production, either way it is named
            header = app.gateway.route(name, [ChatMessage("user", "hi")], None, scope).header()
            assert header.endswith("canary=candidate" if expected == "sticky@2" else "canary=stable")
    assert 0 < on_candidate < 24
    # An explicit version is not split: a key on stable that names version 2 gets it, uncounted.
    stable_key = next(
        f"sticky-key-{k}" for k in range(24) if arm_for(f"sticky-key-{k}", canary.id, 50) != CANDIDATE
    )
    assert _chat(app, _scope(app, stable_key), "sticky@2")[0].served.name == "sticky@2"
    live = app.rollouts.decorate(app.registry.get(admin, "sticky"))
    assert live.canary.traffic["candidate"]["requests"] == on_candidate * 3
    # The console's Models screen shows the split and the sample from this record.
    (line,) = rollout_lines(msgspec.to_builtins(live))
    assert f"sticky v2 50% · v1 50%  step 1/2  sample {on_candidate * 3}/100000" in line


def test_per_model_series_tell_the_canary_from_the_stable_version(app, sticky):
    """model_* series carry the family, its version and alias: the candidate's as "canary", the
    stable's as "production", side by side under one model label."""

    def count(version: str, alias: str) -> float:
        labels = {"model": "sticky", "version": version, "alias": alias}
        return app.metrics.registry.get_sample_value("model_first_token_seconds_count", labels) or 0.0

    before = {arm: count(*arm) for arm in (("1", "production"), ("2", "canary"))}
    keys = {CANDIDATE: None, "stable": None}
    for k in range(40):
        key = f"labels-key-{k}"
        keys[CANDIDATE if arm_for(key, sticky.id, 50) == CANDIDATE else "stable"] = key
    _chat(app, _scope(app, keys[CANDIDATE]), "sticky")
    _chat(app, _scope(app, keys["stable"]), "sticky")
    _chat(app, _scope(app, keys["stable"]), "sticky@2")  # named explicitly: still the candidate version
    assert count("2", "canary") - before[("2", "canary")] == 2
    assert count("1", "production") - before[("1", "production")] == 1
    assert (
        app.metrics.registry.get_sample_value(
            "model_first_token_seconds_count", {"model": "sticky", "version": "", "alias": ""}
        )
        is None
    )  # no unlabelled series beside them


def test_thumbs_down_on_the_candidates_knowledge_answers_rolls_it_back(app, admin, weights):
    _family(
        app,
        admin,
        weights,
        "rated",
        {1: EchoRuntime("rated", capacity=2), 2: EchoRuntime("rated@2", capacity=2)},
    )
    ingest(app, "handbook", {"leave": "Employees receive 27 days of annual leave."})
    app.rollouts.start_canary(admin, "rated", 2, [50, 100], min_samples=30)
    # Knowledge answers are split like chats; each asker rates its answer: the candidate's down.
    answered = {"rated": 0, "rated@2": 0}
    for i in range(60):
        scope = _scope(app, f"rater-{i}", ("handbook",))
        answer = app.answers.answer(scope, "how many days of annual leave", ["handbook"], model="rated")
        assert app.feedback.flush(30)
        app.feedback.rate(scope, answer.id, "down" if answer.model == "rated@2" else "up")
        answered[answer.model] += 1
    assert min(answered.values()) >= 10, answered
    # Chats bring the step to its sample; errors and latency are alike, the ratings are not.
    _drive(app, "rated", 2000)
    canary = app.rollouts.canary("rated")
    assert canary.state == "rolled_back", canary
    checks = {c["name"]: c for c in canary.analyses[-1].checks}
    assert checks["error_rate"]["passed"] and checks["thumbs_down_rate"]["passed"] is False
    assert canary.analyses[-1].candidate["thumbs_down_rate"] == 1.0
    assert canary.analyses[-1].stable["thumbs_down_rate"] == 0.0


def test_a_running_canary_is_durable_a_fresh_service_resumes_it_at_its_step(app, admin, weights):
    from appliance.core.rollout import Rollouts
    from appliance.db.rollouts import RolloutStore

    _family(
        app,
        admin,
        weights,
        "durable",
        {1: EchoRuntime("durable", capacity=2), 2: EchoRuntime("durable@2", capacity=2)},
    )
    started = app.rollouts.start_canary(admin, "durable", 2, [30, 60, 100], min_samples=10)
    for i in range(1000):
        _chat(app, _scope(app, f"durable-{i}"), "durable")
        if app.rollouts.canary("durable").step == 1:
            break
    _settle(app)
    assert app.rollouts.canary("durable").weight == 60
    # What a restart does: a new service over the same DuckDB.
    again = Rollouts(app.settings, RolloutStore(app.db), app.registry, app.models, app.audit)
    again.start()
    try:
        resumed = again.canary("durable")
        assert (resumed.id, resumed.state, resumed.step, resumed.weight) == (started.id, "running", 1, 60)
        assert [a.outcome for a in resumed.analyses] == ["advanced"]
        assert resumed.traffic["candidate"]["requests"] == 0  # the step's sample starts over
        scope = _scope(app, "durable-key")
        decision = again.assign(scope, app.models.choose("durable"))
        assert decision.rollout.endswith(arm_for(scope.key_id, started.id, 60))
    finally:
        again.close()


@pytest.fixture(scope="module")
def server(app):
    srv = InProcessServer(app).start()
    yield srv
    srv.stop()


def test_over_http_and_the_cli_a_user_key_cannot_start_a_canary_and_an_admin_can(server, app, sticky):
    admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=60)
    app.catalog.ensure_collection("canary-readers")
    created = admin.post(
        "/api/v1/keys", json={"name": "canary-user", "role": "user", "collections": ["canary-readers"]}
    )
    assert created.status_code == 201, created.text
    user = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {created.json()['key']}"}, timeout=60
    )
    for path, body in [
        ("/api/v1/models/sticky/canary", {"version": 2, "steps": [5, 100]}),
        ("/api/v1/models/sticky/shadow", {"version": 2, "share": 0.5}),
        ("/api/v1/models/sticky/rollback", {"alias": "canary"}),
    ]:
        answer = user.post(path, json=body)
        assert answer.status_code == 403, (path, answer.text)
    with pytest.raises(Forbidden):
        app.rollouts.start_canary(
            app.access.scope(app.keys.authenticate(created.json()["key"])), "sticky", 2, [100]
        )
    # Over the wire (official SDK), the caller's key decides the arm, and the header says which.
    chat = _client(server).chat.completions.with_raw_response.create(
        model="sticky",
        messages=[{"role": "user", "content": "which arm am I on"}],
        max_tokens=3,
        temperature=0,
    )
    shown = user.get("/api/v1/models/sticky").json()["canary"]
    arm = arm_for(app.keys.authenticate(server.key).key_id, shown["id"], 50)
    assert chat.parse().model == ("sticky@2" if arm == CANDIDATE else "sticky")
    assert chat.headers["x-appliance-route"].endswith(f"canary={arm}")
    assert (shown["state"], shown["weight"], shown["candidate_version"]) == ("running", 50, 2)
    again = admin.post("/api/v1/models/sticky/canary", json={"version": 2, "steps": [5, 100]})
    assert again.status_code == 409 and "already has a canary running" in again.json()["detail"]
    bad = admin.post("/api/v1/models/steady/canary", json={"version": 1, "steps": [50, 25]})
    assert bad.status_code == 400 and "more traffic than the one before" in bad.json()["detail"]
    user.close()
    admin.close()


def test_the_cli_starts_lists_and_stops_a_canary_with_json(server, app, admin, weights, capsys):
    _family(app, admin, weights, "clitest", {1: EchoRuntime("clitest"), 2: EchoRuntime("clitest@2")})
    flags = ["--json", "--url", server.url, "--key", server.key]

    def run(*argv: str) -> object:
        assert cli_main(["models", *argv, *flags]) == 0
        return json.loads(capsys.readouterr().out)

    started = run("canary", "clitest", "2", "--steps", "5,25,50,100", "--min-samples", "1000")
    assert (started["state"], started["weight"], started["steps"]) == ("running", 5, [5, 25, 50, 100])
    listed = {f["name"]: f for f in run("list")}
    assert listed["clitest"]["canary"]["id"] == started["id"]
    stopped = run("rollback", "clitest", "--alias", "canary")
    assert (stopped["alias"], stopped["action"], stopped["version"]) == ("canary", "rollback", None)
    assert run("list") and app.rollouts.canary("clitest").state == "rolled_back"
    assert cli_main(["models", "canary", "clitest", "2", "--steps", "5,50", *flags]) == 1  # not ending at 100
    assert "must be 100" in capsys.readouterr().err


def _client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0, timeout=60)


def _body(raw) -> tuple[dict, str]:
    body = json.loads(raw.text)
    for volatile in ("id", "created"):
        body.pop(volatile)
    return body, raw.headers["x-appliance-route"]


def test_shadow_mirrors_off_the_hot_path_and_production_stays_byte_identical(server, app, admin, weights):
    _family(app, admin, weights, "mirrored", {1: EchoRuntime("mirrored"), 2: EchoRuntime("mirrored@2")})
    client = _client(server)
    prompts = [f"see [1] and [2] on question {i} about leave" for i in range(8)]

    def answers() -> list:
        return [
            _body(
                client.chat.completions.with_raw_response.create(
                    model="mirrored", messages=[{"role": "user", "content": p}], max_tokens=6, temperature=0
                ).http_response
            )
            for p in prompts
        ]

    off = answers()
    state = app.rollouts.shadows.set_shadow(admin, "mirrored", 2, 1.0)
    assert state.version == 2 and app.registry.get(admin, "mirrored").aliases["shadow"] == 2
    on = answers()
    assert on == off  # the same bytes (but for id and created), the same route header
    assert app.rollouts.shadows.mirror.drain(30)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as c:
        report = c.get("/api/v1/models/mirrored/shadow", params={"recent": 3}).json()
    assert (report["version"], report["pairs"], report["errors"]) == (2, 8, 0)
    # The echo versions answer alike: full agreement, and the citation both answers carry.
    assert report["mean_similarity"] == 1.0 and report["agreement_rate"] == 1.0
    assert report["mean_citation_overlap"] == 1.0
    assert len(report["recent"]) == 3 and report["recent"][0]["prompt"] == prompts[-1]
    assert report["shadow"]["queue"]["max_depth"] <= report["shadow"]["queue"]["capacity"]
    # The shadow stands aside while another model generates: it uses idle time only.
    busy = app.models.serve_also(EchoRuntime("elsewhere"))
    held = busy.stream(busy.render_chat([ChatMessage("user", "keep busy")]), PARAMS)  # a slot in use
    answers_before = report["pairs"]
    _chat(app, admin, "mirrored", "one more question while production is busy")
    assert not app.rollouts.shadows.mirror.drain(0.3)
    assert app.rollouts.shadows.report(admin, "mirrored").pairs == answers_before
    held.close()
    assert app.rollouts.shadows.mirror.drain(30)
    assert app.rollouts.shadows.report(admin, "mirrored").pairs == answers_before + 1
    app.rollouts.shadows.set_shadow(admin, "mirrored", None)
    assert "shadow" not in app.registry.get(admin, "mirrored").aliases
    answers()
    assert app.rollouts.shadows.mirror.drain(30)
    assert app.rollouts.shadows.report(admin, "mirrored").pairs == 9  # stopped: nothing more mirrored


def test_blue_green_flip_under_a_steady_stream_answers_every_request(server, app, admin, weights):
    # Each answer takes a few token delays, so requests are in flight on v1 while production moves.
    _family(
        app,
        admin,
        weights,
        "bluegreen",
        {
            1: EchoRuntime("bluegreen", capacity=4, token_delay_s=0.003),
            2: EchoRuntime("bluegreen@2", capacity=4, token_delay_s=0.003),
        },
    )
    client = _client(server)
    stop, failures, served, lock = threading.Event(), [], [], threading.Lock()
    # Requests finishing while promote runs may come from either version (the pool flips inside it).
    promoting, flipped = threading.Event(), threading.Event()

    def stream_of_requests(worker: int) -> None:
        while not stop.is_set():
            try:
                if worker % 2:
                    chunks = list(
                        client.chat.completions.create(
                            model="bluegreen",
                            messages=[{"role": "user", "content": "tell me about the flip"}],
                            max_tokens=8,
                            temperature=0,
                            stream=True,
                        )
                    )
                    model = chunks[-1].model
                else:
                    model = client.chat.completions.create(
                        model="bluegreen",
                        messages=[{"role": "user", "content": "tell me about the flip"}],
                        max_tokens=8,
                        temperature=0,
                    ).model
                with lock:
                    served.append((promoting.is_set(), flipped.is_set(), model))
            except Exception as exc:  # any non-2xx, or a broken stream
                with lock:
                    failures.append(repr(exc))

    workers = [threading.Thread(target=stream_of_requests, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()

    def wait_for(n: int) -> None:
        deadline = time.monotonic() + 60
        while len(served) < n and not failures and time.monotonic() < deadline:
            time.sleep(0.01)

    wait_for(20)
    promoting.set()
    app.registry.promote(admin, "bluegreen", 2, "production", reason="blue-green")
    flipped.set()
    wait_for(len(served) + 40)
    stop.set()
    for w in workers:
        w.join(60)
    assert failures == []
    before = {m for p, _, m in served if not p}
    assert before == {"bluegreen"}
    # Requests that began before the flip may finish on v1; those after are v2's.
    late = [m for _, f, m in served if f][8:]
    assert late and set(late) == {"bluegreen@2"}
    # The old version drains, then leaves the pool.
    deadline = time.monotonic() + 30
    while any(m["name"].startswith("bluegreen~") for m in app.models.pool.snapshot()["models"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert app.models.pool.resident("bluegreen").name == "bluegreen@2"
