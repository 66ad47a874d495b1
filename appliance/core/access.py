"""Access: who is calling (keys), what they may see (a Scope), and how fast (rate admission).

Every authorization decision of the appliance is made here. Services receive a `Scope` and ask
it; they never look at a key's role or collections themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from appliance.db.catalog import Catalog
from appliance.db.keys import KeyStore, Principal
from appliance.errors import Forbidden, NotFound, TooManyRequests
from appliance.limits import FailedAuthLimiter, RateLimiter
from appliance.names import check_collection_name
from appliance.records import KeyInfo, NewKey

SYSTEM = Principal("system", "system", "admin", None)  # the server itself (sample corpus, repairs)


@dataclass(frozen=True, slots=True)
class Scope:
    """What one caller may reach. Unknown and forbidden objects look alike (404), so a key
    cannot probe for collections it was not given."""

    principal: Principal
    catalog: Catalog

    @property
    def key_id(self) -> str:
        return self.principal.key_id

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin

    def require_admin(self) -> None:
        if not self.principal.is_admin:
            raise Forbidden("this needs an admin key")

    def visible(self) -> list[str] | None:
        """The collections this caller may see, for filtering listings; None: all of them."""
        return None if self.principal.is_admin else list(self.principal.collections or ())

    def collections(self, requested: Sequence[str] | None) -> list[str]:
        """The collections asked for (every visible one when None), each checked to exist and be
        visible; raises NotFound naming the first that is not."""
        allowed = None if self.principal.is_admin else set(self.principal.collections or ())
        if requested is None:
            return [n for n in self.catalog.all_collection_names() if allowed is None or n in allowed]
        requested = list(dict.fromkeys(requested))
        for name in requested:
            check_collection_name(name)
        existing = self.catalog.existing_collections(requested)
        for name in requested:
            if name not in existing or (allowed is not None and name not in allowed):
                raise NotFound(f"collection {name!r} does not exist")
        return requested

    def check(self, collection: str | None, not_found: str) -> None:
        """Object-level check: an object of `collection` (None: of no collection, admin only) is
        visible, else NotFound(`not_found`), exactly as if it did not exist."""
        if self.principal.is_admin:
            return
        if collection is None or collection not in (self.principal.collections or ()):
            raise NotFound(not_found)


class Access:
    """Keys, scopes and rate admission."""

    def __init__(
        self,
        keys: KeyStore,
        catalog: Catalog,
        limiter: RateLimiter,
        failed_auth: FailedAuthLimiter | None = None,
    ) -> None:
        self.keys = keys
        self.catalog = catalog
        self.limiter = limiter
        self.failed_auth = failed_auth if failed_auth is not None else FailedAuthLimiter(30)

    def authenticate(self, secret: str) -> Principal | None:
        return self.keys.authenticate(secret)

    def admit(self, principal: Principal) -> None:
        """Count one request against the key's rate (429 with Retry-After when over it)."""
        self.limiter.check_request(principal.key_id, principal.rpm, principal.tpm)

    def admit_client(self, client: str | None) -> None:
        """Refuse (429 with Retry-After) a client over its allowance of failed authentications,
        before its key is even looked at."""
        wait = self.failed_auth.retry_after(client or "unknown")
        if wait is not None:
            raise TooManyRequests(
                f"too many requests with a missing or bad API key from {client}; retry after {wait:.0f} s",
                retry_after=wait,
            )

    def charge_tokens(self, principal: Principal, tokens: int) -> None:
        self.limiter.charge_tokens(principal.key_id, principal.tpm, tokens)

    def scope(self, principal: Principal) -> Scope:
        return Scope(principal, self.catalog)

    def system_scope(self) -> Scope:
        return Scope(SYSTEM, self.catalog)

    # -- keys ---------------------------------------------------------------------------------
    def create_key(
        self,
        scope: Scope,
        name: str,
        role: str,
        collections: list[str] | None,
        rpm: int | None,
        tpm: int | None,
    ) -> NewKey:
        """A new key; the secret is in this answer only (stored hashed)."""
        scope.require_admin()
        if collections:
            scope.collections(collections)
        key_id, secret = self.keys.create(name, role, collections, rpm, tpm)
        return NewKey(**msgspec.structs.asdict(self.keys.info(key_id)), key=secret)

    def list_keys(self, scope: Scope) -> list[KeyInfo]:
        scope.require_admin()
        return self.keys.list()

    def revoke_key(self, scope: Scope, key_id: str) -> KeyInfo:
        scope.require_admin()
        return self.keys.revoke(key_id)
