"""The outbound network guard: loopback and allowed networks pass, everything else is refused and counted."""

from __future__ import annotations

import errno
import socket

import httpx
import pytest

from appliance.observability.metrics import Metrics
from appliance.offline import GUARD, OutboundBlocked

# TEST-NET-1 (RFC 5737): never routed, so even a guard failure would not reach anyone.
OUTSIDE = "192.0.2.10"


@pytest.fixture
def guard():
    was_enabled, was_allow = GUARD.enabled, GUARD.status()["allow"]
    GUARD.configure(True, ["198.51.100.0/24", "git.internal"])
    yield GUARD
    if was_enabled:
        GUARD.configure(True, was_allow)
    else:
        GUARD.uninstall()


def test_refuses_and_counts_outbound_connections(guard):
    before = guard.attempts
    with socket.socket() as s, pytest.raises(OutboundBlocked):
        s.connect((OUTSIDE, 443))
    with socket.socket() as s, pytest.raises(OutboundBlocked):
        s.connect_ex((OUTSIDE, 80))
    with pytest.raises(httpx.ConnectError, match="refused: this appliance runs offline"):
        httpx.get(f"http://{OUTSIDE}:8080/", timeout=2)
    with pytest.raises(OutboundBlocked):
        socket.getaddrinfo("pypi.org", 443)  # resolving is traffic already (DNS)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OutboundBlocked):
        s.sendto(b"x", ("8.8.8.8", 53))
    assert guard.attempts - before >= 5
    last = guard.status()["recent"][-1]
    assert last["host"] == "8.8.8.8" and last["port"] == 53 and last["call"] == "sendto"
    assert "test_network_guard.py" in last["caller"]


def test_loopback_unix_and_allowed_addresses_pass(guard, tmp_path):
    before = guard.attempts
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        # The kernel completes the handshake from the listen backlog: no accept needed.
        with socket.create_connection(("localhost", port), timeout=5):
            pass
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
    # An allowed internal address is not refused by the guard: the kernel decides (no route here).
    with socket.socket() as s:
        s.setblocking(False)
        assert s.connect_ex(("198.51.100.7", 9)) in (errno.EINPROGRESS, errno.ENETUNREACH, errno.EHOSTUNREACH)
    assert guard.allowed("git.internal") and guard.allowed("::1") and guard.allowed("::ffff:127.0.0.1")
    assert not guard.allowed("10.0.0.1") and not guard.allowed("example.com")
    assert guard.attempts == before


def test_refusals_are_a_prometheus_counter(guard):
    metrics = Metrics()

    def exported() -> float:
        text = metrics.render()[0].decode()
        line = next(ln for ln in text.splitlines() if ln.startswith("network_outbound_blocked_total "))
        return float(line.split()[1])

    start = exported()
    with socket.socket() as s, pytest.raises(OutboundBlocked):
        s.connect((OUTSIDE, 443))
    assert exported() == start + 1


def test_off_when_settings_say_so(guard):
    guard.configure(False)
    assert guard.allowed("127.0.0.1")
    with socket.socket() as s:
        s.setblocking(False)
        # Not refused by us: the kernel answers (no route to TEST-NET here, or in progress).
        assert s.connect_ex((OUTSIDE, 9)) != errno.EACCES
