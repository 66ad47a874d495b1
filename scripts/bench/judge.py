"""How far to trust the local judge: its agreement with labelled support pairs built from a QA set.

From a QA set with `support` sentences and a corpus (data/evalsets/clapnq-dev), each sampled item gives
a positive pair (a statement with its gold passage) and a negative one (the same statement with the
hardest other passage of the set: the one sharing most content words with it). Two tasks:

- `support`: the statement is one of the item's support sentences (copied from the passage, so the
  lexical baseline has it easy: this checks the LLM judge's mechanics);
- `answer`: the statement is the item's long-form answer, a human paraphrase of the passage.

Held-out split: items at positions 0, 5, 10, ... of the file are the dev split (the ones looked at
while writing the judge's prompts); the default `--split test` samples only the others.
For each judge and task: n, agreement, Cohen's kappa, AUC of the scores, the confusion table, seconds.

    python scripts/bench/judge.py [--evalset data/evalsets/clapnq-dev] [--pairs 40] [--seed 0]
        [--split test|dev] [--tasks support,answer] [--model SmolLM2-135M-Instruct ...]
        [--models-dir ./var/models] [--no-lexical] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import msgspec  # noqa: E402

from appliance.evaluate.judge import LexicalJudge, LLMJudge, SupportPair, judge_agreement  # noqa: E402
from appliance.evaluate.normalize import content_tokens  # noqa: E402
from appliance.models.manifest import SMOLLM2, load_runtime, resolve_model  # noqa: E402

DEV_EVERY = 5  # items at positions divisible by this are the dev split


def load_items(evalset: Path, split: str) -> tuple[list[dict], dict[str, str]]:
    corpus = {}
    for line in (evalset / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            doc = json.loads(line)
            corpus[doc["_id"]] = " ".join(p for p in (doc.get("title"), doc["text"]) if p)
    items = []
    for position, line in enumerate((evalset / "questions.jsonl").read_text(encoding="utf-8").splitlines()):
        if not line.strip() or (position % DEV_EVERY == 0) != (split == "dev"):
            continue
        item = json.loads(line)
        if item.get("kind", "answerable") == "answerable" and item.get("support") and item.get("gold"):
            if all(g in corpus for g in item["gold"]):
                items.append(item)
    return items, corpus


def hardest_other(statement: str, exclude: set[str], vocab: dict[str, set[str]]) -> str:
    """The passage outside `exclude` sharing most content words with `statement`."""
    words = set(content_tokens(statement))
    return max((d for d in vocab if d not in exclude), key=lambda d: (len(words & vocab[d]), d))


def build_pairs(items: list[dict], corpus: dict[str, str], n_pairs: int, seed: int, task: str) -> list:
    rng = random.Random(seed)
    vocab = {doc_id: set(content_tokens(text)) for doc_id, text in corpus.items()}
    chosen = rng.sample(items, min(len(items), n_pairs // 2))
    pairs = []
    for item in chosen:
        statement = (
            rng.choice(item["support"]) if task == "support" else item.get("answer") or item["support"][0]
        )
        gold = corpus[item["gold"][0]]
        pairs.append(SupportPair(statement, gold, True))
        negative = corpus[hardest_other(statement, set(item["gold"]), vocab)]
        pairs.append(SupportPair(statement, negative, False))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evalset", type=Path, default=Path("data/evalsets/clapnq-dev"))
    ap.add_argument("--pairs", type=int, default=40, help="pairs per task (half positive, half negative)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=("test", "dev"), default="test")
    ap.add_argument("--tasks", default="support,answer")
    ap.add_argument("--model", action="append", help=f"repeatable; default {SMOLLM2.name}")
    ap.add_argument("--models-dir", type=Path, default=Path("./var/models"))
    ap.add_argument("--context", type=int, default=2048, help="the judge's context (passages are cut to fit)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--mode", choices=("logprobs", "choice"), default=None)
    ap.add_argument("--no-lexical", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    items, corpus = load_items(args.evalset, args.split)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    pairs = {task: build_pairs(items, corpus, args.pairs, args.seed, task) for task in tasks}
    print(
        f"{args.evalset} split={args.split}: {len(items)} items, {len(corpus)} passages; "
        + ", ".join(f"{t}: {len(p)} pairs" for t, p in pairs.items()),
        file=sys.stderr,
    )
    judges = [] if args.no_lexical else [(LexicalJudge(), None)]
    for name in args.model or [SMOLLM2.name]:
        spec, path = resolve_model(name, args.models_dir)
        runtime = load_runtime(
            spec, path, context_length=args.context, threads=args.threads, backend="llama.cpp"
        )
        judges.append((LLMJudge(runtime, mode=args.mode), runtime))

    rows = []
    for judge, runtime in judges:
        for task, task_pairs in pairs.items():
            started = time.monotonic()

            def progress(done: int, total: int, label=f"{judge.name} {task}") -> None:
                print(f"\r  {label}: {done}/{total}", end="", file=sys.stderr, flush=True)

            report = judge_agreement(judge, task_pairs, progress)
            print(file=sys.stderr)
            row = {
                "judge": judge.name,
                "mode": getattr(judge, "mode", "lexical"),
                "task": task,
                "split": args.split,
                **msgspec.to_builtins(report),
                "seconds": round(time.monotonic() - started, 1),
            }
            rows.append(row)
        if runtime is not None:
            runtime.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"{'judge':38} {'mode':8} {'task':8} {'n':>4} {'agree':>6} {'kappa':>6} {'auc':>6}  tp/fp/fn/tn   seconds"
    )
    for r in rows:
        c = r["confusion"]
        kappa = "-" if r["cohen_kappa"] is None else f"{r['cohen_kappa']:.3f}"
        auc = "-" if r["auc"] is None else f"{r['auc']:.3f}"
        print(
            f"{r['judge']:38} {r['mode']:8} {r['task']:8} {r['n']:>4} {r['agreement']:>6.3f} {kappa:>6} {auc:>6}  "
            f"{c['tp']}/{c['fp']}/{c['fn']}/{c['tn']}  {r['seconds']:>8}"
        )


if __name__ == "__main__":
    main()
