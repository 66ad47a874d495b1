"""The `appliance` CLI as a client of a live server."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import types

from tests.conftest import REPO, free_port


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=REPO,
        timeout=300,
    )


def test_ingest_search_collections_jobs(server, tmp_path):
    env = {"APPLIANCE_URL": server.url, "APPLIANCE_KEY": server.key}
    folder = tmp_path / "handbook"
    (folder / "sub").mkdir(parents=True)
    (folder / "rotation.md").write_text("# Keys\n\nRotate keys every ninety days and revoke the old key.\n")
    (folder / "sub" / "lunch.txt").write_text("The canteen serves lunch from noon until two.\n")
    (folder / ".hidden.md").write_text("never ingested")
    (folder / "bad.pdf").write_bytes(b"\x00\x01garbage" * 100)

    done = run_cli("ingest", str(folder), "--collection", "cli", "--wait", "--json", env=env)
    # One unreadable file fails on its own, with its reason; the rest are indexed.
    assert done.returncode == 2, done.stderr
    summary = json.loads(done.stdout)
    assert summary["documents"] == 3 and summary["indexed"] == 2 and summary["failed"] == 1
    assert summary["failures"][0]["source_id"].endswith("bad.pdf") and summary["failures"][0]["error"]

    (folder / "bad.pdf").unlink()
    again = run_cli("ingest", str(folder), "--collection", "cli", "--wait", env=env)
    assert again.returncode == 0 and "2 unchanged" in again.stdout, again.stdout

    found = run_cli("search", "how often should keys be rotated", "--collection", "cli", "--json", env=env)
    hits = json.loads(found.stdout)["hits"]
    assert hits[0]["source_id"].endswith("rotation.md")
    human = run_cli("search", "when is lunch", "--collection", "cli", env=env)
    assert human.returncode == 0 and "lunch.txt" in human.stdout

    rows = json.loads(run_cli("collections", "--json", env=env).stdout)
    assert {"name": "cli", "documents": 2} == {
        k: v for k, v in next(r for r in rows if r["name"] == "cli").items() if k in ("name", "documents")
    }
    jobs = json.loads(run_cli("jobs", "--json", env=env).stdout)
    assert jobs and jobs[0]["state"] in ("succeeded", "failed", "running", "queued")


def test_clear_errors_without_a_server_or_key(tmp_path):
    env = {"APPLIANCE_URL": f"http://127.0.0.1:{free_port()}", "APPLIANCE_KEY": "apk_x"}
    r = run_cli("collections", env=env)
    assert r.returncode == 1 and "unreachable" in r.stderr and "Traceback" not in r.stderr
    r = run_cli(
        "collections", env={"APPLIANCE_URL": "", "APPLIANCE_KEY": "", "APPLIANCE_DATA_DIR": str(tmp_path)}
    )
    assert r.returncode == 1 and "admin.key" in r.stderr and "Traceback" not in r.stderr


def test_wrong_key_is_reported(server):
    r = run_cli("collections", env={"APPLIANCE_URL": server.url, "APPLIANCE_KEY": "apk_wrong"})
    assert r.returncode == 1 and "Unauthorized" in r.stderr


def test_keys_and_ask(server, tmp_path):
    env = {"APPLIANCE_URL": server.url, "APPLIANCE_KEY": server.key}
    created = run_cli(
        "keys",
        "create",
        "--name",
        "reader",
        "--role",
        "user",
        "--collections",
        "cli",
        "--rpm",
        "100",
        "--json",
        env=env,
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert set(key) == {"id", "key"} and key["key"].startswith("apk_")
    listed = run_cli("keys", "list", env=env)
    assert key["id"] in listed.stdout and key["key"] not in listed.stdout and "rpm=100" in listed.stdout
    missing_collections = run_cli("keys", "create", "--name", "bad", "--role", "user", env=env)
    assert missing_collections.returncode == 1 and "collection" in missing_collections.stderr

    # wait for the chat model, then ask; the answer streams and its sources follow
    import time

    import httpx

    deadline = time.monotonic() + 120
    while (
        httpx.get(f"{server.url}/readyz").json()["chat_model"]["state"] == "loading"
        and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    asked = run_cli(
        "ask",
        "How often should keys be rotated?",
        "--collection",
        "cli",
        "--json",
        env={"APPLIANCE_URL": server.url, "APPLIANCE_KEY": key["key"]},
    )
    assert asked.returncode == 0, asked.stderr
    answer = json.loads(asked.stdout)
    assert answer["answer"] and all(
        c["source_id"].endswith("rotation.md") or c["source_id"].endswith("lunch.txt")
        for c in answer["citations"]
    )
    human = run_cli("ask", "How often should keys be rotated?", "--collection", "cli", env=env)
    assert human.returncode == 0 and "cached answer, total" in human.stdout  # asked just before
    fresh = run_cli(
        "ask", "How often should keys be rotated?", "--collection", "cli", "--no-cache", "--json", env=env
    )
    assert fresh.returncode == 0 and json.loads(fresh.stdout)["cached"] is False

    revoked = run_cli("keys", "revoke", key["id"], env=env)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    denied = run_cli("collections", env={"APPLIANCE_URL": server.url, "APPLIANCE_KEY": key["key"]})
    assert denied.returncode == 1 and "Unauthorized" in denied.stderr


def _commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every (sub)command's parser, by its words: ("keys", "create") -> parser."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[(*prefix, name)] = sub
                found.update(_commands(sub, (*prefix, name)))
    return found


def test_an_extension_registers_like_the_built_in_commands(capsys):
    from appliance.cli import COMMANDS, build_parser
    from appliance.cli.common import emit

    extension = types.ModuleType("hello_extension")

    def register(sub, parents) -> None:
        p = sub.add_parser("hello", parents=[parents.client], help="say hello")
        p.set_defaults(func=lambda args: emit(args, {"hello": args.url}, lambda d: print("hi")) or 0)

    extension.register = register
    args = build_parser((*COMMANDS, extension)).parse_args(["hello", "--url", "http://x", "--json"])
    assert args.func(args) == 0 and json.loads(capsys.readouterr().out) == {"hello": "http://x"}
    assert "hello" not in _commands(build_parser())


def test_every_client_command_takes_json_and_the_endpoint_flags():
    from appliance.cli import build_parser

    commands = _commands(build_parser())
    assert {
        ("serve",),
        ("ingest",),
        ("search",),
        ("ask",),
        ("keys", "create"),
        ("collections",),
        ("console",),
        ("jobs",),
        ("sources", "add"),
        ("quarantine",),
        ("doctor",),
        ("backup",),
        ("restore",),
    } <= set(commands)
    for words, parser in commands.items():
        flags = {flag for action in parser._actions for flag in action.option_strings}
        if words in {("serve",), ("console",)}:
            continue  # the server itself, and a full-screen UI: no output to print as JSON
        assert {"--config", "--url", "--key", "--json"} <= flags, words
    assert {"--verify-chunks", "--repair", "--collection"} <= {
        flag for action in commands[("doctor",)]._actions for flag in action.option_strings
    }
