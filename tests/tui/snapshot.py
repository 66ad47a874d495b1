"""A small SVG snapshot helper: compare `app.export_screenshot()` with tests/tui/snapshots/NAME.svg.

`UPDATE_SNAPSHOTS=1` rewrites the committed files instead of comparing; a missing file fails."""

from __future__ import annotations

import difflib
import html
import os
import re
from pathlib import Path

SNAPSHOTS = Path(__file__).parent / "snapshots"
_TEXT = re.compile(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>')


def screen_lines(svg: str) -> list[str]:
    """The characters of a Textual SVG screenshot, row by row, for a readable diff."""
    rows: dict[float, list[tuple[float, str]]] = {}
    for m in _TEXT.finditer(svg):
        rows.setdefault(float(m.group(2)), []).append((float(m.group(1)), html.unescape(m.group(3))))
    out = []
    for y in sorted(rows):
        line = ""
        for x, text in sorted(rows[y]):
            line = line.ljust(int(round(x / 12.2))) + text
        out.append(line.replace("\xa0", " ").rstrip())
    return out


def assert_snapshot(svg: str, name: str, actual_dir: Path) -> None:
    path = SNAPSHOTS / f"{name}.svg"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOTS.mkdir(parents=True, exist_ok=True)
        path.write_text(svg)
        return
    if not path.exists():
        raise AssertionError(f"no snapshot {path}; run with UPDATE_SNAPSHOTS=1 and review the SVG")
    expected = path.read_text()
    if svg == expected:
        return
    actual = actual_dir / f"{name}.svg"
    actual.write_text(svg)
    diff = "\n".join(
        difflib.unified_diff(screen_lines(expected), screen_lines(svg), "expected", "actual", lineterm="")
    )
    raise AssertionError(
        f"{name} differs from {path} (actual: {actual}; styles only if no text diff):\n{diff}"
    )
