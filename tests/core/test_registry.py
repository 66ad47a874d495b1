"""The registry service in-process (real DuckDB, Tantivy, USearch, Huey, the packaged embedder, real eval
gates) and over its API: built-ins at start, promotion through a passing gate and blocked by a failing one,
ungated promotion marked, rollback, history in order, audit rows, the CLI's --json, and a user key
refused on every write."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from appliance.cli import main as cli_main
from appliance.errors import Conflict, Forbidden
from appliance.models.catalog import MINILM_NAME
from appliance.models.manifest import SMOLLM2, smollm2_path
from appliance.records import EvalRunOptions, GateThreshold
from tests.core.evalsets import TOPICS, beir_set
from tests.inprocess import InProcessServer, echo_appliance


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    # Nothing probes here (pinned versions): intake and the probe are tests/models/test_registry.py's.
    app = echo_appliance(
        tmp_path_factory.mktemp("registry") / "data",
        llm={"load_at_start": False, "model": SMOLLM2.name},
        registry={"watch_inbox": False},
    )
    yield app
    app.close()


@pytest.fixture(scope="module")
def admin(app):
    return app.access.system_scope()


@pytest.fixture(scope="module")
def family(app, tmp_path_factory):
    """A chat family with two ready versions (pinned copies of SmolLM2's bytes and of a variant)."""
    reg = app.registry.registry
    root = tmp_path_factory.mktemp("weights")
    v1 = reg.register_pinned(
        "assistant", "chat", "llama.cpp", smollm2_path(), SMOLLM2.sha256, None, "test", ["chat"]
    )
    variant = root / "variant.gguf"
    variant.write_bytes(smollm2_path().read_bytes()[:4096])  # never loaded here: only its hash matters
    from appliance.files import sha256_file

    v2 = reg.register_pinned(
        "assistant", "chat", "llama.cpp", variant, sha256_file(variant), None, "test", ["chat"]
    )
    return v1.name, v1.version, v2.version


@pytest.fixture(scope="module")
def gates(app, admin, tmp_path_factory):
    """Two eval gates on a retrieval set (they run it, on the candidate, when a promotion asks)."""
    root = beir_set(tmp_path_factory.mktemp("sets") / "topics", TOPICS[:6])
    evalset = app.evals.import_dir(admin, "topics", root)
    for job in evalset.ingest_jobs:
        assert app.jobs.wait(job).state == "succeeded"
    options = EvalRunOptions(collection="topics", top_k=10, retrieval_only=True)
    app.evals.create_gate(
        admin, "recall-ok", "topics", [GateThreshold(metric="recall@10", min=0.5)], run_options=options
    )
    # recall cannot exceed 1: this gate fails whatever the model.
    app.evals.create_gate(
        admin, "impossible", "topics", [GateThreshold(metric="recall@10", min=1.01)], run_options=options
    )
    return "recall-ok", "impossible"


def _audit(app, target: str) -> list[dict]:
    return [e for e in app.audit.recent(limit=500, action="model.alias") if e["target"] == target]


def test_builtins_are_registered_at_start_with_default_and_embedding(app, admin):
    families = {f.name: f for f in app.registry.list(admin)}
    assert families[SMOLLM2.name].aliases == {"default": 1}
    assert families[MINILM_NAME].aliases == {"embedding": 1} and families[MINILM_NAME].kind == "embedding"
    resolved = app.registry.resolve("default")
    assert (resolved.name, resolved.sha256, resolved.path) == (
        SMOLLM2.name,
        SMOLLM2.sha256,
        str(smollm2_path()),
    )


def test_ungated_promotion_is_marked_and_audited(app, admin, family):
    name, v1, _ = family
    move = app.registry.promote(admin, name, v1, "production", reason="first release")
    assert (move.version, move.previous_version, move.gated, move.gate, move.reason) == (
        v1,
        None,
        False,
        None,
        "first release",
    )
    rows = _audit(app, f"{name}@production")
    assert rows and rows[0]["outcome"] == "ok" and rows[0]["detail"]["gated"] is False


def test_a_failing_gate_blocks_promotion_and_a_passing_one_records_its_report(app, admin, family, gates):
    name, v1, v2 = family
    passing, failing = gates
    app.registry.set_gate(admin, name, failing)
    with pytest.raises(Conflict, match="blocked by gate 'impossible'"):
        app.registry.promote(admin, name, v2, "production")
    assert app.registry.get(admin, name).aliases["production"] == v1
    denied = _audit(app, f"{name}@production")[0]
    assert denied["outcome"] == "denied" and denied["detail"]["gate"] == failing
    app.registry.set_gate(admin, name, passing)
    move = app.registry.promote(admin, name, v2, "production", reason="passed the gate")
    assert (move.version, move.previous_version, move.gated, move.gate) == (v2, v1, True, passing)
    assert move.eval_report_id and move.eval_report["state"] == "passed"
    assert move.eval_report["run_id"] == move.eval_report_id
    assert app.evals.get_run(admin, move.eval_report_id).state == "succeeded"
    # An alias outside staging/production does not run the gate.
    assert app.registry.promote(admin, name, v1, "candidate").gated is False


def test_rollback_moves_production_back_and_history_keeps_every_move_in_order(app, admin, family):
    name, v1, v2 = family
    move = app.registry.rollback(admin, name)
    assert (move.action, move.version, move.previous_version) == ("rollback", v1, v2)
    assert app.registry.get(admin, name).aliases["production"] == v1
    history = app.registry.history(admin, name)
    assert [(m.alias, m.action, m.version) for m in history] == [
        ("production", "promote", v1),
        ("production", "promote", v2),
        ("candidate", "promote", v1),
        ("production", "rollback", v1),
    ]
    assert [m.id for m in history] == sorted(m.id for m in history)
    assert [r["detail"]["action"] for r in _audit(app, f"{name}@production") if r["outcome"] == "ok"][:1] == [
        "rollback"
    ]


def test_a_rejected_import_is_never_promoted(app, admin, tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all" * 100)
    version = app.registry.import_model(admin, str(junk), name="junk")
    assert version.state == "rejected" and "not a GGUF file" in version.reason
    with pytest.raises(Conflict, match="never be promoted"):
        app.registry.promote(admin, "junk", version.version, "staging")
    assert app.registry.get(admin, "junk").aliases == {}


def test_a_user_key_reads_but_cannot_change_anything(app, family):
    name, v1, _ = family
    app.catalog.ensure_collection("readers")
    created = app.access.create_key(app.access.system_scope(), "reader", "user", ["readers"], None, None)
    user = app.access.scope(app.keys.authenticate(created.key))
    assert app.registry.history(user, name)
    for change in (
        lambda: app.registry.import_model(user, str(smollm2_path())),
        lambda: app.registry.promote(user, name, v1, "staging"),
        lambda: app.registry.rollback(user, name),
        lambda: app.registry.set_gate(user, name, None),
    ):
        with pytest.raises(Forbidden):
            change()


@pytest.fixture(scope="module")
def server(app):
    srv = InProcessServer(app).start()
    yield srv
    srv.stop()


def test_over_http_a_user_key_gets_403_on_every_write_and_reads_the_history(server, app, family):
    name, v1, _ = family
    admin = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=60)
    created = admin.post("/api/v1/keys", json={"name": "viewer", "role": "user", "collections": ["readers"]})
    assert created.status_code == 201, created.text
    user = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {created.json()['key']}"}, timeout=60
    )
    writes = [
        ("/api/v1/models/import", {"path": str(smollm2_path())}),
        (f"/api/v1/models/{name}/aliases/staging", {"version": v1, "reason": "x"}),
        (f"/api/v1/models/{name}/rollback", {"alias": "production"}),
        (f"/api/v1/models/{name}/gate", {"gate": None}),
    ]
    for path, body in writes:
        answer = user.post(path, json=body)
        assert answer.status_code == 403, (path, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
    listed = user.get("/api/v1/models")
    assert listed.status_code == 200 and name in {f["name"] for f in listed.json()}
    history = user.get(f"/api/v1/models/{name}/history").json()
    assert [m["id"] for m in history] == sorted(m["id"] for m in history) and len(history) >= 4
    assert admin.get("/api/v1/models/no-such-model").status_code == 404
    bad = admin.post(f"/api/v1/models/{name}/aliases/Not%20An%20Alias", json={"version": v1})
    assert bad.status_code == 400 and "invalid alias" in bad.json()["detail"]
    admin.close()
    user.close()


def test_the_cli_speaks_json_for_list_promote_history_and_rollback(server, family, capsys):
    name, v1, v2 = family
    flags = ["--json", "--url", server.url, "--key", server.key]

    def run(*argv: str) -> object:
        assert cli_main(["models", *argv, *flags]) == 0
        return json.loads(capsys.readouterr().out)

    assert name in {f["name"] for f in run("list")}
    assert run("promote", name, str(v1), "--to", "shadow")["previous_version"] is None
    move = run("promote", name, str(v2), "--to", "shadow", "--reason", "mirror traffic")
    assert (move["alias"], move["version"], move["previous_version"], move["gated"]) == (
        "shadow",
        v2,
        v1,
        False,
    )
    back = run("rollback", name, "--alias", "shadow")
    assert (back["action"], back["version"]) == ("rollback", v1)
    assert run("history", name)[-1]["id"] == back["id"]
    assert run("import", str(smollm2_path()), "--name", "assistant")["version"] == v1  # the same bytes


def test_moving_default_switches_the_served_chat_model(app, admin, family):
    name, v1, _ = family  # v1: SmolLM2's bytes (its package file), pinned
    assert app.models.health()["state"] == "loaded"  # the echo runtime
    move = app.registry.promote(admin, name, v1, "default", reason="serve the registered copy")
    assert move.previous_version is None
    assert "default" not in app.registry.get(admin, SMOLLM2.name).aliases
    deadline = time.monotonic() + 120
    while app.models.health()["state"] != "loaded" or app.models.runtime().name == "echo":
        assert time.monotonic() < deadline, app.models.health()
        time.sleep(0.1)
    assert app.models.runtime().name == smollm2_path().stem
    assert app.registry.resolve("default").name == name


def test_serving_resolves_a_registered_version_by_name_at_version(app, admin, family):
    from appliance.errors import NotFound
    from appliance.models.runtime import ChatMessage, GenerationParams

    name, v1, _ = family
    served = app.gateway.runtime_for(f"{name}@{v1}")  # loaded into the pool beside the default
    assert served.name == f"{name}@{v1}" and served.backend == "llama.cpp"
    prompt = served.render_chat([ChatMessage("user", "Hello")])
    done = served.generate(prompt, GenerationParams(max_tokens=2, temperature=0.0))
    assert done.completion_tokens >= 1
    with pytest.raises(NotFound):
        app.gateway.runtime_for(f"{name}@99")
