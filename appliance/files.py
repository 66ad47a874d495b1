"""Durable file operations: sha256 of a file, fsync of files and folders, and atomic replacement."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

CHUNK = 1024 * 1024


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (model weights are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def copy_hashing(sources: Iterable[Path], out: BinaryIO) -> str:
    """Concatenate `sources` into `out`; the hex sha256 of what was written."""
    digest = hashlib.sha256()
    for source in sources:
        with open(source, "rb") as fh:
            while block := fh.read(CHUNK):
                digest.update(block)
                out.write(block)
    return digest.hexdigest()


def fsync_path(path: Path) -> None:
    """fsync a file or a folder by path (a folder's fsync makes the names in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root`, then `root` itself."""
    for path in [*root.rglob("*"), root]:
        fsync_path(path)


def replace_durably(tmp: Path, dest: Path) -> None:
    """Rename `tmp` over `dest` (same file system) and make the rename itself durable."""
    os.replace(tmp, dest)
    fsync_path(dest.parent)


@contextmanager
def atomic_writer(dest: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Write `dest` whole or not at all: yields a temporary file beside it; on a clean exit the
    file is flushed, fsynced, given `mode` and renamed into place; on an error it is removed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        replace_durably(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomically(dest: Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_writer(dest, mode) as out:
        out.write(data)
