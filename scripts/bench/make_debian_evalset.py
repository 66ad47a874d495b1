"""Build an entity-style retrieval evaluation set (BEIR layout) from the installed Debian packages.

    python scripts/bench/make_debian_evalset.py [--out DIR] [--status /var/lib/dpkg/status]

Writes DIR/corpus.jsonl, DIR/queries.jsonl and DIR/qrels/test.tsv, readable by
scripts/bench/retrieval.py and scripts/bench/fusion.py.

Design
------
* Source: the dpkg status file (the packages installed on this machine, each with its full
  description). One document per package: its title is the package name, its text the
  extended description (the paragraphs under the synopsis line), lightly unwrapped.
* One query per eligible package: its synopsis, the one-line summary apt shows
  ("Real-time strategy game of ancient warfare"), which is not part of the indexed text. The
  package is the only judged document. This is entity search: short noun-phrase descriptions
  of a thing, answered by the thing's card, unlike the man-page set (a command's manual) and
  MS MARCO (web questions over passages).
* Dropped: packages whose extended description is under 80 characters, synopses under three
  words, synopses that contain the package name or one of its dash-separated parts of four or
  more letters (the query would name its answer), and synopses shared by several packages.
* Deterministic: packages are taken in name order; nothing is sampled.

Known biases: library families (libfoo1, libfoo-dev, libfoo-doc) share most of their
description text, so near-duplicates count as misses; the corpus is whatever is installed.

Held-out split: scripts/bench/fusion.py splits every set's queries by a hash of the query id
into a tuning half and a held-out half (see `split_of` there); nothing is tuned on the latter.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path


def packages(status: Path) -> list[dict[str, str]]:
    """The stanzas of a dpkg status file as field -> value (continuation lines kept)."""
    out, current, field = [], {}, None
    for line in status.read_text(encoding="utf-8", errors="replace").split("\n"):
        if not line.strip():
            if current:
                out.append(current)
            current, field = {}, None
        elif line[0] in " \t" and field:
            current[field] += "\n" + line
        elif ":" in line:
            field, _, value = line.partition(":")
            current[field] = value.strip()
    if current:
        out.append(current)
    return out


def extended_text(description: str) -> str:
    """The extended description as paragraphs: ' .' lines separate them, the rest unwraps."""
    paragraphs, lines = [], []
    for line in description.split("\n")[1:]:
        line = line.strip()
        if line == ".":
            paragraphs.append(" ".join(lines))
            lines = []
        else:
            lines.append(line)
    paragraphs.append(" ".join(lines))
    return "\n\n".join(p for p in paragraphs if p)


def names_answer(name: str, synopsis: str) -> bool:
    words = set(re.findall(r"[a-z0-9][a-z0-9+.-]*", synopsis.lower()))
    parts = {p for p in re.split(r"[-.+]", name.lower()) if len(p) >= 4}
    return name.lower() in words or any(p in synopsis.lower() for p in parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("var/evalsets/debian-packages"))
    ap.add_argument("--status", type=Path, default=Path("/var/lib/dpkg/status"))
    args = ap.parse_args()
    stanzas = sorted(
        (p for p in packages(args.status) if p.get("Package") and p.get("Description")),
        key=lambda p: p["Package"],
    )
    seen: dict[str, dict] = {}
    for p in stanzas:  # one per name (multi-arch installs list a package twice)
        seen.setdefault(p["Package"], p)
    corpus, queries = [], []
    synopses = Counter(p["Description"].split("\n")[0].strip().lower() for p in seen.values())
    for name, p in seen.items():
        text = extended_text(p["Description"])
        if len(text) < 80:
            continue
        corpus.append({"_id": name, "title": name, "text": text})
        synopsis = p["Description"].split("\n")[0].strip()
        if len(synopsis.split()) < 3 or synopses[synopsis.lower()] > 1 or names_answer(name, synopsis):
            continue
        queries.append({"_id": f"q-{name}", "text": synopsis, "answer": name})
    (args.out / "qrels").mkdir(parents=True, exist_ok=True)
    with (args.out / "corpus.jsonl").open("w") as f:
        f.writelines(json.dumps(d) + "\n" for d in corpus)
    with (args.out / "queries.jsonl").open("w") as f:
        f.writelines(json.dumps({"_id": q["_id"], "text": q["text"]}) + "\n" for q in queries)
    with (args.out / "qrels" / "test.tsv").open("w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q['_id']}\t{q['answer']}\t1\n" for q in queries)
    print(f"debian-packages: {len(corpus)} documents, {len(queries)} queries -> {args.out}")


if __name__ == "__main__":
    main()
