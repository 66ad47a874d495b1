"""How well each CitationVerifier tells a supporting passage from an on-topic one that is not.

On clapnq-dev's answerable items: every sentence of the gold long-form answer is a claim; its
gold passage is the positive, and the most similar other passage of the corpus (by MiniLM, so the
negative is on topic, not lexically chosen) is the negative. Thresholds are chosen on the even
items (tuning split) by F1 and reported on the odd items (held out), with the default thresholds
alongside. Prints precision, recall, F1 and accuracy per verifier, and the time per claim.

    python scripts/bench/citations.py [--data data/evalsets/clapnq-dev] [--limit 150]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from appliance.generate.attribution import split_answer  # noqa: E402
from appliance.generate.support import (  # noqa: E402
    CombinedVerifier,
    EmbeddingVerifier,
    LexicalVerifier,
    is_claim,
)
from appliance.models.catalog import default_embedding_dir  # noqa: E402
from appliance.models.embedder import SentenceTransformerEmbedder  # noqa: E402


def load(data: Path, limit: int):
    corpus = {}
    for line in (data / "corpus.jsonl").read_text().splitlines():
        row = json.loads(line)
        corpus[row["_id"]] = f"{row.get('title', '')}\n{row['text']}"
    items = [json.loads(x) for x in (data / "questions.jsonl").read_text().splitlines()]
    items = [q for q in items if q["kind"] == "answerable" and q.get("answer")][:limit]
    return corpus, items


def pairs(corpus, items, embedder):
    ids = list(corpus)
    vecs = embedder.embed_documents([corpus[i] for i in ids])
    out = []  # (split, claim, passage, label)
    for k, item in enumerate(items):
        gold = item["gold"][0]
        claims = [p.body for p in split_answer(item["answer"]) if is_claim(p.body)]
        if not claims:
            continue
        qv = embedder.embed_query(item["answer"])
        order = np.argsort(-(vecs @ qv))
        negative = next(ids[j] for j in order if ids[j] not in item["gold"])
        split = "tune" if k % 2 == 0 else "held-out"
        for claim in claims:
            out.append((split, claim, corpus[gold], 1))
            out.append((split, claim, corpus[negative], 0))
    return out


def scores_of(verifier, rows):
    t = time.perf_counter()
    scores = np.array([verifier.support(claim, [passage])[0] for _, claim, passage, _ in rows])
    return scores, (time.perf_counter() - t) / max(len(rows), 1)


def prf(scores, labels, threshold):
    pred = scores >= threshold
    tp = int((pred & (labels == 1)).sum())
    fp = int((pred & (labels == 0)).sum())
    fn = int((~pred & (labels == 1)).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    acc = float((pred == (labels == 1)).mean())
    return p, r, f, acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "data/evalsets/clapnq-dev")
    ap.add_argument("--limit", type=int, default=150, help="answerable items to use")
    args = ap.parse_args()
    embedder = SentenceTransformerEmbedder(default_embedding_dir())
    corpus, items = load(args.data, args.limit)
    rows = pairs(corpus, items, embedder)
    splits = np.array([s for s, *_ in rows])
    labels = np.array([y for *_, y in rows])
    lexical, embedding = LexicalVerifier(), EmbeddingVerifier(embedder)
    verifiers = [lexical, embedding, CombinedVerifier(lexical, embedding)]
    print(f"{len(items)} answerable items, {len(rows)} claim-passage pairs (half supporting)")
    print(
        f"{'verifier':<10} {'split':<9} {'thr':>5} {'prec':>6} {'recall':>6} {'F1':>6} {'acc':>6} {'ms/claim':>9}"
    )
    for v in verifiers:
        scores, per = scores_of(v, rows)
        tune = splits == "tune"
        grid = np.round(np.arange(0.2, 0.96, 0.025), 3)
        best = max(grid, key=lambda t: prf(scores[tune], labels[tune], t)[2])
        for name, thr in (("default", v.threshold), ("tuned", best)):
            for split in ("tune", "held-out"):
                mask = splits == split
                p, r, f, acc = prf(scores[mask], labels[mask], thr)
                print(
                    f"{v.name:<10} {split:<9} {thr:>5.3f} {p:>6.3f} {r:>6.3f} {f:>6.3f} {acc:>6.3f} "
                    f"{per * 1000:>9.1f}  ({name})"
                )


if __name__ == "__main__":
    main()
