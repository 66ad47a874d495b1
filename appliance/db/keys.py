"""API keys: stored hashed, checked on every request but the health probes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path

from appliance.db.connection import Database
from appliance.errors import InvalidInput, NotFound
from appliance.files import write_atomically
from appliance.records import KeyInfo

KEY_PREFIX = "apk_"
ROLES = ("admin", "user")
_INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a key's id, name, role and (for non-admins) its allowed collections."""

    key_id: str
    name: str
    role: str
    collections: tuple[str, ...] | None  # None: every collection
    rpm: int | None = None  # requests per minute; None: unlimited
    tpm: int | None = None  # model tokens per minute; None: unlimited

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _hash(secret: str) -> str:
    # Keys are 256-bit random secrets, so a fast hash is enough (no dictionary to slow down).
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(
        self,
        name: str,
        role: str,
        collections: list[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
    ) -> tuple[str, str]:
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
        if not name.strip():
            raise InvalidInput("a key needs a name")
        for limit, label in ((rpm, "rpm"), (tpm, "tpm")):
            # The columns are 32-bit INTEGERs.
            if limit is not None and not 1 <= limit <= _INT32_MAX:
                raise InvalidInput(f"{label} must be within 1..{_INT32_MAX}")
        if role == "user" and not collections:
            raise InvalidInput("a user key needs at least one collection (--collections a,b)")
        key_id = "key_" + uuid.uuid4().hex[:16]
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        self.db.write(
            "INSERT INTO api_keys (id, name, role, key_hash, collections, rpm, tpm) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [key_id, name.strip(), role, _hash(secret), collections if role == "user" else None, rpm, tpm],
        )
        return key_id, secret

    def list(self) -> list[KeyInfo]:
        rows = self.db.fetchall(
            "SELECT id, name, role, collections, rpm, tpm, created_at, revoked_at FROM api_keys ORDER BY created_at"
        )
        return [
            KeyInfo(
                id=r[0],
                name=r[1],
                role=r[2],
                collections=r[3],
                rpm=r[4],
                tpm=r[5],
                created_at=r[6].isoformat(),
                revoked_at=r[7].isoformat() if r[7] else None,
            )
            for r in rows
        ]

    def info(self, key_id: str) -> KeyInfo:
        found = [k for k in self.list() if k.id == key_id]
        if not found:
            raise NotFound(f"key {key_id!r} does not exist")
        return found[0]

    def revoke(self, key_id: str) -> KeyInfo:
        row = self.db.fetchone("SELECT revoked_at FROM api_keys WHERE id = ?", [key_id])
        if row is None:
            raise NotFound(f"key {key_id!r} does not exist")
        if row[0] is None:
            self.db.write("UPDATE api_keys SET revoked_at = now() WHERE id = ?", [key_id])
        return self.info(key_id)

    def authenticate(self, secret: str) -> Principal | None:
        if not secret.startswith(KEY_PREFIX):
            return None
        digest = _hash(secret)
        row = self.db.fetchone(
            """SELECT id, name, role, collections, key_hash, rpm, tpm FROM api_keys
               WHERE key_hash = ? AND revoked_at IS NULL""",
            [digest],
        )
        if row is None or not hmac.compare_digest(row[4], digest):
            return None
        return Principal(
            row[0], row[1], row[2], tuple(row[3]) if row[3] is not None else None, row[5], row[6]
        )

    def ensure_admin_key(self, path: Path) -> bool:
        """On first start create an admin key and write it (mode 0600). Returns True when created."""
        if path.exists():
            secret = path.read_text().strip()
            if self.authenticate(secret) is not None:
                return False
        _, secret = self.create("admin", "admin")
        write_atomically(path, (secret + "\n").encode(), mode=0o600)
        return True
