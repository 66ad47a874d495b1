"""Metadata filters on search hits: every key means itself, whatever characters it holds."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from appliance.db.catalog import Catalog, DocumentRecord, EmbeddedChunk
from appliance.db.connection import Database
from appliance.db.migrations import migrate
from appliance.document import Chunk, Location

METADATA = {
    "équipe": "nord",
    "*": "star",
    "a.b": "dotted",
    "a": {"b": "nested"},
    "~/x": "pointer syntax",
    "line\nbreak": "control",
    '"quoted"': "quotes",
    "$": "dollar",
}


@pytest.fixture
def catalog(tmp_path):
    db = Database(tmp_path / "c.duckdb")
    migrate(db)
    catalog = Catalog(db)
    catalog.ensure_collection("c")
    record = DocumentRecord(
        "doc-1", "c", "a.md", "api", None, "A", "sha256:x", "text/markdown", 10, METADATA,
        submitted_at=datetime.now(UTC),
    )  # fmt: skip
    chunk_ids = catalog.replace_document(
        record, [EmbeddedChunk(Chunk(0, "text", Location(), 1), np.ones(4, np.float32))]
    )
    yield catalog, chunk_ids
    db.close()


def _matches(stored: tuple[Catalog, list[int]], filters: dict) -> bool:
    catalog, chunk_ids = stored
    return bool(catalog.hydrate_chunks(chunk_ids, ["c"], filters))


@pytest.mark.parametrize("key", sorted(METADATA.keys() - {"a"}))
def test_each_key_matches_its_own_value_and_nothing_else(catalog, key):
    # Before: keys went into a JSONPath, so "*" was a wildcard (a 500), and non-ASCII or control
    # characters never matched.
    assert _matches(catalog, {key: METADATA[key]})
    assert not _matches(catalog, {key: "something else"})


def test_a_dotted_key_is_not_a_path_into_nested_metadata(catalog):
    assert not _matches(catalog, {"a.b": "nested"})
    assert not _matches(catalog, {"missing": "nord"})
