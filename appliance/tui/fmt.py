"""Formatting of sizes, durations, states and progress for the console's tables and cards."""

from __future__ import annotations

from rich.text import Text

# One colour per health/job state, so the same word reads the same on every screen.
STATE_STYLES = {
    "ok": "bold green",
    "loaded": "bold green",
    "succeeded": "green",
    "running": "bold cyan",
    "queued": "yellow",
    "starting": "yellow",
    "loading": "yellow",
    "warn": "bold yellow",
    "cancelled": "dim",
    "off": "dim",
    "unloaded": "dim",
    "failed": "bold red",
    "down": "bold red",
    "revoked": "dim red",
}
LEVEL_STYLES = {
    "debug": "dim",
    "info": "cyan",
    "warning": "yellow",
    "error": "bold red",
    "critical": "bold white on red",
}


def state(value: str | None) -> Text:
    word = value or "-"
    return Text(word, style=STATE_STYLES.get(word, ""))


def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def number(value: float | None, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}{(' ' + unit) if unit else ''}"


def bar(fraction: float, width: int = 12) -> Text:
    """A progress bar that fits in a table cell."""
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    return Text.assemble(("█" * filled, "green"), ("░" * (width - filled), "dim"), f" {fraction * 100:3.0f}%")


def location(loc: dict | None) -> str:
    """A chunk's place in its document, short: "p. 3 · Travel › Per diems · L2–5"."""
    if not loc:
        return "-"
    parts = []
    if loc.get("page") is not None:
        parts.append(f"p. {loc['page']}")
    if loc.get("heading_path"):
        parts.append(" › ".join(map(str, loc["heading_path"])))
    start, end = loc.get("line_start"), loc.get("line_end")
    if start is not None:
        parts.append(f"L{start}" + (f"–{end}" if end not in (None, start) else ""))
    known = {"page", "heading_path", "line_start", "line_end"}
    parts += [f"{k} {v}" for k, v in loc.items() if k not in known and v not in (None, "", [])]
    return " · ".join(parts) or "-"


def clip(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"


def short_ts(iso: str | None) -> str:
    """ "2025-01-02T03:04:05.678+00:00" -> "01-02 03:04:05": enough to order events on one screen."""
    if not iso:
        return "-"
    return iso[5:10] + " " + iso[11:19] if len(iso) >= 19 else iso


SPARK = "▁▂▃▄▅▆▇█"


def spark(values: list[float]) -> str:
    """A sparkline in a table cell, one block per value, scaled between the lowest and highest."""
    if not values:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return SPARK[3] * len(values)
    return "".join(SPARK[round((v - low) / (high - low) * (len(SPARK) - 1))] for v in values)
