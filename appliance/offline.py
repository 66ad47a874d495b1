"""Keeps the process offline: model libraries load local weights only, and outbound sockets are refused."""

from __future__ import annotations

import collections
import ipaddress
import logging
import os
import socket
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

from appliance.errors import InvalidInput

if TYPE_CHECKING:
    from appliance.config import NetworkSettings

log = logging.getLogger(__name__)

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # Progress bars and advisories on stderr would break the one-JSON-object-per-line log.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    # DuckDB and others would otherwise fetch extensions or telemetry endpoints on their own.
    "DO_NOT_TRACK": "1",
}
# Names that never leave the host, whatever resolv.conf says.
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_INET = (socket.AF_INET, socket.AF_INET6)
_RECENT = 20


class OutboundBlocked(PermissionError):
    """Raised in place of a connection to a non-loopback address. A PermissionError (an OSError),
    so libraries handle it like any refused connection instead of crashing."""


class NetworkGuard:
    """Refuses and counts Python-level connections to addresses outside loopback and the allow list.

    It wraps the socket module (connect, connect_ex, sendto, create_connection, getaddrinfo), so it
    sees every Python client (httpx, urllib, huggingface_hub, asyncio). Native code that opens its
    own sockets, and child processes, are outside its reach: the systemd unit's IPAddressDeny covers
    those. Loopback and AF_UNIX sockets (uvicorn, multiprocessing, asyncio's self-pipe) pass.
    """

    def __init__(self) -> None:
        self.enabled = False
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self._names: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self.attempts = 0
        self.recent: collections.deque[dict] = collections.deque(maxlen=_RECENT)
        self._originals: dict[str, Any] = {}

    # -- configuration ----------------------------------------------------------------------
    def configure(self, enabled: bool, allow: list[str] | tuple[str, ...] = ()) -> None:
        networks, names = [], set()
        for entry in allow:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                names.add(entry.strip().lower().rstrip("."))  # a host name inside the air gap
        self._networks, self._names = networks, frozenset(names)
        self.enabled = enabled
        if enabled:
            self._install()

    def _install(self) -> None:
        if self._originals:
            return
        sock_cls = socket.socket
        self._originals = {
            "connect": sock_cls.connect,
            "connect_ex": sock_cls.connect_ex,
            "sendto": sock_cls.sendto,
            "create_connection": socket.create_connection,
            "getaddrinfo": socket.getaddrinfo,
        }
        guard, orig = self, self._originals

        def connect(sock, address):
            guard._check(sock.family, address, "connect")
            return orig["connect"](sock, address)

        def connect_ex(sock, address):
            guard._check(sock.family, address, "connect_ex")
            return orig["connect_ex"](sock, address)

        def sendto(sock, data, *args):
            guard._check(sock.family, args[-1], "sendto")
            return orig["sendto"](sock, data, *args)

        def create_connection(address, *args, **kwargs):
            guard._check(None, address, "create_connection")
            return orig["create_connection"](address, *args, **kwargs)

        def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
            # Resolving a name is itself traffic (DNS) done in C, beyond the connect hooks;
            # binding (AI_PASSIVE) is not outbound.
            if not flags & socket.AI_PASSIVE:
                guard._check(None, (host, port), "getaddrinfo")
            return orig["getaddrinfo"](host, port, family, type, proto, flags)

        sock_cls.connect, sock_cls.connect_ex, sock_cls.sendto = connect, connect_ex, sendto
        socket.create_connection, socket.getaddrinfo = create_connection, getaddrinfo

    def uninstall(self) -> None:
        """Put the socket module back (tests)."""
        if not self._originals:
            return
        orig, sock_cls = self._originals, socket.socket
        sock_cls.connect, sock_cls.connect_ex, sock_cls.sendto = (
            orig["connect"],
            orig["connect_ex"],
            orig["sendto"],
        )
        socket.create_connection, socket.getaddrinfo = orig["create_connection"], orig["getaddrinfo"]
        self._originals = {}
        self.enabled = False

    # -- decisions ----------------------------------------------------------------------------
    def allowed(self, host: object) -> bool:
        """Whether `host` (an address or a name) stays on this machine or is explicitly allowed."""
        if host is None:
            return True  # getaddrinfo(None, port): the local wildcard
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        if not isinstance(host, str):
            return True  # not an IP address family
        name = host.strip().lower().rstrip(".")
        if name == "" or name in LOCAL_NAMES or name in self._names:
            return True
        try:
            ip = ipaddress.ip_address(name.split("%", 1)[0])  # drop an IPv6 zone
        except ValueError:
            return False  # a name we would have to resolve: that is traffic already
        ip = getattr(ip, "ipv4_mapped", None) or ip
        # Connecting to the unspecified address reaches this host (Linux treats it as loopback).
        if ip.is_loopback or ip.is_unspecified:
            return True
        return any(ip in net for net in self._networks)

    def _check(self, family: int | None, address: object, where: str) -> None:
        if not self.enabled or (family is not None and family not in _INET):
            return
        host = address[0] if isinstance(address, tuple) and address else address
        if self.allowed(host):
            return
        port = address[1] if isinstance(address, tuple) and len(address) > 1 else None
        caller = _caller()
        with self._lock:
            self.attempts += 1
            self.recent.append(
                {"time": time.time(), "host": str(host), "port": port, "call": where, "caller": caller}
            )
        log.warning(
            "outbound connection refused by the network guard",
            extra={"host": str(host), "port": port, "call": where, "caller": caller},
        )
        raise OutboundBlocked(
            f"outbound connection to {host}:{port} refused: this appliance runs offline "
            "(allow internal addresses in settings network.allow)"
        )

    def status(self) -> dict:
        with self._lock:
            return {
                "guard": self.enabled,
                "outbound_attempts": self.attempts,
                "recent": list(self.recent),
                "allow": [str(n) for n in self._networks] + sorted(self._names),
            }


def _caller() -> str:
    """The innermost frame outside this module and the socket module: who tried to connect."""
    for frame in reversed(traceback.extract_stack(limit=12)[:-2]):
        if not frame.filename.endswith(("offline.py", "socket.py")):
            return f"{frame.filename}:{frame.lineno}"
    return "?"


GUARD = NetworkGuard()


def allow_listed(allow: list[str] | tuple[str, ...], host: str) -> bool:
    """Whether `host` is loopback or an entry of settings network.allow: the one decision every
    outbound URL the appliance is configured with (Qdrant, git remotes, http tools) is checked by,
    before anything connects. A decision table only: nothing is installed."""
    table = NetworkGuard()
    table.configure(False, allow)
    return table.allowed(host)


def enforce_offline(network: NetworkSettings | None = None) -> None:
    """Set before any Hugging Face library is imported (they read these at import time); with
    network settings, also install the outbound guard (on by default) for the whole process."""
    os.environ.update(OFFLINE_ENV)
    if network is not None:
        GUARD.configure(network.guard, network.allow)


def check_service_url(
    url: str, network: NetworkSettings, what: str, key_setting: str = "", with_key: bool = False
) -> SplitResult:
    """The one check of a URL the appliance will call out to (a Qdrant cluster, a remote model):
    http(s) with a host, no credentials in it, the host one the network guard lets the process
    reach (loopback or an entry of network.allow), and a key (`with_key`; `key_setting` says where
    it goes, e.g. "index.qdrant.api_key") never in clear text beyond this machine. InvalidInput naming `what`
    otherwise, before anything connects."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError as exc:
        raise InvalidInput(f"{what} is malformed: {exc}") from None
    if parts.username or parts.password:  # it would be echoed in logs and errors (so checked first)
        raise InvalidInput(
            f"{what} must carry no credentials" + (f": put the key in {key_setting}" if key_setting else "")
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{what} {url!r} must be an http:// or https:// URL with a host")
    if network.guard:
        if not allow_listed(network.allow, parts.hostname):
            raise InvalidInput(
                f"{what}: host {parts.hostname!r} is not in settings network.allow; the appliance "
                "runs offline and reaches only loopback and the hosts allowed there"
            )
    # An unconfigured guard admits this machine only: a key may go in clear text over loopback.
    if with_key and parts.scheme == "http" and not NetworkGuard().allowed(parts.hostname):
        raise InvalidInput(
            f"{key_setting or 'the API key'} would cross the network in clear text: use an https:// URL"
        )
    return parts


def outbound_attempts() -> int:
    return GUARD.attempts
