"""Component health: each part of the process with a status (ok, warn, starting, off, down) and a detail line."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance import __version__

GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class DiskUsage:
    path: str
    free_bytes: int
    total_bytes: int

    @classmethod
    def of(cls, path: Path) -> DiskUsage:
        usage = shutil.disk_usage(path)
        return cls(str(path), usage.free, usage.total)

    @property
    def low(self) -> bool:
        return self.free_bytes < max(GIB, self.total_bytes * 0.05)

    def as_dict(self) -> dict:
        return {"path": self.path, "free_bytes": self.free_bytes, "total_bytes": self.total_bytes}


def _probe(name: str, read: Callable[[], dict]) -> dict:
    # The dashboard must show a broken part, not fail with it.
    try:
        return {"name": name, **read()}
    except Exception as exc:
        return {"name": name, "status": "down", "detail": f"{type(exc).__name__}: {exc}"}


def component_health(
    chunk_count: Callable[[], int],
    index_status: dict[str, dict],
    active_jobs: int,
    failed_jobs: int,
    embedder_ready: bool,
    embedder: str,
    chat: dict,
    disk: DiskUsage,
) -> list[dict]:
    """What the dashboard's component table shows, from readings the caller took."""
    out = [
        {"name": "api", "status": "ok", "detail": f"version {__version__}"},
        _probe("duckdb", lambda: {"status": "ok", "detail": f"{chunk_count()} chunks"}),
    ]
    for name, st in index_status.items():
        behind = max(0, st["outbox_seq"] - st["applied_seq"])
        out.append(
            {
                "name": name,
                "status": "ok" if behind == 0 else "warn",
                "detail": f"{st['count']} entries" + (f", {behind} changes behind" if behind else ""),
            }
        )
    out.append(
        {
            "name": "jobs",
            "status": "warn" if failed_jobs else "ok",
            "detail": f"{active_jobs} active" + (f", {failed_jobs} failed recently" if failed_jobs else ""),
        }
    )
    out.append({"name": "embedder", "status": "ok" if embedder_ready else "starting", "detail": embedder})
    status = {"loaded": "ok", "loading": "starting", "unloaded": "off"}.get(chat["state"], "down")
    detail = (
        f"{chat.get('name')} on {chat.get('backend')}"
        if chat["state"] == "loaded"
        else chat.get("error") or chat["state"]
    )
    out.append({"name": "model", "status": status if chat.get("ok", True) else "down", "detail": detail})
    out.append(
        {
            "name": "disk",
            "status": "warn" if disk.low else "ok",
            "detail": f"{disk.free_bytes / GIB:.1f} GiB free of {disk.total_bytes / GIB:.1f}",
        }
    )
    return out
