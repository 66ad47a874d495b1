"""API keys: stored hashed, checked on every request but the health probes."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

from appliance.db.connection import Database

KEY_PREFIX = "apk_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key's id, name, role and (for non-admins) its allowed collections."""

    key_id: str
    name: str
    role: str
    collections: tuple[str, ...] | None  # None: every collection

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _hash(secret: str) -> str:
    # Keys are 256-bit random secrets, so a fast hash is enough (no dictionary to slow down).
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str, role: str, collections: list[str] | None = None) -> tuple[str, str]:
        key_id = "key_" + uuid.uuid4().hex[:16]
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        self.db.execute(
            "INSERT INTO api_keys (id, name, role, key_hash, collections) VALUES (?, ?, ?, ?, ?)",
            [key_id, name, role, _hash(secret), collections],
        )
        return key_id, secret

    def authenticate(self, secret: str) -> Principal | None:
        if not secret.startswith(KEY_PREFIX):
            return None
        digest = _hash(secret)
        row = self.db.fetchone(
            "SELECT id, name, role, collections, key_hash FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
            [digest],
        )
        if row is None or not hmac.compare_digest(row[4], digest):
            return None
        return Principal(row[0], row[1], row[2], tuple(row[3]) if row[3] is not None else None)

    def ensure_admin_key(self, path: Path) -> bool:
        """On first start create an admin key and write it (mode 0600). Returns True when created."""
        if path.exists():
            secret = path.read_text().strip()
            if self.authenticate(secret) is not None:
                return False
        _, secret = self.create("admin", "admin")
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return True
