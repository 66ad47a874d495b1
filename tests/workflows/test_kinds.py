"""The `http` and `sql` tool kinds: an http tool against a loopback server in this process (retries on
5xx, none on 4xx, the breaker and its metric, the ledger, hosts outside network.allow), an sql tool
over a real DuckDB (the exposed views only, parameters bound, writes and injections refused)."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry

from appliance.observability.workflow_metrics import WorkflowMetrics
from appliance.workflows.http import RequestRefused, check_template
from appliance.workflows.sql import QueryRefused, execute
from tests.workflows.harness import Harness


class _Server:
    """A JSON service on loopback: answers by path, records every request it gets."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: dict[str, list[tuple[int, object]]] = {}  # path -> answers, the last repeated
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                outer.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": json.loads(body) if body else None,
                    }
                )
                answers = outer.script.get(path) or [(404, {"error": "no such path"})]
                status, payload = answers.pop(0) if len(answers) > 1 else answers[0]
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:  # keep the test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset(self, script: dict[str, list[tuple[int, object]]]) -> None:
        self.requests.clear()
        self.script = {k: list(v) for k, v in script.items()}

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def _tool(url: str, extra: str = "") -> str:
    return f"""
kind: Tool
name: tickets.get
type: http
http: {{method: GET, url: "{url}/tickets/{{id}}", headers: {{X-Team: ops}}}}
input_schema: {{type: object, properties: {{id: {{type: string}}, full: {{type: boolean}}}}, required: [id]}}
output_schema: {{type: object, properties: {{title: {{type: string}}}}, required: [title]}}
{extra}
"""


FETCH = """
kind: Workflow
name: fetch
steps:
  - {id: got, tool: tickets.get, with: {id: "a/b 1", full: true}}
outputs: {title: "${steps.got.output.title}"}
"""


def test_an_http_tool_fills_its_path_from_the_input_and_returns_the_checked_answer(h, server):
    server.reset({"/tickets/a%2Fb%201": [(200, {"title": "disk full"})]})
    h.apply(_tool(server.url), FETCH)
    _, outcome = h.run("fetch")
    assert outcome.state == "succeeded", outcome.error
    assert outcome.outputs == {"title": "disk full"}
    (request,) = server.requests
    # The path field is percent-encoded (a '/' cannot climb the path); the rest is the query.
    assert request["path"] == "/tickets/a%2Fb%201?full=true"
    assert request["headers"]["X-Team"] == "ops" and request["body"] is None


def test_a_post_sends_its_input_as_json_and_5xx_is_retried_but_4xx_is_not(h, server):
    h.apply(
        f"""
kind: Tool
name: notes.add
type: http
http: {{method: POST, url: "{server.url}/notes"}}
input_schema: {{type: object, properties: {{text: {{type: string}}}}, required: [text]}}
retry: {{attempts: 3, backoff_s: 0, jitter: 0}}
""",
        """
kind: Workflow
name: note
steps:
  - {id: add, tool: notes.add, with: {text: "${inputs.text}"}}
outputs: {out: "${steps.add.output}"}
""",
    )
    server.reset({"/notes": [(503, {"error": "busy"}), (502, b"<html>"), (201, {"id": 7})]})
    run_id, outcome = h.run("note", {"text": "hello"})
    assert outcome.state == "succeeded", outcome.error
    assert outcome.outputs == {"out": {"id": 7}}
    assert [r["body"] for r in server.requests] == [{"text": "hello"}] * 3
    assert h.steps(run_id)["add"]["attempts"] == 3

    server.reset({"/notes": [(422, {"error": "text too short"})]})
    run_id, outcome = h.run("note", {"text": "x"})
    assert outcome.state == "failed"
    assert "answered 422" in outcome.error and "text too short" in outcome.error
    assert len(server.requests) == 1  # a client error is not tried again


def test_an_answer_outside_the_output_schema_fails_the_call(h, server):
    server.reset({"/tickets/1": [(200, {"name": "no title here"})]})
    h.apply(_tool(server.url), FETCH.replace('"a/b 1"', '"1"'))
    _, outcome = h.run("fetch")
    assert outcome.state == "failed"
    assert "output of tickets.get" in outcome.error and "'title' is a required property" in outcome.error


def test_a_host_outside_network_allow_is_never_called(h, server):
    h.apply(_tool("http://10.20.30.40:8080"), FETCH)
    _, outcome = h.run("fetch")
    assert outcome.state == "failed"
    assert "host '10.20.30.40' is not loopback nor in settings network.allow" in outcome.error
    # The same decision the network guard makes: an allowed LAN range admits it.
    h.services.allow = ["10.20.0.0/16"]
    assert h.services.reachable("10.20.30.40") and not h.services.reachable("10.21.0.1")


def test_a_failing_http_tool_opens_its_breaker_and_the_fallback_runs(h, server):
    registry = CollectorRegistry()
    WorkflowMetrics(registry).watch_breakers(h.breakers.all_states)
    server.reset({"/tickets/1": [(500, {"error": "down"})]})
    h.apply(
        _tool(server.url, "breaker: {failures: 2, window_s: 60, cooldown_s: 600}\nfallback: cached"),
        """
kind: Tool
name: cached
type: builtin
builtin: builtin.echo
input_schema: {type: object}
output_schema: {type: object}
""",
        FETCH.replace('"a/b 1", full: true', '"1", text: "from the cache"').replace(
            "${steps.got.output.title}", "${steps.got.output}"
        ),
    )
    assert h.run("fetch")[1].state == "degraded"
    assert (
        registry.get_sample_value(
            "appliance_workflow_breaker_state", {"tool": "tickets.get", "state": "closed"}
        )
        == 1.0
    )
    _, outcome = h.run("fetch")
    assert outcome.state == "degraded" and outcome.outputs == {"title": {"text": "from the cache"}}
    assert len(server.requests) == 2
    assert (
        registry.get_sample_value(
            "appliance_workflow_breaker_state", {"tool": "tickets.get", "state": "open"}
        )
        == 1.0
    )
    h.run("fetch")  # open: the fallback answers, the service is not called
    assert len(server.requests) == 2


def test_a_non_idempotent_http_call_is_made_once_and_repeated_only_under_its_key(h, server):
    post = f"""
kind: Tool
name: page.oncall
type: http
side_effects: non_idempotent
http: {{method: POST, url: "{server.url}/page"HEADER}}
input_schema: {{type: object, properties: {{who: {{type: string}}}}}}
"""
    flow = """
kind: Workflow
name: page
steps:
  - {id: send, tool: page.oncall, with: {who: alice}}
"""
    server.reset({"/page": [(200, {"paged": True})]})
    h.apply(post.replace("HEADER", ""), flow)
    run_id, outcome = h.run("page")
    assert outcome.state == "succeeded" and len(server.requests) == 1
    assert h.store.ledger_entry(f"{run_id}:send")["state"] == "done"

    # A crash between the call and its record: without an idempotency key the outcome is unknown,
    # and the call is not made again.
    run_id = h.start("page")
    h.store.ledger_begin(f"{run_id}:send", run_id, "send", "page.oncall")
    outcome = h.resume(run_id)
    assert outcome.state == "failed" and "outcome is unknown" in outcome.error
    assert len(server.requests) == 1

    # With one, the service is asked again under the same key (and may drop the repeat).
    h.apply(post.replace("HEADER", ", idempotency_header: Idempotency-Key"), flow)
    run_id = h.start("page")
    h.store.ledger_begin(f"{run_id}:send", run_id, "send", "page.oncall")
    assert h.resume(run_id).state == "succeeded"
    assert server.requests[-1]["headers"]["Idempotency-Key"] == f"{run_id}:send"


# -- sql ------------------------------------------------------------------------------------------

VIEWS = {"open_incidents": "SELECT id, title, severity FROM incidents WHERE state = 'open'"}


@pytest.fixture
def db_h(h):
    h.store.db.execute(
        "CREATE TABLE incidents (id INTEGER, title VARCHAR, severity INTEGER, state VARCHAR, opened DATE)"
    )
    h.store.db.write(
        "INSERT INTO incidents VALUES (1, 'disk full', 3, 'open', DATE '2026-01-02'), "
        "(2, 'cert expired', 5, 'open', DATE '2026-01-03'), (3, 'slow search', 2, 'closed', NULL)"
    )
    h.store.db.execute("CREATE TABLE secrets (name VARCHAR, value VARCHAR)")
    h.store.db.write("INSERT INTO secrets VALUES ('root', 'hunter2')")
    h.services.views = dict(VIEWS)
    return h


def _sql_tool(query: str, props: str = "min: {type: integer}", extra: str = "") -> str:
    return f"""
kind: Tool
name: incidents.open
type: sql
sql: {{query: "{query}", max_rows: 1}}
input_schema: {{type: object, properties: {{{props}}}}}
output_schema:
  type: object
  properties: {{rows: {{type: array, items: {{type: object, required: [id, title]}}}}}}
{extra}
"""


def test_an_sql_tool_reads_an_exposed_view_with_its_arguments_bound(db_h):
    db_h.apply(
        _sql_tool("SELECT id, title FROM open_incidents WHERE severity >= $min ORDER BY severity DESC"),
        """
kind: Workflow
name: worst
steps:
  - {id: q, tool: incidents.open, with: {min: "${inputs.min}"}}
outputs: {rows: "${steps.q.output.rows}", more: "${steps.q.output.truncated}"}
""",
    )
    _, outcome = db_h.run("worst", {"min": 1})
    assert outcome.state == "succeeded", outcome.error
    # Two open incidents match; max_rows is 1, so the answer says it was cut.
    assert outcome.outputs == {"rows": [{"id": 2, "title": "cert expired"}], "more": True}
    _, outcome = db_h.run("worst", {"min": 4})
    assert outcome.outputs == {"rows": [{"id": 2, "title": "cert expired"}], "more": False}


def test_an_injection_in_an_argument_is_a_value_not_sql(db_h):
    db_h.apply(
        _sql_tool("SELECT id, title FROM open_incidents WHERE title = $title", "title: {type: string}"),
        """
kind: Workflow
name: named
steps:
  - {id: q, tool: incidents.open, with: {title: "${inputs.title}"}}
outputs: {rows: "${steps.q.output.rows}"}
""",
    )
    for attack in (
        "x' OR '1'='1",
        "disk full'; DROP TABLE incidents; --",
        "x' UNION SELECT 1, value FROM secrets --",
    ):
        _, outcome = db_h.run("named", {"title": attack})
        assert outcome.state == "succeeded", outcome.error
        assert outcome.outputs == {"rows": []}
    assert db_h.store.db.fetchone("SELECT count(*) FROM incidents") == (3,)
    _, outcome = db_h.run("named", {"title": "disk full"})
    assert outcome.outputs == {"rows": [{"id": 1, "title": "disk full"}]}


def test_a_table_the_admin_did_not_expose_is_refused_at_the_call(db_h):
    db_h.apply(
        _sql_tool("SELECT name AS id, value AS title FROM secrets", "x: {type: string}"),
        "kind: Workflow\nname: peek\nsteps: [{id: q, tool: incidents.open}]\n",
    )
    _, outcome = db_h.run("peek")
    assert outcome.state == "failed"
    assert "secrets: not among the views the admin exposes" in outcome.error
    assert "hunter2" not in outcome.error
    db_h.services.views = {}
    _, outcome = db_h.run("peek")
    assert "no views are exposed to sql tools" in outcome.error


@pytest.mark.parametrize(
    ("query", "refusal"),
    [
        ("DELETE FROM incidents", "only a SELECT may run"),
        ("INSERT INTO incidents SELECT * FROM incidents", "only a SELECT may run"),
        ("DROP TABLE incidents", "only a SELECT may run"),
        ("ATTACH 'elsewhere.duckdb' AS x", "only a SELECT may run"),
        ("COPY incidents TO 'out.csv'", "only a SELECT may run"),
        ("SELECT * FROM open_incidents; DELETE FROM incidents", "only a SELECT may run"),
        ("SELECT * FROM main.secrets", "main.secrets: name an exposed view, without a schema"),
        ("SELECT * FROM read_csv('/etc/passwd')", "table function read_csv() is not allowed"),
        ("SELECT * FROM 'secrets.parquet'", "not among the views"),
        ("SELECT getenv('HOME') AS h FROM open_incidents", "function getenv() is not allowed"),
        ("WITH open_incidents AS (SELECT * FROM secrets) SELECT * FROM open_incidents", "no WITH"),
        ("SELECT * FROM open_incidents WHERE id = ?", "use named parameters"),
        ("SELECT * FROM open_incidents WHERE id IN (SELECT 1 FROM secrets)", "secrets: not among"),
        ("SELECT * FROM open_incidents UNION ALL SELECT * FROM secrets", "secrets: not among"),
        ("SHOW TABLES", "SHOW, DESCRIBE or SUMMARIZE is not allowed"),
        ("DESCRIBE open_incidents", "SHOW, DESCRIBE or SUMMARIZE is not allowed"),
        ("SUMMARIZE secrets", "SHOW, DESCRIBE or SUMMARIZE is not allowed"),
        ("SELECT * FROM duckdb_tables()", "table function duckdb_tables() is not allowed"),
        ("SELECT * FROM information_schema.tables", "information_schema.tables: name an exposed view"),
    ],
)
def test_writes_and_reaches_beyond_the_views_are_refused(db_h, query, refusal):
    with (
        db_h.store.db.own_cursor() as cursor,
        pytest.raises(QueryRefused, match=re.escape(refusal)),
    ):
        execute(cursor, VIEWS, query, {}, 10)
    assert db_h.store.db.fetchone("SELECT count(*) FROM incidents") == (3,)


def test_the_transaction_is_read_only_whatever_the_query_does(db_h):
    # nextval() writes (a sequence's state) from inside a SELECT: the read-only transaction refuses it.
    db_h.store.db.execute("CREATE SEQUENCE ticket_numbers")
    with db_h.store.db.own_cursor() as cursor, pytest.raises(QueryRefused, match="read-only"):
        execute(cursor, VIEWS, "SELECT nextval('ticket_numbers') AS n FROM open_incidents", {}, 10)
    assert db_h.store.db.fetchone("SELECT nextval('ticket_numbers')") == (1,)


def test_rows_come_back_as_json(db_h):
    views = {"dated": "SELECT id, opened, severity * 1.5::DECIMAL(4,1) AS weight FROM incidents"}
    with db_h.store.db.own_cursor() as cursor:
        out = execute(cursor, views, "SELECT * FROM dated WHERE id <= $n ORDER BY id", {"n": 3}, 5)
    assert out["columns"] == ["id", "opened", "weight"]
    assert out["rows"][0] == {"id": 1, "opened": "2026-01-02", "weight": 4.5}
    assert out["rows"][2]["opened"] is None
    json.dumps(out)


def test_a_query_past_its_timeout_is_interrupted(db_h):
    db_h.services.views = {"endless": "SELECT range AS i FROM range(1000000000000)"}
    db_h.apply(
        _sql_tool(
            "SELECT count(*) AS id, 'n' AS title FROM endless WHERE i % 7 = $min", extra="timeout_s: 0.2"
        ),
        "kind: Workflow\nname: slow\nsteps: [{id: q, tool: incidents.open, with: {min: 3}}]\n",
    )
    _, outcome = db_h.run("slow")
    assert outcome.state == "failed" and "timed out after 0.2 s" in outcome.error
    # The query's thread ends: its cursor was interrupted, not left scanning a trillion rows.
    (thread,) = [t for t in threading.enumerate() if t.name == "tool-q"] or [None]
    if thread is not None:
        thread.join(120)
        assert not thread.is_alive()


@pytest.mark.parametrize(
    ("template", "refusal"),
    [
        ("http://127.0.0.1:8080/a/{id}?x={q}", None),
        ("https://ops.lan?q={q}", None),
        ("http://{host}/a", "the scheme, host and port are fixed"),
        ("{scheme}://127.0.0.1/a", "an http:// or https:// URL"),
        ("http://127.0.0.1:{port}/a", "the scheme, host and port are fixed"),
        ("http://user:pw@127.0.0.1/a", "no credentials"),
        ("http://127.0.0.1/{id.__class__}", "must name an input field"),
        ("http://127.0.0.1/{0}", "must name an input field"),
        ("http://127.0.0.1/{", "url:"),
    ],
)
def test_only_the_path_and_query_of_a_url_take_input(template, refusal):
    if refusal is None:
        assert check_template(template) in ("127.0.0.1", "ops.lan")
    else:
        with pytest.raises(RequestRefused, match=re.escape(refusal)):
            check_template(template)
