"""Tiny eval sets written into temp dirs for the evaluation tests."""

from __future__ import annotations

import json
from pathlib import Path

TOPICS = [
    "volcano", "glacier", "saxophone", "lighthouse", "orchard", "submarine", "telescope", "cathedral",
    "beehive", "canyon", "windmill", "lantern", "harbour", "meadow", "observatory", "quarry",
    "tramway", "vineyard", "waterfall", "zeppelin", "aqueduct", "bakery", "compass", "dungeon",
    "estuary", "foundry", "granary", "hangar", "igloo", "jetty",
]  # fmt: skip


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def corpus_rows(topics: list[str]) -> list[dict]:
    """Two documents per topic, both about it (both relevant to its queries)."""
    return [
        {
            "_id": f"{t}-{j}",
            "title": f"{t.title()} notes {j}",
            "text": f"Field notes {j} on the {t}: the {t} was surveyed and the {t} log was kept.",
        }
        for t in topics
        for j in (1, 2)
    ]


def beir_set(root: Path, topics: list[str] = TOPICS[:20], queries_per_topic: int = 1) -> Path:
    """A BEIR-layout set: per topic, queries whose relevant documents are that topic's two (graded 2 and 1)."""
    queries, qrels = [], ["query-id\tcorpus-id\tscore"]
    for t in topics:
        for n in range(queries_per_topic):
            qid = f"{t}-q{n}"
            queries.append(
                {"_id": qid, "text": f"survey log of the {t}" if n % 2 == 0 else f"{t} field notes"}
            )
            qrels += [f"{qid}\t{t}-1\t2", f"{qid}\t{t}-2\t1"]
    write_jsonl(root / "corpus.jsonl", corpus_rows(topics))
    write_jsonl(root / "queries.jsonl", queries)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n")
    return root
