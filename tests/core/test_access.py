"""Scopes decide every authorization: what a key may see, object by object, over a real catalogue."""

from __future__ import annotations

import msgspec
import pytest

from appliance.core.access import Access
from appliance.db.catalog import Catalog
from appliance.db.connection import Database
from appliance.db.keys import KeyStore, Principal
from appliance.db.migrations import migrate
from appliance.errors import Forbidden, InvalidInput, NotFound
from appliance.limits import RateLimiter


@pytest.fixture
def access(tmp_path):
    db = Database(tmp_path / "a.duckdb")
    migrate(db)
    catalog = Catalog(db)
    for name in ("alpha", "bravo", "charlie"):
        catalog.create_collection(name)
    yield Access(KeyStore(db), catalog, RateLimiter())
    db.close()


ADMIN = Principal("k-admin", "admin", "admin", None)
ALPHA = Principal("k-alpha", "alpha-user", "user", ("alpha",))


def test_admin_sees_every_collection_a_user_only_its_own(access):
    assert access.scope(ADMIN).collections(None) == ["alpha", "bravo", "charlie"]
    assert access.scope(ALPHA).collections(None) == ["alpha"]
    assert access.scope(ADMIN).visible() is None and access.scope(ALPHA).visible() == ["alpha"]


def test_forbidden_and_unknown_collections_look_alike(access):
    user = access.scope(ALPHA)
    assert user.collections(["alpha", "alpha"]) == ["alpha"]
    with pytest.raises(NotFound, match="'bravo'") as forbidden:
        user.collections(["alpha", "bravo"])
    with pytest.raises(NotFound, match="'nope'") as unknown:
        user.collections(["nope"])
    assert type(forbidden.value) is type(unknown.value)
    with pytest.raises(InvalidInput):
        user.collections(["Not A Name"])


def test_object_checks_and_admin_requirement(access):
    user, admin = access.scope(ALPHA), access.scope(ADMIN)
    user.check("alpha", "document 'd' does not exist")
    with pytest.raises(NotFound, match="document 'd' does not exist"):
        user.check("bravo", "document 'd' does not exist")
    with pytest.raises(NotFound):
        user.check(None, "job 'j' does not exist")  # objects of no collection are the admin's
    admin.check(None, "never raised")
    admin.require_admin()
    with pytest.raises(Forbidden):
        user.require_admin()


def test_keys_are_created_only_by_admins_within_existing_collections(access):
    admin, user = access.scope(ADMIN), access.scope(ALPHA)
    created = access.create_key(admin, "reader", "user", ["bravo"], rpm=5, tpm=None)
    assert created.key.startswith("apk_") and created.collections == ["bravo"]
    principal = access.authenticate(created.key)
    assert principal is not None and access.scope(principal).collections(None) == ["bravo"]
    # The secret is shown once: no listed key carries it, on the wire or as a field.
    assert all("key" not in msgspec.to_builtins(k) for k in access.list_keys(admin))
    with pytest.raises(Forbidden):
        access.create_key(user, "x", "user", None, None, None)
    with pytest.raises(NotFound):
        access.create_key(admin, "x", "user", ["missing"], None, None)
    access.revoke_key(admin, created.id)
    assert access.authenticate(created.key) is None
