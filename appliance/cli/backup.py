"""`appliance backup` and `appliance restore`: snapshots of the data directory, online or offline."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from appliance.cli.common import Parents, connect, emit, settings
from appliance.errors import ApplianceError


def register(sub: argparse._SubParsersAction, parents: Parents) -> None:
    p = sub.add_parser(
        "backup",
        parents=[parents.client],
        help="snapshot catalogue, indexes and config while the server runs (or --offline when stopped)",
    )
    p.add_argument("dest", help="a new folder for the snapshot")
    p.add_argument(
        "--offline",
        action="store_true",
        help="the server is stopped: copy the data directory's files directly",
    )
    p.set_defaults(func=_backup)

    p = sub.add_parser(
        "restore",
        parents=[parents.client],
        help="put a snapshot back into the data directory (the server must be stopped)",
    )
    p.add_argument("src", help="a folder written by `appliance backup`")
    p.set_defaults(func=_restore)


def _config_path(args: argparse.Namespace) -> Path | None:
    raw = args.config or os.environ.get("APPLIANCE_CONFIG")
    return Path(raw).expanduser() if raw else None


def _backup(args: argparse.Namespace) -> int:
    from appliance.ops.backup import snapshot_stopped

    dest = Path(args.dest).expanduser().absolute()
    if dest.exists():
        raise ApplianceError(f"{dest} already exists; choose a new destination")
    if args.offline:
        result = snapshot_stopped(settings(args), dest, _config_path(args))
    else:
        result = _backup_online(args, dest)
    emit(
        args,
        result,
        lambda r: print(
            f"backup written to {r['path']}: {r['files']} files, {r['bytes'] / 1024**2:.1f} MiB, "
            f"{r['counts'].get('documents', '?')} documents, {r['counts'].get('chunks', '?')} chunks"
        ),
    )
    return 0


def _backup_online(args: argparse.Namespace, dest: Path) -> dict:
    from appliance.client import ApiError

    try:
        with connect(args) as client:
            result = client.backup()
    except ApiError as exc:
        if exc.unreachable:
            raise ApiError(
                0,
                exc.title,
                f"{exc.detail} If the service is stopped, use `appliance backup --offline DEST`.",
            ) from None
        raise
    # The server wrote the snapshot into its own data directory: move it where it was asked for.
    written = Path(result["path"])
    if written != dest:
        try:
            shutil.move(str(written), str(dest))
        except OSError as exc:
            raise ApplianceError(
                f"the snapshot is at {written} but could not be moved to {dest}: {exc}"
            ) from None
        result["path"] = str(dest)
    return result


def _restore(args: argparse.Namespace) -> int:
    from appliance.ops.backup import restore

    result = restore(settings(args), Path(args.src))
    lines = [
        f"restored {result['restored']} (taken {result['created']}, appliance {result['appliance_version']}) "
        f"into {result['data_dir']}"
    ]
    if result["moved_aside"]:
        lines.append(f"  the previous files are kept in {result['moved_aside']}")
    if result["config"]:
        lines.append(f"  the backup's config is at {result['config']} (the current one was left as it is)")
    lines.append("  start the service: sudo systemctl start appliance")
    emit(args, result, lambda _: print("\n".join(lines)))
    return 0
