"""The Qdrant vector backend beyond the contract suite: chosen by a setting, its cluster URL checked
against network.allow, an appliance on it ingesting and finding, and the reconcile's patience with a
count that trails (an eventually consistent engine)."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from appliance.config import IndexSettings, load_settings
from appliance.db.catalog import Catalog
from appliance.db.connection import Database
from appliance.db.migrations import migrate
from appliance.errors import InvalidInput, NotReady
from appliance.index import sync as sync_module
from appliance.index.backends import VECTOR_BACKENDS, check_qdrant_url, open_vector_index
from appliance.index.memory import MemoryVectorIndex
from appliance.index.qdrant import QdrantVectorIndex
from appliance.index.sync import IndexSync
from tests.index.test_sync import store
from tests.inprocess import echo_appliance, ingest


def settings(**index):
    network = index.pop("network", {})
    return load_settings(overrides={"index": index, "network": network}, environ={})


def test_every_backend_the_setting_names_is_registered():
    hint = typing.get_type_hints(IndexSettings)["vector_backend"]
    assert set(typing.get_args(hint)) == set(VECTOR_BACKENDS)


def test_the_setting_opens_qdrant_local_mode_committing_every_apply(tmp_path):
    index, interval = open_vector_index(settings(vector_backend="qdrant"), tmp_path, 8)
    try:
        assert isinstance(index, QdrantVectorIndex) and not index.remote
        assert interval == 0.0  # its writes become searchable only at commit: never wait to commit
        assert (tmp_path / "qdrant").is_dir()
    finally:
        index.close()


@pytest.mark.parametrize(
    ("qdrant", "network", "error"),
    [
        ({"url": "https://qdrant.internal:6333"}, {}, "not in settings network.allow"),
        ({"url": "http://10.0.4.7:6333"}, {"allow": ["10.0.5.0/24"]}, "not in settings network.allow"),
        ({"url": "qdrant.internal:6333"}, {"allow": ["qdrant.internal"]}, "http:// or https://"),
        ({"url": "ftp://10.0.4.7"}, {"allow": ["10.0.4.0/24"]}, "http:// or https://"),
        ({"url": "http://10.0.4.7:6333", "api_key": "k"}, {"allow": ["10.0.4.7"]}, "clear text"),
        ({"url": "https://me:secret@10.0.4.7"}, {"allow": ["10.0.4.7"]}, "no credentials"),
    ],
)
def test_a_cluster_url_outside_the_allow_list_is_refused_before_connecting(qdrant, network, error):
    s = settings(vector_backend="qdrant", qdrant=qdrant, network=network)
    with pytest.raises(InvalidInput, match=error):
        check_qdrant_url(s)
    with pytest.raises(InvalidInput, match=error):  # the door the appliance opens it by
        open_vector_index(s, None, 8)


@pytest.mark.parametrize(
    ("qdrant", "network"),
    [
        ({"url": "https://qdrant.internal:6333", "api_key": "k"}, {"allow": ["qdrant.internal"]}),
        ({"url": "http://10.0.4.7:6333"}, {"allow": ["10.0.4.0/24"]}),
        ({"url": "http://127.0.0.1:6333", "api_key": "k"}, {}),  # loopback: no allow entry needed
        ({"url": "http://qdrant.internal:6333"}, {"guard": False}),
    ],
)
def test_an_allowed_cluster_url_passes(qdrant, network):
    s = settings(vector_backend="qdrant", qdrant=qdrant, network=network)
    assert check_qdrant_url(s) == qdrant["url"]


def test_an_unreachable_cluster_is_named_at_start(tmp_path):
    s = settings(vector_backend="qdrant", qdrant={"url": "http://127.0.0.1:9", "timeout_seconds": 5})
    with pytest.raises(NotReady, match=r"Qdrant cluster at http://127\.0\.0\.1:9 cannot be read"):
        open_vector_index(s, tmp_path, 8)


def test_bad_qdrant_settings_are_named():
    with pytest.raises(InvalidInput, match="index.qdrant.collection"):
        settings(vector_backend="qdrant", qdrant={"collection": "no spaces"})
    with pytest.raises(InvalidInput, match="vector_backend"):
        settings(vector_backend="faiss")


def test_an_appliance_on_qdrant_ingests_and_finds(tmp_path):
    # Restarting without a rebuild is the contract suite's (test_commit_close_reopen[qdrant]); a
    # second start here would load the embedder again for little more.
    app = echo_appliance(tmp_path / "data", index={"vector_backend": "qdrant"})
    try:
        assert isinstance(app.vector_index, QdrantVectorIndex)
        assert app.reconcile_report["qdrant"] == "created"
        ingest(
            app,
            "notes",
            {
                "glacier": "Alpine glaciers lose mass every summer as meltwater drains into valleys.",
                "bread": "A sourdough starter ferments flour with wild yeast before the bread rises.",
            },
        )
        admin = app.access.system_scope()
        hits = app.knowledge.search(admin, "why do mountain ice sheets shrink", mode="semantic", top_k=1).hits
        assert [h.source_id for h in hits] == ["glacier"]
        assert app.vector_index.count() == app.catalog.db.fetchone("SELECT count(*) FROM chunks")[0] > 0
        hits = app.knowledge.search(admin, "fermented dough", collections=["notes"], top_k=1).hits
        assert [h.source_id for h in hits] == ["bread"]  # hybrid: keyword and Qdrant fused
    finally:
        app.close()


class TrailingCount(MemoryVectorIndex):
    """An in-memory vector index whose count trails its writes for a few reads, the way a
    replicated engine's count can trail the writes it acknowledged."""

    def __init__(self, dimensions: int, settle_seconds: float) -> None:
        super().__init__(dimensions)
        self.count_settle_seconds = settle_seconds
        self.trailing_reads = 0
        self.resets = 0

    def count(self) -> int:
        if self.trailing_reads:
            self.trailing_reads -= 1
            return max(0, super().count() - 1)
        return super().count()

    def reset(self) -> None:
        self.resets += 1
        super().reset()


@pytest.fixture
def catalog(tmp_path):
    db = Database(tmp_path / "a.duckdb")
    migrate(db)
    yield Catalog(db)
    db.close()


@pytest.mark.parametrize(("settle_seconds", "rebuilt"), [(60.0, False), (0.0, True)])
def test_reconcile_waits_for_a_trailing_count_before_rebuilding(
    catalog, monkeypatch, settle_seconds, rebuilt
):
    monkeypatch.setattr(sync_module, "SETTLE_POLL_S", 0.01)  # poll fast; the deadline is what matters
    index = TrailingCount(4, settle_seconds)
    IndexSync(catalog.db, [index]).reconcile()
    store(catalog, "a", "glaciers retreat every summer")
    IndexSync(catalog.db, [index]).apply_pending()
    resets = index.resets
    index.trailing_reads = 3  # the next three counts lag one chunk behind
    outcome = IndexSync(catalog.db, [index]).reconcile()
    assert (outcome[index.name] == "rebuilt: count mismatch") is rebuilt
    assert (index.resets > resets) is rebuilt
    index.trailing_reads = 0
    assert index.count() == 1
    assert index.search(np.ones(4, dtype=np.float32), ["c"], 1)[0].score > 0.99
