"""Fusion methods compared on several BEIR-layout sets, tuned on one half of each set's queries,
reported on the other (held-out) half with paired bootstrap 95% intervals.

    python scripts/bench/fusion.py data/evalsets/msmarco-subset var/evalsets/manpages \
        var/evalsets/debian-packages [--cache var/fusion-bench] [--resamples 2000] [--json]

Each set is chunked, embedded and indexed once with the appliance's own components
(scripts/bench/_candidates.py; vectors and candidate lists cached under --cache), then every
fusion is computed offline from the same top-100 keyword and semantic candidate lists with the
server's fusion code (appliance/retrieve/fusion.py and routing.py). Documents rank at their best
chunk. A query belongs to the held-out half when the md5 of its id is odd (`split_of`); the grid
of methods, weights and routing weights is scored on the tuning halves only, and the default is
the configuration with the best mean tuning nDCG@10 across sets among those that beat both single
modes on every set's tuning half. Only then are the held-out halves scored.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _candidates import candidates, load_beir  # noqa: E402

from appliance.evaluate.compare import bootstrap_interval  # noqa: E402
from appliance.index.protocols import IndexHit  # noqa: E402
from appliance.retrieve.fusion import FUSION_METHODS, fuse  # noqa: E402
from appliance.retrieve.routing import classify, routed_weight  # noqa: E402

OLD_DEFAULT = ("weighted", 0.7, None)  # method, semantic weight, routing (lookup, question) weights
WEIGHTS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ROUTE_WEIGHTS = (0.2, 0.3, 0.4, 0.5)
QUESTION_WEIGHTS = (0.7, 0.8, 0.9)


def split_of(qid: str) -> str:
    """The fixed split of a query: "heldout" (never tuned on) or "tune"."""
    return "heldout" if int(hashlib.md5(qid.encode()).hexdigest(), 16) % 2 else "tune"


def ndcg_at(ranked: list[str], rels: dict[str, int], k: int = 10) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(rels.values(), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], rels: dict[str, int], k: int) -> float:
    relevant = {d for d, r in rels.items() if r > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0


class Corpus:
    def __init__(self, dataset: Path, cache: Path) -> None:
        self.name = dataset.name
        _, self.queries, self.qrels = load_beir(dataset)
        lists = candidates(dataset, cache)
        self.doc_of = {int(k): v for k, v in lists["doc_of"].items()}
        self.lists = {
            mode: {q: [IndexHit(int(c), float(s)) for c, s in hits] for q, hits in lists[mode].items()}
            for mode in ("keyword", "semantic")
        }
        self.split = {q: split_of(q) for q in self.queries}

    def scores(self, mode: str, config: tuple | None, split: str) -> dict[str, np.ndarray]:
        """Per-query nDCG@10 and recall@100 of one mode ("keyword", "semantic" or "hybrid" with
        config) over one split, in query-id order (so runs pair)."""
        ndcg, recall = [], []
        for qid in sorted(q for q, s in self.split.items() if s == split):
            if mode == "hybrid":
                method, weight, routing = config
                if routing:
                    weight = routed_weight(self.queries[qid], weight, *routing)
                ranked = [self.lists["keyword"][qid], self.lists["semantic"][qid]]
                hits = fuse(ranked, method, [1 - weight, weight])
            else:
                hits = self.lists[mode][qid]
            docs = list(dict.fromkeys(self.doc_of[h.chunk_id] for h in hits))
            ndcg.append(ndcg_at(docs, self.qrels[qid]))
            recall.append(recall_at(docs, self.qrels[qid], 100))
        return {"ndcg@10": np.array(ndcg), "recall@100": np.array(recall)}


def grid(routing: bool) -> list[tuple]:
    routes = list(itertools.product(ROUTE_WEIGHTS, QUESTION_WEIGHTS)) if routing else [None]
    return [(m, w, r) for m in FUSION_METHODS for w in WEIGHTS for r in routes]


def name(config: tuple) -> str:
    method, weight, routing = config
    routed = f" routed(lookup={routing[0]}, question={routing[1]})" if routing else ""
    return f"{method} sem={weight}{routed}"


def tune(corpora: list[Corpus], configs: list[tuple]) -> list[tuple[float, tuple]]:
    """Configurations by mean tuning-split nDCG@10 across sets, best first; those that beat both
    single modes on every set's tuning split rank before those that do not."""
    singles = [
        max(c.scores(m, None, "tune")["ndcg@10"].mean() for m in ("keyword", "semantic")) for c in corpora
    ]
    ranked = []
    for config in configs:
        per_set = [c.scores("hybrid", config, "tune")["ndcg@10"].mean() for c in corpora]
        beats_both = all(s > best for s, best in zip(per_set, singles, strict=True))
        ranked.append((float(np.mean(per_set)), beats_both, config))
    ranked.sort(key=lambda r: (not r[1], -r[0]))
    return [(mean, config) for mean, _, config in ranked]


def interval(values: np.ndarray, resamples: int) -> tuple[float, float]:
    return bootstrap_interval(values, resamples, seed=7)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", type=Path, nargs="+")
    ap.add_argument("--cache", type=Path, default=Path("var/fusion-bench"))
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    args = ap.parse_args()
    corpora = [Corpus(d, args.cache) for d in args.datasets]

    plain = tune(corpora, grid(routing=False))
    best = plain[0][1]
    per_method = {m: next(c for _, c in plain if c[0] == m) for m in FUSION_METHODS}
    routed = tune(
        corpora, [(best[0], best[1], r) for r in itertools.product(ROUTE_WEIGHTS, QUESTION_WEIGHTS)]
    )
    best_routed = routed[0][1]
    rows = {
        "keyword": ("keyword", None),
        "semantic": ("semantic", None),
        f"hybrid old ({name(OLD_DEFAULT)})": ("hybrid", OLD_DEFAULT),
        **{f"  {name(c)}": ("hybrid", c) for m, c in per_method.items() if c not in (best, OLD_DEFAULT)},
        f"hybrid new ({name(best)})": ("hybrid", best),
        f"hybrid new + routing ({name(best_routed)})": ("hybrid", best_routed),
    }
    report: dict = {"chosen": name(best), "chosen_routed": name(best_routed), "tuning": [], "sets": {}}
    report["tuning"] = [{"config": name(c), "mean_tune_ndcg@10": round(m, 4)} for m, c in plain[:10]]
    if not args.json:
        print(
            "tuning splits, mean nDCG@10 across sets (top 10; those beating both single modes on every set first):"
        )
        for m, c in plain[:10]:
            print(f"  {m:.4f}  {name(c)}")
        print("best per method: " + "; ".join(f"{name(c)}" for c in per_method.values()))
        print(f"routing on top of the best, best of its grid: {routed[0][0]:.4f}  {name(best_routed)}")
    for corpus in corpora:
        runs = {label: corpus.scores(mode, config, "heldout") for label, (mode, config) in rows.items()}
        n = len(next(iter(runs.values()))["ndcg@10"])
        out = report["sets"][corpus.name] = {"heldout_queries": n, "rows": {}}
        new = runs[f"hybrid new ({name(best)})"]
        for label, metrics in runs.items():
            row = out["rows"][label] = {}
            for metric, values in metrics.items():
                low, high = interval(values, args.resamples)
                row[metric] = {"mean": round(float(values.mean()), 4), "ci": [round(low, 4), round(high, 4)]}
        out["new_minus"] = {}
        for other in ("keyword", "semantic", f"hybrid old ({name(OLD_DEFAULT)})"):
            out["new_minus"][other] = {}
            for metric in ("ndcg@10", "recall@100"):
                diff = new[metric] - runs[other][metric]
                low, high = interval(diff, args.resamples)
                out["new_minus"][other][metric] = {
                    "diff": round(float(diff.mean()), 4),
                    "ci": [round(low, 4), round(high, 4)],
                }
        routed_runs = runs[f"hybrid new + routing ({name(best_routed)})"]
        out["routing_minus_new"] = {}
        for metric in ("ndcg@10", "recall@100"):
            diff = routed_runs[metric] - new[metric]
            low, high = interval(diff, args.resamples)
            out["routing_minus_new"][metric] = {
                "diff": round(float(diff.mean()), 4),
                "ci": [round(low, 4), round(high, 4)],
            }
        if args.json:
            continue
        kinds = Counter(
            classify(corpus.queries[q]) for q, split in corpus.split.items() if split == "heldout"
        )
        print(
            f"\n{corpus.name}: held-out split, {n} queries (95% bootstrap intervals); routing sees {dict(kinds)}"
        )
        print(f"  {'mode':<72} {'nDCG@10':>24} {'recall@100':>24}")
        for label, row in out["rows"].items():
            cells = [f"{row[m]['mean']:.4f} [{row[m]['ci'][0]:.3f}, {row[m]['ci'][1]:.3f}]" for m in row]
            print(f"  {label:<72} {cells[0]:>24} {cells[1]:>24}")
        for other, metrics in out["new_minus"].items():
            cells = [f"{v['diff']:+.4f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]" for v in metrics.values()]
            print(f"  {'new - ' + other + ' (paired)':<72} {cells[0]:>24} {cells[1]:>24}")
        cells = [
            f"{v['diff']:+.4f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]"
            for v in out["routing_minus_new"].values()
        ]
        print(f"  {'new + routing - new (paired)':<72} {cells[0]:>24} {cells[1]:>24}")
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
