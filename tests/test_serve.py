"""`appliance serve` facing a network, against one live server over TLS: the refusal to listen beyond
loopback in plaintext, header floods, slow clients (slowloris), forged X-Forwarded-For, bad-key
floods, oversized webhook bodies, and last a stop signal that closes cleanly (exit 0, DuckDB
checkpointed, indexes flushed: the next start replays nothing).

Each check speaks from its own loopback address (127.0.0.x), so the per-client limits of one
cannot touch another; 127.0.0.2 is the one configured trusted proxy. The module's server is
stopped and restarted by its last test."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from appliance.config import load_settings
from appliance.errors import InvalidInput
from appliance.observability.audit import REFUSALS_ACTION
from appliance.ops.install_support import wait_ready
from tests.conftest import REPO, ServerProcess, free_port, wait_job

PROXY = "127.0.0.2"
FAILED_AUTH_PER_MINUTE = 20
WEBHOOK_MAX_BODY = 64 * 1024
HEADER_TIMEOUT = 1.0
# Bounds for "eventually", never asserted as timings: a fixed server answers far sooner.
PATIENCE = 30.0

CONFIG = f"""
data_dir = "{{data}}"

[server]
port = {{port}}
tls_cert = "{{cert}}"
tls_key = "{{key}}"
trusted_proxies = ["{PROXY}"]
header_timeout_seconds = {HEADER_TIMEOUT}
max_headers = 100

[limits]
failed_auth_per_minute = {FAILED_AUTH_PER_MINUTE}

[webhooks]
github_secret = "webhook-secret"
max_body_bytes = {WEBHOOK_MAX_BODY}
max_concurrent_bodies = 2

[index]
# Saved only at a clean stop (or past an hour): a stop that skips the flush leaves a replay.
vector_save_interval_seconds = 3600.0

[llm]
load_at_start = false
"""


def _self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    cert, key = _self_signed(root)
    config = root / "appliance.toml"
    srv = ServerProcess(root / "data", env={"APPLIANCE_CONFIG": str(config)}, tls_cert=cert)
    config.write_text(CONFIG.format(data=srv.data_dir, port=srv.port, cert=cert, key=key))
    yield srv.start()
    srv.stop()


def test_listening_beyond_loopback_needs_tls_or_an_explicit_plaintext_setting(tmp_path):
    with pytest.raises(InvalidInput, match="allow_plaintext"):
        load_settings(overrides={"server": {"host": "0.0.0.0"}}, environ={})
    assert load_settings(overrides={"server": {"host": "0.0.0.0", "allow_plaintext": True}}, environ={})
    assert load_settings(
        overrides={"server": {"host": "0.0.0.0", "tls_cert": "c.pem", "tls_key": "k.pem"}}, environ={}
    ).server.tls
    with pytest.raises(InvalidInput, match="go together"):
        load_settings(overrides={"server": {"tls_cert": "c.pem"}}, environ={})
    with pytest.raises(InvalidInput, match="trusted_proxies"):
        load_settings(overrides={"server": {"trusted_proxies": ["not-an-address"]}}, environ={})
    # The command refuses at once, saying what to set, before it opens anything.
    cmd = [sys.executable, "-m", "appliance", "serve", "--port", str(free_port())]
    cmd += ["--data-dir", str(tmp_path / "data")]
    proc = subprocess.run(cmd + ["--host", "0.0.0.0"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 1 and "server.tls_cert" in proc.stderr and "allow_plaintext" in proc.stderr
    assert not (tmp_path / "data").exists()
    # A certificate that cannot be loaded is a clear start-up error too.
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    env = {**os.environ, "APPLIANCE_SERVER__TLS_CERT": str(bad), "APPLIANCE_SERVER__TLS_KEY": str(bad)}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=60, env=env)
    assert proc.returncode == 1 and "cannot serve TLS" in proc.stderr, proc.stderr
    assert not (tmp_path / "data").exists()


def test_tls_is_served_and_its_certificate_checked(server):
    assert server.url.startswith("https://")
    with pytest.raises(httpx.TransportError):  # plaintext is not spoken on the TLS port...
        httpx.get(server.url.replace("https://", "http://") + "/healthz", timeout=PATIENCE)
    with pytest.raises(httpx.ConnectError):  # ...and a client that does not trust the certificate fails
        httpx.get(server.url + "/healthz", timeout=PATIENCE)
    with server.client() as api:  # https, verified against the test's certificate
        assert api.get("/api/v1/collections").status_code == 200
    # The unit's readiness probe and the CLI on the box find https and the certificate in the config.
    config = server.env["APPLIANCE_CONFIG"]
    assert wait_ready(config, timeout=PATIENCE) == 0
    cli = subprocess.run(
        [sys.executable, "-m", "appliance", "collections", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={k: v for k, v in server.env.items() if k not in ("APPLIANCE_URL", "APPLIANCE_KEY")},
    )
    assert cli.returncode == 0, cli.stderr


def _connect(srv: ServerProcess, source: str) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", srv.port), timeout=PATIENCE, source_address=(source, 0))
    return srv.verify.wrap_socket(raw, server_hostname="127.0.0.1")


def _read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or PATIENCE runs out)."""
    data = b""
    with contextlib.suppress(ConnectionResetError, ssl.SSLError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def _client(srv: ServerProcess, source: str, key: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=srv.url,
        transport=httpx.HTTPTransport(local_address=source, verify=srv.verify),
        headers={"Authorization": f"Bearer {key}"} if key else {},
        timeout=PATIENCE,
    )


def _audit(srv: ServerProcess) -> list[dict]:
    with srv.client() as admin:
        response = admin.get("/api/v1/audit", params={"limit": 1000})
        assert response.status_code == 200, response.text
        return response.json()


def test_a_header_flood_is_refused_and_the_server_keeps_answering(server):
    flood = b"".join(b"X-Flood-%d: v\r\n" % i for i in range(10_000))
    with _connect(server, "127.0.0.1") as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
            # The server may answer and close before it has read it all.
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + flood + b"\r\n")
        status = _read_response(sock).split(b"\r\n", 1)[0]
    assert status.split(b" ")[1:2] in ([b"431"], [b"400"]), status
    with _client(server, "127.0.0.1") as client:
        # Past server.max_headers, even in a few bytes, is refused with the reason...
        many = client.get("/healthz", headers={f"X-Many-{i}": "v" for i in range(150)})
        assert many.status_code == 431 and "server.max_headers" in many.json()["detail"], many.text
        # ...and a request within the limits is still served, by the same server.
        assert client.get("/healthz", headers={f"X-Fine-{i}": "v" for i in range(50)}).status_code == 200


def test_a_slow_client_is_cut_off_while_others_are_served(server):
    idle = _connect(server, "127.0.0.1")  # opens and never speaks
    slow = _connect(server, "127.0.0.1")
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    answer, deadline = b"", time.monotonic() + PATIENCE
    with _client(server, "127.0.0.1") as other:
        for byte in b"X-Slow: " + b"a" * 10_000:  # a byte now and then: the headers never end
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                break
            slow.settimeout(0.2)  # the pace of the trickle, not a synchronisation
            try:
                answer = slow.recv(65536)
                break  # the server spoke (a 408) or closed (b"")
            except TimeoutError:
                pass
            assert other.get("/healthz").status_code == 200  # others are answered meanwhile
            assert time.monotonic() < deadline, "the slow client was never cut off"
    slow.settimeout(PATIENCE)
    answer += _read_response(slow)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert _read_response(idle) == b""  # closed without a word
    idle.close()
    slow.close()


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(server):
    with _client(server, "127.0.0.1", server.key) as direct:
        forged = direct.get("/api/v1/collections", headers={"X-Forwarded-For": "203.0.113.7"})
        assert forged.status_code == 200
    with _client(server, PROXY, server.key) as proxy:
        assert proxy.get("/api/v1/jobs", headers={"X-Forwarded-For": "198.51.100.9"}).status_code == 200
    entries = _audit(server)
    clients = {e["action"]: e["client"] for e in reversed(entries)}  # the newest entry of each action
    assert clients["GET /api/v1/collections"] == "127.0.0.1"  # the forged address is ignored
    assert clients["GET /api/v1/jobs"] == "198.51.100.9"  # the trusted proxy's word is taken
    assert not any(e["client"] == "203.0.113.7" for e in entries)


def test_bad_keys_are_rate_limited_per_client_and_audited_in_bounds(server):
    source = "127.0.0.3"
    statuses, retry_after = [], []
    with _client(server, source, "ak-not-a-key") as guesser:
        for _ in range(300):
            response = guesser.get("/api/v1/collections")
            statuses.append(response.status_code)
            if response.status_code == 429:
                retry_after.append(response.headers.get("retry-after"))
    assert statuses[:FAILED_AUTH_PER_MINUTE] == [401] * FAILED_AUTH_PER_MINUTE
    assert set(statuses[FAILED_AUTH_PER_MINUTE:]) == {429}, str(statuses)
    assert all(value and value.isdigit() and 1 <= int(value) <= 60 for value in retry_after)
    # Over its allowance the client is refused whatever it sends: a right key is no oracle.
    with _client(server, source, server.key) as same_client:
        assert same_client.get("/api/v1/collections").status_code == 429
    # Another client with a good key is unaffected.
    with _client(server, "127.0.0.1", server.key) as other:
        assert other.get("/api/v1/collections").status_code == 200
    rows = [e for e in _audit(server) if e["client"] == source]
    assert [e["status"] for e in rows].count(401) == FAILED_AUTH_PER_MINUTE
    assert len(rows) <= FAILED_AUTH_PER_MINUTE + 1, len(rows)  # the rest: one summary, at the minute's end


def _webhook_head(length: int | None) -> bytes:
    framing = b"Transfer-Encoding: chunked\r\n" if length is None else b"Content-Length: %d\r\n" % length
    return (
        b"POST /api/v1/webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-GitHub-Event: ping\r\nX-GitHub-Delivery: d-1\r\nX-Hub-Signature-256: sha256=00\r\n"
        + framing
        + b"\r\n"
    )


def _unsigned_delivery(client: httpx.Client) -> httpx.Response:
    return client.post(
        "/api/v1/webhooks/github",
        content=b"{}",
        headers={"X-GitHub-Event": "ping", "X-GitHub-Delivery": "d-2", "X-Hub-Signature-256": "sha256=00"},
    )


def test_webhook_bodies_are_bounded_before_and_while_they_are_read(server):
    source = "127.0.0.4"
    # A declared length over the limit is refused before a byte of the body is sent.
    with _connect(server, source) as sock:
        sock.sendall(_webhook_head(10 * 1024 * 1024))
        assert _read_response(sock).startswith(b"HTTP/1.1 413"), "the body was waited for"
    # A chunked body is cut off at the limit: the answer comes before the body ends.
    with _connect(server, source) as sock:
        sock.sendall(_webhook_head(None))
        piece = b"x" * 8192
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, ssl.SSLError):
            for _ in range(WEBHOOK_MAX_BODY // len(piece) + 2):
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        assert _read_response(sock).startswith(b"HTTP/1.1 413"), "the body was read past the limit"
    # Bodies read at once are bounded: two held open, a third delivery is told to retry.
    holders = []
    for _ in range(2):
        holders.append(_connect(server, source))
        holders[-1].sendall(_webhook_head(1000) + b"{")
    with _client(server, source) as client:
        deadline = time.monotonic() + PATIENCE
        # The holders reach the handler soon after their headers: poll until they have.
        while (refused := _unsigned_delivery(client)).status_code != 429 and time.monotonic() < deadline:
            pass
        assert refused.status_code == 429 and refused.headers.get("retry-after"), refused.text
        for sock in holders:
            sock.close()
        deadline = time.monotonic() + PATIENCE
        while (after := _unsigned_delivery(client)).status_code == 429 and time.monotonic() < deadline:
            pass
        assert after.status_code == 401, after.text  # read whole, then refused for its signature


def test_sigterm_stops_cleanly_and_the_next_start_replays_nothing(server):
    docs = [
        {"source_id": f"note-{i}.md", "text": f"Note {i}: the ferry leaves at {i} o'clock."} for i in range(8)
    ]
    with server.client() as api:
        assert api.post("/api/v1/collections", json={"name": "notes"}).status_code == 201
        job = api.post("/api/v1/documents/batch", json={"collection": "notes", "documents": docs})
        assert job.status_code == 202, job.text
        assert wait_job(api, job.json()["job_id"])["state"] == "succeeded"
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(60) == 0, server.log()[-3000:]
    assert "stopped cleanly" in server.log()
    wal = server.data_dir / "appliance.duckdb.wal"
    assert not wal.exists() or wal.stat().st_size == 0, f"a WAL of {wal.stat().st_size} bytes was left"

    server.start()
    log = server.log()
    assert "indexes reconciled" in log
    assert "replay from seq" not in log and "rebuilt" not in log, log
    assert log.count("up to date at seq") >= 2, log  # the keyword and the vector index
    with server.client() as api:
        found = api.post("/api/v1/knowledge/search", json={"query": "ferry", "collections": ["notes"]})
        assert found.status_code == 200 and len(found.json()["hits"]) == 8, found.text
        # The refusals of the bad-key flood that were only counted were summarised at the stop.
        summary = api.get("/api/v1/audit", params={"action": REFUSALS_ACTION}).json()
        counted = [e["detail"]["refused_and_counted"] for e in summary if e["client"] == "127.0.0.3"]
        assert counted == [300 + 1 - FAILED_AUTH_PER_MINUTE]
