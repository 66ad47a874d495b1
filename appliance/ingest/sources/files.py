"""File policies shared by every file source: what is ignored, refused or taken, and how paths are named."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence
from pathlib import PurePosixPath

# Editors, office suites, browsers and copy tools leave these while a file is being written.
_TEMPORARY = (
    ".~lock.*", "~$*", "*.swp", "*.swo", "*.swx", "*~", "*.tmp", "*.temp", "*.part", "*.partial",
    "*.crdownload", "*.download", "*.filepart", "*.!qb", "#*#", ".#*", "Thumbs.db", "desktop.ini",
)  # fmt: skip


def ignored_name(name: str) -> bool:
    """Hidden files (rsync and many tools write `.name.XXXX` first) and temporary files."""
    return name.startswith(".") or any(fnmatch.fnmatchcase(name.lower(), p.lower()) for p in _TEMPORARY)


def path_key(relative: str | bytes) -> str:
    """A file's path as stored and shown: valid UTF-8 even when the name on disk is not."""
    raw = relative if isinstance(relative, bytes) else os.fsencode(relative)
    return raw.decode("utf-8", "backslashreplace")


def _glob_regex(pattern: str) -> re.Pattern:
    """Glob with `**` spanning folders; a pattern without a slash matches the base name anywhere."""
    if "/" not in pattern:
        pattern = "**/" + pattern
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


class PathFilter:
    """Include and exclude globs (`docs/**`, `*.md`, `**/vendor/**`); no includes means everything."""

    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        self.include = [_glob_regex(p) for p in include]
        self.exclude = [_glob_regex(p) for p in exclude]

    def __call__(self, path: str) -> bool:
        path = str(PurePosixPath(path))
        if self.include and not any(r.match(path) for r in self.include):
            return False
        return not any(r.match(path) for r in self.exclude)
