"""Durable file helpers: hashes, atomic writes that leave the old file or the new one, never half."""

from __future__ import annotations

import hashlib
import io

import pytest

from appliance.files import atomic_writer, copy_hashing, sha256_file, write_atomically


def test_sha256_of_a_file_larger_than_one_block(tmp_path):
    data = bytes(range(256)) * 9000  # > 1 MiB: several reads
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_copy_hashing_concatenates_and_hashes(tmp_path):
    for n, part in enumerate((b"abc", b"", b"def" * 1000)):
        (tmp_path / f"p{n}").write_bytes(part)
    out = io.BytesIO()
    digest = copy_hashing([tmp_path / f"p{n}" for n in range(3)], out)
    assert out.getvalue() == b"abc" + b"def" * 1000
    assert digest == hashlib.sha256(out.getvalue()).hexdigest()


def test_atomic_write_replaces_whole_with_mode_and_leaves_no_temp(tmp_path):
    dest = tmp_path / "sub" / "key"
    write_atomically(dest, b"first", mode=0o600)
    write_atomically(dest, b"second", mode=0o600)
    assert dest.read_bytes() == b"second" and dest.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in dest.parent.iterdir()] == ["key"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    dest = tmp_path / "f"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_writer(dest) as out:
        out.write(b"half of the new")
        raise RuntimeError("disk full")
    assert dest.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f"]
