"""Query routing: lookups lean on keywords, natural-language questions on meaning."""

from __future__ import annotations

import pytest

from appliance.retrieve.routing import classify, routed_weight


@pytest.mark.parametrize(
    "query",
    [
        '"connection refused" after upgrade',  # quoted phrase
        "ORA-00942 table or view does not exist",  # error code
        "0x80070005 access denied",
        "ENOENT when opening the socket",
        "HTTP 404 from the gateway",
        "settings in config.yaml",  # file names and paths
        "/etc/fstab mount options",
        "parse_args default values",  # identifiers
        "getUserName returns null",
        "json.loads( fails on bytes",
        "--dry-run flag",
        "tantivy",  # one or two plain words
        "vector index",
    ],
)
def test_lookups(query):
    assert classify(query) == "lookup"


@pytest.mark.parametrize(
    "query",
    [
        "how do I rotate the admin key without downtime",
        "what is the difference between hybrid and semantic search?",
        "Why does ingestion slow down on large PDFs",
        "the server refuses uploads over a gigabyte, is that configurable?",
    ],
)
def test_questions(query):
    assert classify(query) == "question"


@pytest.mark.parametrize("query", ["list directory contents", "real-time strategy game of ancient warfare"])
def test_everything_else_is_mixed(query):
    assert classify(query) == "mixed"


def test_routed_weight_follows_the_kind():
    assert routed_weight("ENOENT", 0.7, 0.3, 0.9) == 0.3
    assert routed_weight("how do I rotate keys safely?", 0.7, 0.3, 0.9) == 0.9
    assert routed_weight("list directory contents", 0.7, 0.3, 0.9) == 0.7
