"""`appliance status` against a live server: the admin's full screen, a user's view, and --json."""

from __future__ import annotations

import json

from appliance.cli import main


def status(capsys, srv, key: str, *flags: str) -> tuple[int, str]:
    code = main(["status", "--url", srv.url, "--key", key, *flags])
    return code, capsys.readouterr().out


def test_the_admin_sees_every_section(isolation_world, capsys):
    srv = isolation_world.srv
    code, out = status(capsys, srv, srv.key)
    assert code == 0, out
    first = out.splitlines()[0]
    assert first.startswith("appliance ") and " ready " in f"{first} " and srv.url in first
    for section in (
        "components",
        "models",
        "collections (2)",
        "ingestion lag",
        "traffic",
        "disk",
        "failed jobs",
    ):
        assert section in out, section
    assert "chat       loaded" in out and "embedding  loaded" in out
    assert "alpha" in out and "bravo" in out
    assert "last errors" in out


def test_json_carries_the_same_report(isolation_world, capsys):
    srv = isolation_world.srv
    code, out = status(capsys, srv, srv.key, "--json")
    report = json.loads(out)
    assert code == 0 and report["admin"] is True and report["ready"]["ready"] is True
    assert {c["name"] for c in report["stats"]["collections"]} == {"alpha", "bravo"}
    assert {c["name"] for c in report["stats"]["components"]} >= {"api", "duckdb"}
    assert report["models"]["chat"]["state"] == "loaded"
    assert isinstance(report["errors"], list) and isinstance(report["failed_jobs"], list)


def test_a_user_key_sees_readiness_and_its_collections(isolation_world, capsys):
    srv = isolation_world.srv
    code, out = status(capsys, srv, isolation_world.keys["alpha"])
    assert code == 0, out
    assert "collections (1)" in out and "alpha" in out and "bravo" not in out
    assert "need an admin key" in out
    report = json.loads(status(capsys, srv, isolation_world.keys["alpha"], "--json")[1])
    assert report["admin"] is False and [c["name"] for c in report["collections"]] == ["alpha"]


def test_an_unreachable_server_is_a_clear_error(capsys):
    code = main(["status", "--url", "http://127.0.0.1:9", "--key", "k"])
    assert code == 1 and "error:" in capsys.readouterr().err
