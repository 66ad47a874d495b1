"""Helpers install.sh and the systemd unit call: readiness wait, migrations, the unit's network drop-in."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from appliance.config import load_settings
from appliance.errors import InvalidInput
from appliance.index.sync import REBUILD_PROGRESS


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs; an exited child its parent has not reaped yet is a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # /proc/PID/stat: "pid (comm) state ..."; comm may hold spaces and parentheses.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _rebuild_progress(path: Path) -> tuple[float, dict] | None:
    """When the index rebuild in progress last said how far it got (wall clock), and what it said."""
    try:
        return path.stat().st_mtime, json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def wait_ready(config: str | None, timeout: float, pid: int | None = None) -> int:
    """Poll /readyz until the server answers ready; the unit's ExecStartPost and the installer use it.
    It fails after `timeout` seconds without readiness and without progress: a start that rebuilds
    an index from DuckDB (tens of minutes at a million chunks) reports progress to a file in the
    index directory, and each report gives it `timeout` seconds more. With `pid` (the server the
    installer started), a server that exits fails the wait at once instead of at the timeout: a
    broken release is rolled back in seconds."""
    settings = load_settings(config)
    host = settings.server.host if settings.server.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    url = f"{'https' if settings.server.tls else 'http'}://{host}:{settings.server.port}/readyz"
    progress_file = settings.data_path / "index" / REBUILD_PROGRESS
    deadline, last, said = time.monotonic() + timeout, "no answer", None
    while True:
        progress = _rebuild_progress(progress_file)
        if progress is not None:
            at, report = progress
            deadline = max(deadline, time.monotonic() + timeout - max(0.0, time.time() - at))
            if report != said and time.time() - at < timeout:
                said = report
                print(
                    f"rebuilding the {report.get('index')} index from the catalogue: "
                    f"{report.get('chunks_done')} of {report.get('chunks')} chunks "
                    f"({report.get('seconds')} s)",
                    flush=True,
                )
        if time.monotonic() >= deadline:
            break
        if pid is not None and not _alive(pid):
            print(f"the server (pid {pid}) exited before {url} answered ready", file=sys.stderr)
            return 1
        try:
            # A local readiness probe that sends nothing secret: the certificate (issued for the
            # server's name, not for 127.0.0.1) is the clients' to check.
            response = httpx.get(url, timeout=5, verify=False)
            if response.status_code == 200:
                print(f"ready: {url}")
                return 0
            last = f"{response.status_code} {response.json().get('status', '')}"
        except (httpx.HTTPError, ValueError) as exc:
            last = type(exc).__name__
        time.sleep(1)
    print(f"not ready after {timeout:.0f}s without progress at {url} (last: {last})", file=sys.stderr)
    return 1


def migrate(config: str | None) -> int:
    from appliance.db.connection import Database
    from appliance.db.migrations import migrate as run_migrations
    from appliance.ops.backup import DB_NAME

    settings = load_settings(config)
    path = settings.data_path / DB_NAME
    if not path.exists():
        print(f"no catalogue at {path} yet: it is created at first start")
        return 0
    db = Database(path)
    try:
        run_migrations(db)
    finally:
        db.close()
    print(f"catalogue {path} migrated")
    return 0


def network_dropin(config: str | None) -> int:
    """The unit's IPAddressAllow lines: the listen address's networks (clients must reach the API)
    and the admin's allowed internal addresses; loopback is in the unit itself."""
    settings = load_settings(config)
    allow: list[str] = []
    host = settings.server.host
    try:
        listen = ipaddress.ip_address(host)
    except ValueError:
        listen = None
    if listen is None or not listen.is_loopback:
        allow += _local_networks(None if listen is None or listen.is_unspecified else listen)
    for entry in settings.network.allow:
        try:
            allow.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            print(f"# network.allow entry {entry!r} is a name: add its address to IPAddressAllow by hand")
    print(
        "# Written by install.sh from the config's server.host and network.allow; rerun install.sh to update."
    )
    print("[Service]")
    for net in dict.fromkeys(allow):
        print(f"IPAddressAllow={net}")
    return 0


def _local_networks(only: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> list[str]:
    try:
        out = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    nets = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[2] in ("inet", "inet6"):
            iface = ipaddress.ip_interface(fields[3])
            if not iface.ip.is_loopback and (only is None or iface.ip == only):
                nets.append(str(iface.network))
    return nets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m appliance.ops.install_support")
    parser.add_argument("action", choices=["wait-ready", "migrate", "network-dropin"])
    parser.add_argument("--config")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--pid", type=int, help="wait-ready: the server process; its exit ends the wait")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except InvalidInput as exc:  # settings that would not start the server: say why, no traceback
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.action == "wait-ready":
        return wait_ready(args.config, args.timeout, args.pid)
    if args.action == "migrate":
        return migrate(args.config)
    return network_dropin(args.config)


if __name__ == "__main__":
    sys.exit(main())
