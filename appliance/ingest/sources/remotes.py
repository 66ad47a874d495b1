"""Git remote URLs the appliance fetches from: https and ssh only, to hosts that settings network.allow admits."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from appliance.errors import InvalidInput
from appliance.offline import NetworkGuard

if TYPE_CHECKING:
    from appliance.config import NetworkSettings

_SCHEMES = {"https": "https", "ssh": "ssh", "git+ssh": "ssh", "ssh+git": "ssh"}
# `<transport>::<address>`: git runs the program git-remote-<transport> for it (ext:: runs any command).
_HELPER = re.compile(r"[A-Za-z0-9+.-]*::")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
# scp-like syntax, `[user@]host:path`, which git reads as ssh when a colon comes before any slash.
_SCP_LIKE = re.compile(r"(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]/]+\]|[^@/:\[\]]+):(?P<path>.*)")
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*\.?")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


class RemoteRefused(InvalidInput):
    """A remote URL the appliance will not hand to git: wrong scheme, odd syntax, or a host outside network.allow."""


@dataclass(frozen=True)
class Remote:
    url: str
    scheme: str  # "https" or "ssh"
    host: str


def _host(raw: str, url: str) -> str:
    host = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return host
    except ValueError:
        pass
    if not _HOST_NAME.fullmatch(host):
        raise RemoteRefused(f"remote URL {url!r} has no valid host name")
    return host.lower().rstrip(".")


def parse_remote(url: str) -> Remote:
    """`url` as git would read it, when it is an https or ssh URL (scp-like `user@host:path` included);
    anything else (local paths, file://, http://, git://, `transport::address` helpers such as ext::)
    is refused, since git would run a program or read this machine's files for it."""
    if not isinstance(url, str) or not url.strip():
        raise RemoteRefused("the remote has no URL")
    if _HELPER.match(url):
        raise RemoteRefused(
            f"remote URL {url!r} names a git transport helper (like ext::), which runs programs: never allowed"
        )
    if url.startswith("-") or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise RemoteRefused(f"remote URL {url!r} starts with '-' or contains spaces or control characters")
    if scheme := _SCHEME.match(url):
        kind = _SCHEMES.get(scheme.group(1).lower())
        if kind is None:
            raise RemoteRefused(
                f"remote URL {url!r} uses {scheme.group(1)}://: only https:// and ssh:// remotes are fetched"
            )
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (a port that is not a number raises here)
        except ValueError as exc:
            raise RemoteRefused(f"remote URL {url!r} is malformed: {exc}") from None
        user = parts.username
        if user is not None and kind == "ssh" and not _USER.fullmatch(user):
            raise RemoteRefused(f"remote URL {url!r} has an invalid user name")
        return Remote(url, kind, _host(parts.hostname or "", url))
    scp = _SCP_LIKE.fullmatch(url)
    if scp is None or (scp["user"] is not None and not _USER.fullmatch(scp["user"])):
        raise RemoteRefused(
            f"remote URL {url!r} is a local path: only https:// and ssh:// remotes are fetched "
            "(a repository on this machine is read where it is: make it the source's location)"
        )
    if scp["path"].startswith("-"):
        raise RemoteRefused(f"remote URL {url!r} has a path that starts with '-'")
    return Remote(url, "ssh", _host(scp["host"], url))


class RemotePolicy:
    """Admits a remote when its URL is https or ssh and its host is one the network guard would let the
    process reach itself: loopback, or an entry of network.allow. Git connects from its own process,
    where the guard cannot see it, so the URL is checked here before git runs. With the guard turned
    off (network.guard = false) every host is admitted; the scheme is checked all the same."""

    def __init__(self, network: NetworkSettings) -> None:
        self._enforce = network.guard
        self._hosts = NetworkGuard()
        self._hosts.configure(False, network.allow)  # a decision table only: nothing is installed

    def check(self, url: str, what: str) -> Remote:
        try:
            remote = parse_remote(url)
        except RemoteRefused as exc:
            raise RemoteRefused(f"{what}: {exc.detail}") from None
        if self._enforce and not self._hosts.allowed(remote.host):
            raise RemoteRefused(
                f"{what}: host {remote.host!r} is not in settings network.allow; git connects outside the "
                "process's network guard, so a remote must be allowed there by name or address"
            )
        return remote
